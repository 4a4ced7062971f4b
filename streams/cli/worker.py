"""``shudi worker`` and ``shudi healthcheck``: run a worker, and ask a running one whether it is healthy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from streams.cli.errors import EXIT_FAILED, EXIT_FATAL, CommandError, settings_or_exit
from streams.settings import Settings

# Faust's `--loglevel` vocabulary; the settings use Python's level names.
FAUST_LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> NoReturn:
    """Run a worker. Options after `worker` are passed to Faust's worker command."""
    import mode.loop
    import prometheus_client

    from streams.pipeline.geoip import DatabaseError
    from streams.runtime.app import GeoIP, create_app, load_geoip
    from streams.runtime.health import serve
    from streams.runtime.kafka import KafkaConnectionError, patch_aiokafka_closed_transport
    from streams.runtime.topics import ensure_topics

    settings = settings_or_exit()
    check_data_dir(settings.data_dir)
    # `_created` series double every counter's exposition and no dashboard of ours reads them.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

    async def prepare() -> GeoIP:
        # The compile (seconds on a real database, in a thread) and the Kafka checks (round trips) overlap.
        # ensure_topics connects, creates missing topics and checks every right the worker needs: bad
        # credentials, an untrusted certificate or a missing ACL stop the worker here, in one line, before
        # Faust starts. An unusable database is reported at once, as when it was opened before anything else.
        checking = asyncio.ensure_future(ensure_topics(settings))
        try:
            geoip = await load_geoip(settings)
        except BaseException:
            checking.cancel()
            with contextlib.suppress(BaseException):
                await checking
            raise
        try:
            await checking
        except BaseException:
            for source in geoip[0]:
                source.close()
            raise
        return geoip

    try:
        geoip = asyncio.run(prepare())
    except DatabaseError as exc:
        raise CommandError(str(exc)) from None
    except KafkaConnectionError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None
    shudi = create_app(settings, geoip=geoip)
    if settings.metrics_port:
        serve(settings.metrics_host, settings.metrics_port, shudi.metrics.registry, shudi.health)
    if _have_uvloop():
        patch_aiokafka_closed_transport()  # uvloop's RuntimeError on a reset connection: see there
        # Faust reads `--loop` from sys.argv at import time only; this sets the policy before its loop exists.
        mode.loop.use("uvloop")
    sys.argv = faust_worker_argv(settings, ctx.args)
    try:
        shudi.app.main()
    except SystemExit:
        if shudi.health.fatal is not None:
            sys.exit(EXIT_FATAL)
        raise
    sys.exit(0)  # pragma: no cover -- app.main() always raises SystemExit


def check_data_dir(path: Path) -> None:
    """Stop with one line (exit 2) unless the data directory can be made and written: Faust keeps its
    RocksDB tables there, and on a read-only or full directory it crashed at start with a traceback and
    exit 1, after connecting to Kafka (seen in the disk-full row of ``bench.faults``). A directory that
    fills up later is the running worker's business (exit 70, ``Health.stop_worker``)."""
    probe = path / f".shudi-write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(b"shudi")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        raise CommandError(
            f"the data directory {path} is not writable ({exc.strerror or type(exc).__name__}): "
            "SHUDI_DATA_DIR must be a writable directory with free space"
        ) from None


def faust_worker_argv(settings: Settings, extra: list[str]) -> list[str]:
    """The command line Faust's own worker command parses: the settings' log level in Faust's vocabulary."""
    return ["shudi", "worker", "--loglevel", FAUST_LOG_LEVELS[settings.log_level], *extra]


def _have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@click.command()
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
        raise CommandError(f"unhealthy: {exc.read().decode().strip()}", EXIT_FAILED) from None
    except OSError as exc:
        raise CommandError(f"unreachable: {exc}", EXIT_FAILED) from None
