"""How one harness run is set up (its command-line options) and the event loop every mode gets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]  # children run from here, so `-m bench...` resolves
# A synthetic database of a real one's size: ~6.5 M tree nodes, a 39 MB file (GeoLite2-City: 3.6 M, 56 MB)
REAL_SIZE_NETWORKS = 1_000_000


@dataclass(frozen=True)
class Options:
    bootstrap: str
    events: int
    workdir: Path
    partitions: int = 4
    rate: float | None = None  # produce at this many events/s while each mode runs (else a preloaded backlog)
    warmup: float = 5.0
    db: tuple[Path, ...] | None = None  # an ordered list, as SHUDI_GEOIP_DB; None: a synthetic .mmdb, cached
    networks: int = 220_000
    distinct_ips: int = 300_000
    modes: tuple[str, ...] = ("raw", "naive", "faust-relay", "shudi")
    relay_variants: tuple[str, ...] = ("fast-drain+tuned+uvloop+quietlog", "aiokafka+uvloop")
    json: Path | None = None
    profile: bool = False
    idle_timeout: float = 20.0
    startup_timeout: float = 120.0
    tiny: bool = False  # assert that every event is accounted for
    long: bool = False  # delete the run's topics afterwards (some 12 GB of broker disk)
    # Run the modes this many times in alternation (raw, naive, shudi, raw, naive, shudi ...) on the same
    # input, so each ratio compares modes run next to each other on a machine whose load moves.
    rounds: int = 1


def run_async(main: Coroutine[Any, Any, int | None]) -> int | None:
    """Run ``main`` on uvloop when it is installed, as the worker does, so every mode gets the same loop."""
    run: Callable[[Coroutine[Any, Any, int | None]], int | None] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    return run(main)
