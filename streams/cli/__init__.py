"""The ``shudi`` command line. Each command lives in its own module, imported only when that command runs,
so ``shudi healthcheck`` (every 15 s in a container) loads neither Faust nor the development tools.

Errors: one line ``shudi: …`` on stderr, with the exit codes of :mod:`streams.cli.errors`.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> "module:attribute"; the devtools commands are development helpers, not the service.
COMMANDS: dict[str, str] = {
    "worker": "streams.cli.worker:worker",
    "healthcheck": "streams.cli.worker:healthcheck",
    "label": "streams.cli.label:label",
    "send": "streams.cli.send:send",
    "detect-bursts": "streams.cli.detect_bursts:detect_bursts",
    "simulate": "streams.cli.simulate:simulate",
    "demo": "streams.devtools.demo:demo",
    "kafka": "streams.devtools.localkafka:kafka",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), target
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shudi")
def main() -> None:
    """shudi: IP territory (IP属地) enrichment and burst detection for comment streams.

    Settings come from SHUDI_* environment variables (see README.md).
    """


if __name__ == "__main__":
    main()
