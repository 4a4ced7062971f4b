"""The ``shudi`` command line: ``worker``, ``label``, ``send``, ``demo`` and the local ``kafka`` helper."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from streams.demo import demo
from streams.geoip import DatabaseError
from streams.labelcmd import label
from streams.localkafka import kafka
from streams.settings import Settings, SettingsError, load_settings


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        click.echo(f"shudi: {exc}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shudi")
def main() -> None:
    """shudi: IP territory (IP属地) enrichment and burst detection for comment streams.

    Settings come from SHUDI_* environment variables (see README.md).
    """


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> NoReturn:
    """Run a worker. Options after `worker` are passed to Faust's worker command."""
    from prometheus_client import start_http_server

    from streams.app import create_app
    from streams.topics import ensure_topics

    settings = settings_or_exit()
    try:
        shudi = create_app(settings)
    except DatabaseError as exc:
        click.echo(f"shudi: {exc}", err=True)
        sys.exit(2)
    asyncio.run(ensure_topics(settings))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.metrics_host, registry=shudi.metrics.registry)
    argv = ["shudi", "worker", "--loglevel", settings.log_level, *ctx.args]
    if _have_uvloop():
        argv[1:1] = ["--loop", "uvloop"]
    sys.argv = argv
    shudi.app.main()


def _have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", help="Topic to produce to (default: SHUDI_INPUT_TOPIC).")
@click.option("--rate", type=float, default=0.0, help="Events per second; 0 sends as fast as possible.")
def send(file: Path, topic: str | None, rate: float) -> None:
    """Produce the comment events of a JSON-lines FILE to the input topic (for replay and trials).

    Each line is sent as it is; the key is the line's post_id when it has one (bad lines are sent too, so
    that the worker's dead-letter path can be tried).
    """
    from streams.producer import send_jsonl

    settings = settings_or_exit()
    sent = asyncio.run(send_jsonl(settings, file, topic or settings.input_topic, rate=rate))
    click.echo(f"sent {sent} events to {topic or settings.input_topic}", err=True)


main.add_command(label)
main.add_command(kafka)
main.add_command(demo)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()
