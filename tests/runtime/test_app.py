"""streams.runtime.app: the Faust app a worker runs, built from settings without starting it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from streams.runtime.app import create_app
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
