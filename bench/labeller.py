"""Micro-benchmark of ``Labeller.label`` at realistic repetition.

A synthetic GeoIP2-City-shaped database (not real geography) of ``--networks`` networks, ``--distinct``
addresses drawn from its own networks, and a stream of ``--lookups`` lookups over them with Zipf-like
popularity (a few addresses comment a lot). Reports lookups/s for: cold misses (every address once), the
Zipf stream through a bounded cache, and a warm cache (every lookup a hit). Run from the repo root::

    python -m bench.labeller [--db PATH] [--networks 250000] [--distinct 300000] [--lookups 3000000]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import tempfile
import time
from pathlib import Path

import maxminddb

from streams.devtools.mmdbbuild import build_synthetic_db, sample_ips
from streams.pipeline.geoip import Labeller, MmdbDatabase


def zipf_stream(items: list[str], n: int, s: float, seed: int) -> list[str]:
    """``n`` draws from ``items`` where rank k has weight 1/k**s (items shuffled first)."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (k**s) for k in range(1, len(items) + 1)))
    total = cum[-1]
    order = items[:]
    rng.shuffle(order)
    return [order[bisect.bisect_left(cum, rng.random() * total)] for _ in range(n)]


def timed(fn: object, texts: list[str]) -> float:
    call = fn  # local for speed
    assert callable(call)
    t0 = time.perf_counter()
    for t in texts:
        call(t)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, help="use this .mmdb (default: build a synthetic one in a temp dir)")
    ap.add_argument("--networks", type=int, default=250_000)
    ap.add_argument("--distinct", type=int, default=300_000)
    ap.add_argument("--lookups", type=int, default=3_000_000)
    ap.add_argument("--zipf-s", type=float, default=1.05)
    ap.add_argument("--cache-size", type=int, default=262_144)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db_path: Path = args.db or Path(tmp) / "synthetic.mmdb"
        if args.db is None:
            t0 = time.perf_counter()
            build_synthetic_db(db_path, args.networks, seed=args.seed)
            print(f"built {db_path.name}: {args.networks} networks in {time.perf_counter() - t0:.1f}s")
        with maxminddb.open_database(str(db_path)) as r:
            print(f"database: {r.metadata().database_type}, {r.metadata().node_count} nodes")

        t0 = time.perf_counter()
        distinct = list(dict.fromkeys(sample_ips(db_path, None, args.distinct, seed=args.seed)))
        stream = zipf_stream(distinct, args.lookups, args.zipf_s, args.seed)
        print(f"{len(distinct)} distinct addresses, {len(stream)} lookups (Zipf s={args.zipf_s}) "
              f"prepared in {time.perf_counter() - t0:.1f}s")  # fmt: skip

        db = MmdbDatabase.open(db_path)

        # 1. every address once, empty cache: the miss path (parse, special ranges, mmdb, label)
        cold = Labeller(db, len(distinct) + 1)
        dt = timed(cold.label, distinct)
        us = dt / len(distinct) * 1e6
        print(f"uncached (misses):        {len(distinct) / dt:12,.0f} lookups/s  ({us:.2f} µs)")

        # raw reader for reference
        reader = maxminddb.open_database(str(db_path), maxminddb.MODE_AUTO)
        dt = timed(reader.get, distinct)
        print(f"  (bare reader.get(str):  {len(distinct) / dt:12,.0f} lookups/s)")

        # 2. the Zipf stream through the bounded cache
        zipf = Labeller(db, args.cache_size)
        dt = timed(zipf.label, stream)
        s = zipf.stats()
        print(f"zipf stream, cache {args.cache_size}: {len(stream) / dt:12,.0f} lookups/s  "
              f"hit rate {s.hits / (s.hits + s.misses):.1%}, misses {s.misses}, "
              f"miss time {s.miss_seconds:.2f}s of {dt:.2f}s")  # fmt: skip

        # 3. warm cache: every lookup a hit
        dt = timed(zipf.label, stream)
        s2 = zipf.stats()
        hits = s2.hits - s.hits
        print(f"cached (warm, {hits / len(stream):.1%} hits): {len(stream) / dt:12,.0f} lookups/s  "
              f"({dt / len(stream) * 1e9:.0f} ns)")  # fmt: skip


if __name__ == "__main__":
    main()
