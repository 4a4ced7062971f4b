"""shudi: IP territory (IP属地) enrichment and regional burst detection for comment streams."""

__version__ = "0.1.0"
