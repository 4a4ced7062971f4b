"""How long a ``shudi worker`` takes from its start to ready, with a real-size database: cold (no compiled
table cached in its data directory, so it opens, checks and compiles every file) and warm (a restart with
the same files: the table is read back from the cache).

"Ready" is Faust's ``[^Worker]: Ready`` line (partitions assigned, recovery done), the moment a worker
consumes; the clock starts when the process is spawned, so interpreter start-up and imports count. Each
round uses its own app id and topics. Starts a local broker unless ``--bootstrap`` names one. Run from the
repo root::

    python -m bench.startup [--db a.xdb,b.mmdb] [--rounds 2] [--bootstrap HOST:PORT]

The default database is the real-size synthetic .mmdb of ``bench.throughput --real-size`` (built and cached
if missing, ~6 minutes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import click

from bench.throughput.harness import ensure_db
from bench.throughput.options import REAL_SIZE_NETWORKS
from streams.pipeline.geodb import parse_paths
from streams.testing import WorkerProcess, free_port, run_settings


def start_to_ready(worker: WorkerProcess, timeout: float, times: int) -> float:
    """Seconds from spawning ``worker`` to its ``times``-th ready line (polled every 50 ms)."""
    t0 = time.monotonic()
    worker.start()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if worker.ready(times):
            return time.monotonic() - t0
        if not worker.running():
            raise SystemExit(f"worker exited with {worker.returncode()}:\n{worker.tail()}")
        time.sleep(0.05)
    raise SystemExit(f"worker not ready after {timeout:.0f}s:\n{worker.tail()}")


def measure(bootstrap: str, db: tuple[Path, ...], rounds: int, workdir: Path, timeout: float) -> None:
    names = ",".join(str(p) for p in db)
    for r in range(rounds):
        run = f"startup-{uuid.uuid4().hex[:8]}"
        settings = run_settings(bootstrap, run, partitions=4) | {"SHUDI_GEOIP_DB": names}
        worker = WorkerProcess.configure(workdir, run, settings)
        figures = []
        for start, what in enumerate(("cold (no cached table)", "warm (table cached)"), start=1):
            load = os.getloadavg()[0]
            seconds = start_to_ready(worker, timeout, start)
            figures.append(f"{what}: {seconds:.1f}s (load {load:.1f})")
            worker.stop()
        print(f"round {r + 1}: " + "; ".join(figures), flush=True)
        shutil.rmtree(workdir / f"{run}-data", ignore_errors=True)


@click.command(name="python -m bench.startup", help=__doc__)
@click.option("--bootstrap", help="HOST:PORT of a running broker (else a local one is started)")
@click.option("--db", help="database file(s), comma separated (default: the real-size synthetic .mmdb)")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--timeout", type=float, default=180.0, show_default=True)
def main(bootstrap: str | None, db: str | None, rounds: int, timeout: float) -> None:
    paths, source = ensure_db(tuple(parse_paths(db)) if db else None, REAL_SIZE_NETWORKS)
    for p in paths:
        print(f"database: {p} ({p.stat().st_size / 1e6:.1f} MB, {source})")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="shudi-startup-") as tmp:
        if bootstrap:
            measure(bootstrap, paths, rounds, Path(tmp), timeout)
            return
        from streams.devtools import localkafka

        broker = localkafka.start(port=free_port())
        try:
            measure(broker.bootstrap, paths, rounds, Path(tmp), timeout)
        finally:
            localkafka.stop(broker)


if __name__ == "__main__":
    main()
