"""streams.runtime.app: the Faust app a worker runs, built from settings without starting it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from streams.pipeline.geodb import Source, open_database
from streams.runtime.app import GeoIP, create_app, load_geoip
from streams.settings import Settings


def test_a_stopping_worker_stops_the_enrichment_loop_first(fixture_db_path: Path, tmp_path: Path) -> None:
    """Faust stops its fetcher, tables and agents before it reaches the enrichment service; the loop must
    take no more batches from the moment the worker's stop begins (SIGTERM runs Worker.stop)."""
    settings = Settings(geoip_db=fixture_db_path, data_dir=tmp_path, metrics_port=0)
    shudi = create_app(settings)
    enrichment = shudi.enrichment

    async def stop_a_worker() -> None:
        worker = shudi.app.Worker(loglevel="WARNING", redirect_stdouts=False)
        assert not enrichment.stopping
        await worker.stop()

    asyncio.run(stop_a_worker())
    assert enrichment.stopping
    # The stop watchdog armed by the stop is disarmed once the stop came back: it would otherwise end this
    # process (os._exit(70)) 50 s later.
    alive = [t for t in threading.enumerate() if t.name == "shudi-stop-watchdog" and t.is_alive()]
    deadline = time.monotonic() + 5
    while alive and time.monotonic() < deadline:  # a cancelled Timer's thread ends at its next wake-up
        time.sleep(0.05)
        alive = [t for t in alive if t.is_alive()]
    assert not alive, alive


class BlockingOpener:
    """Opens a database only once the event loop has run a few more turns (or gives up after a minute, when
    the loop is blocked: by this open itself, if it runs on the loop's thread)."""

    def __init__(self) -> None:
        self.ticked = threading.Event()
        self.threads: list[int] = []

    def __call__(self, path: Path) -> Source:
        self.threads.append(threading.get_ident())
        if not self.ticked.wait(60):
            raise AssertionError("the event loop made no progress while the database was being loaded")
        return open_database(path)

    async def heartbeat(self, turns: int = 5) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        self.ticked.set()


def test_the_start_loads_and_compiles_in_a_thread(fixture_db_path: Path, tmp_path: Path) -> None:
    """A worker's start opens and compiles its databases off the event loop: the loop keeps running while a
    (here deliberately slow) load goes on, and the app is built over what was loaded."""
    settings = Settings(geoip_db=fixture_db_path, data_dir=tmp_path, metrics_port=0)
    opener = BlockingOpener()

    async def start() -> tuple[GeoIP, int]:
        loading = asyncio.ensure_future(load_geoip(settings, opener=opener))
        await opener.heartbeat()
        return await loading, threading.get_ident()

    geoip, loop_thread = asyncio.run(start())
    assert opener.threads
    assert loop_thread not in opener.threads
    shudi = create_app(settings, geoip=geoip)
    assert shudi.labeller.table is geoip[1]
    assert shudi.watcher.sources == geoip[0]


def test_create_app_refuses_to_load_on_a_running_loop(fixture_db_path: Path, tmp_path: Path) -> None:
    settings = Settings(geoip_db=fixture_db_path, data_dir=tmp_path, metrics_port=0)

    async def build() -> None:
        create_app(settings)

    with pytest.raises(RuntimeError, match="load_geoip"):
        asyncio.run(build())
