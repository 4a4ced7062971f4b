"""How every ``shudi`` command fails: one line ``shudi: <what went wrong>`` on stderr, one exit code.

- 0: done.
- 1 (``EXIT_FAILED``): the command ran, and what it checked failed: an input that is not an address, an
  unhealthy worker, a broker that is not running, a scripted demo burst not seen, a produce that failed,
  Kafka refusing the credentials, a broker certificate not trusted, an ACL the worker needs missing.
- 2 (``EXIT_USAGE``): the command could not run: bad settings, options, input file or database, a worker's
  data directory that cannot be written at start (click's own usage errors exit 2 too).
- 70 (``EXIT_FATAL``, ``EX_SOFTWARE``): a worker whose processing loop died (also: its data directory
  filled up or became unwritable while it ran); a supervisor should restart it.
"""

from __future__ import annotations

from typing import IO, Any

import click

from streams.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FATAL = 70


class CommandError(click.ClickException):
    """Raised by a command to stop with ``shudi: message`` on stderr and ``exit_code`` (2 unless given)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"shudi: {self.format_message()}", err=True, file=file)


def settings_or_exit() -> Settings:
    """The settings from the environment, or a :class:`CommandError` naming what is wrong with them."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
