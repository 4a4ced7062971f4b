"""``python -m streams.cli``: the ``shudi`` command without its console script (tests and children use it)."""

from streams.cli import main

main()
