"""Micro-benchmark of the labeller on real-size databases of any format, at realistic repetition.

Opens and compiles ``--db`` (one file or an ordered, comma-separated list: .mmdb, .xdb, .ipdb; default: a
synthetic GeoIP2-City of ``--networks`` networks, not real geography), draws ``--distinct`` addresses from
the compiled table's own ranges and a stream of ``--lookups`` lookups over them with Zipf-like popularity (a
few addresses comment a lot). Reports the start-up cost (open, check and compile, then
the same with the compiled table cached, as a worker's start does) and memory, the cost of a miss, and
lookups/s for the Zipf stream from a cold start, with and without the LRU cache in front of the table, and
warm. Run from the repo root::

    python -m bench.labeller [--db a.xdb,b.mmdb] [--networks 250000] [--distinct 300000] [--lookups 3000000]
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import os
import random
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from streams.devtools.mmdbbuild import build_synthetic_db
from streams.pipeline.geodb import parse_paths
from streams.pipeline.geodb.labeller import Labeller, load
from streams.pipeline.geodb.table import TerritoryTable
from streams.pipeline.territory import special_reason


def zipf_stream(items: list[str], n: int, s: float, seed: int) -> list[str]:
    """``n`` draws from ``items`` where rank k has weight 1/k**s (items shuffled first)."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (k**s) for k in range(1, len(items) + 1)))
    total = cum[-1]
    order = items[:]
    rng.shuffle(order)
    return [order[bisect.bisect_left(cum, rng.random() * total)] for _ in range(n)]


def sample_addresses(table: TerritoryTable, n: int, seed: int, ipv6_share: float = 0.15) -> list[str]:
    """``n`` distinct ordinary addresses from ranges the table knows a territory for (a range picked
    uniformly, then an address in it), ``ipv6_share`` of them IPv6."""
    rng = random.Random(seed)
    known = {f: [(s, e) for s, e, lb in table.ranges(f) if lb.reason is None] for f in (4, 6)}
    out: set[str] = set()
    while len(out) < n:
        family = 6 if known[6] and rng.random() < ipv6_share else 4
        s, e = rng.choice(known[family])
        v = s + rng.randrange(e - s + 1)
        ip = IPv4Address(v) if family == 4 else IPv6Address(v)
        if special_reason(ip) is None:
            out.add(str(ip))
    return sorted(out, key=lambda t: rng.random())


def timed(fn: Callable[[str], object], texts: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for ``fn`` over ``texts``. On a shared machine the CPU
    time is the steadier figure: it leaves out the time the process waited for a core."""
    call = fn  # local for speed
    t0, c0 = time.perf_counter(), time.process_time()
    for t in texts:
        call(t)
    return time.perf_counter() - t0, time.process_time() - c0


def rates(n: int, took: tuple[float, float]) -> str:
    """``n`` lookups in ``took`` (wall, CPU) as lookups/s and time per lookup, both ways."""
    wall, cpu = took
    return (
        f"{n / wall:12,.0f} lookups/s ({wall / n * 1e9:,.0f} ns); "
        f"by CPU time {n / cpu:12,.0f} lookups/s ({cpu / n * 1e9:,.0f} ns)"
    )


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="database file(s), comma separated (default: a synthetic .mmdb, built)")
    ap.add_argument("--networks", type=int, default=250_000)
    ap.add_argument("--distinct", type=int, default=300_000)
    ap.add_argument("--lookups", type=int, default=3_000_000)
    ap.add_argument("--zipf-s", type=float, default=1.05)
    ap.add_argument("--cache-size", type=int, default=262_144)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.db is None:
            paths = [Path(tmp) / "synthetic.mmdb"]
            t0 = time.perf_counter()
            build_synthetic_db(paths[0], args.networks, seed=args.seed)
            print(f"built {paths[0].name}: {args.networks} networks in {time.perf_counter() - t0:.1f}s")
        else:
            paths = parse_paths(args.db)
        for p in paths:
            print(f"database: {p} ({p.stat().st_size / 1e6:.1f} MB)")
        # the machine's load, so a figure from a shared machine is read as such
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

        gc.collect()
        rss0 = rss_mb()
        # What a worker's start costs, as it does it (streams.runtime.app.load_geoip): cold, no cached table
        # (open, check, compile, write the cache), then again with the table cached by the first.
        table_cache = Path(tmp) / "geoip-table"
        t0 = time.perf_counter()
        sources, table = load(paths, table_cache)
        load_s = time.perf_counter() - t0
        for s in sources:
            s.close()
        del sources
        gc.collect()
        rss1 = rss_mb()
        v4, v6, inner = table.size
        print(f"start, cold (open, check, compile, cache): {load_s:.2f}s "
              f"(compile {table.compile_seconds:.2f}s); "
              f"table: {v4:,} IPv4 ranges, {v6:,} IPv6 /64-level ranges, {inner:,} inner blocks, "
              f"{len(table.labels)} labels, {table.nbytes() / 1e6:.1f} MB of arrays; "
              f"process RSS {rss0:.0f} -> {rss1:.0f} MB")  # fmt: skip
        t0 = time.perf_counter()
        again, cached = load(paths, table_cache)
        cached_s = time.perf_counter() - t0
        for s in again:
            s.close()
        if not cached.from_cache:
            raise SystemExit("the second load did not read the cached table")
        print(f"start, cached (open, check, hash the files, read the table): {cached_s:.2f}s")
        del again, cached
        for info in table.sources:
            print(f"  {info.kind} {info.build}: {info.ranges:,} ranges")

        t0 = time.perf_counter()
        distinct = sample_addresses(table, args.distinct, args.seed)
        stream = zipf_stream(distinct, args.lookups, args.zipf_s, args.seed)
        print(f"{len(distinct)} distinct addresses, {len(stream)} lookups (Zipf s={args.zipf_s}) "
              f"prepared in {time.perf_counter() - t0:.1f}s")  # fmt: skip

        # 1. the table alone, every address once: what a miss costs (parse, bisect, label)
        bare = table.labeller()
        n = len(distinct)
        print(f"table lookup (a miss):    {rates(n, timed(bare, distinct))}")
        mmdbs = [p for p in paths if p.suffix == ".mmdb"]
        if mmdbs:  # the miss before the table, in the same run: a full GeoIP2 record per address
            import maxminddb

            from streams.pipeline.geoip import location_from_record
            from streams.pipeline.territory import label_location

            reader = maxminddb.open_database(str(mmdbs[0]), maxminddb.MODE_AUTO)
            get = reader.get

            def old_miss(text: str) -> object:
                return label_location(location_from_record(get(text)))

            print(f"  (before: mmdb record + label: {rates(n, timed(old_miss, distinct))})")
            reader.close()
        # ... and through the Labeller's miss path (LRU miss, one in MISS_SAMPLE timed for the histogram)
        cold = Labeller(table, n + 1)
        print(f"labeller miss:            {rates(n, timed(cold.label, distinct))}")

        # 2. the Zipf stream from a cold start: table alone, then the LRU cache in front of it
        m = len(stream)
        print(f"zipf stream, no cache:    {rates(m, timed(bare, stream))}")
        zipf = Labeller(table, args.cache_size)
        took = timed(zipf.label, stream)
        st = zipf.stats()
        print(f"zipf stream, cache {args.cache_size} from empty: {rates(m, took)}; "
              f"hit rate {st.hits / (st.hits + st.misses):.1%}, misses {st.misses}")  # fmt: skip

        # 3. warm cache: every lookup a hit
        took = timed(zipf.label, stream)
        hits = zipf.stats().hits - st.hits
        print(f"cached (warm, {hits / m:.1%} hits): {rates(m, took)}")
        print(f"process RSS at the end: {rss_mb():.0f} MB; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
