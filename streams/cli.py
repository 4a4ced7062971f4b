"""The ``shudi`` command line: ``worker``, ``label``, ``send``, ``demo`` and the local ``kafka`` helper."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import NoReturn

import click

from streams.demo import demo
from streams.detectcmd import detect_bursts
from streams.geoip import DatabaseError
from streams.labelcmd import label
from streams.localkafka import kafka
from streams.settings import Settings, SettingsError, load_settings
from streams.simcmd import simulate


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
    import mode.loop
    import prometheus_client

    from streams.agents import EXIT_FATAL
    from streams.app import create_app
    from streams.health import serve
    from streams.topics import ensure_topics

    settings = settings_or_exit()
    # `_created` series double every counter's exposition and no dashboard of ours reads them.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        shudi = create_app(settings)
    except DatabaseError as exc:
        click.echo(f"shudi: {exc}", err=True)
        sys.exit(2)
    asyncio.run(ensure_topics(settings))
    if settings.metrics_port:
        serve(settings.metrics_host, settings.metrics_port, shudi.metrics.registry, shudi.health)
    if _have_uvloop():
        # Faust reads `--loop` from sys.argv at import time only; this sets the policy before its loop exists.
        mode.loop.use("uvloop")
    sys.argv = ["shudi", "worker", "--loglevel", settings.log_level, *ctx.args]
    try:
        shudi.app.main()
    except SystemExit:
        if shudi.health.fatal is not None:
            sys.exit(EXIT_FATAL)
        raise
    sys.exit(0)  # pragma: no cover -- app.main() always raises SystemExit


def _have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@main.command()
@click.option("--url", default=None, help="Default: http://127.0.0.1:$SHUDI_METRICS_PORT/healthz")
def healthcheck(url: str | None) -> None:
    """Exit 0 if the local worker is healthy, 1 if not (for container HEALTHCHECKs without curl)."""
    import urllib.error
    import urllib.request

    if url is None:
        url = f"http://127.0.0.1:{settings_or_exit().metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 -- an http URL we build
            click.echo(resp.read().decode().strip())
    except urllib.error.HTTPError as exc:
        click.echo(f"unhealthy: {exc.read().decode().strip()}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"unreachable: {exc}", err=True)
        sys.exit(1)


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
main.add_command(simulate)
main.add_command(detect_bursts)


if __name__ == "__main__":
    main()
