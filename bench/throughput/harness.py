"""One harness run: the database and the input, every mode in turn, the report."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.throughput.kafka import create_topics, delete_run_topics, produce
from bench.throughput.measure import InputTimes, read_back, run_mode
from bench.throughput.modes import plan_modes
from bench.throughput.options import Options
from bench.throughput.report import Result, print_table, unaccounted, write_json
from streams.devtools.mmdbbuild import build_synthetic_db, sample_ips
from streams.devtools.sample import sample_events, zipf_like
from streams.testing import user_cache_dir

# Every event in one event-time window: the modes compare the per-event path, not window closing.
CREATED_AT = datetime(2026, 11, 25, 10, tzinfo=timezone(timedelta(hours=8)))
# ~600-byte comments (the text is most of it); bad events of the kinds a naive loop can also recognise.
TEXT_BYTES = 350
BAD_REASONS = ("invalid_json", "schema", "invalid_ip")


def ensure_db(db: tuple[Path, ...] | None, networks: int) -> tuple[tuple[Path, ...], str]:
    """The database file(s) to use and how they were obtained (reported, so a synthetic result is never
    mistaken for real): ``db``, else a synthetic GeoIP2-City of ``networks`` networks, built once and
    cached."""
    if db is not None:
        return db, "given"
    cached = user_cache_dir() / "bench" / f"synthetic-city-{networks}.mmdb"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        build_synthetic_db(tmp, networks, 7)
        tmp.replace(cached)
    return (cached,), f"synthetic, {networks:,} networks (streams.devtools.mmdbbuild)"


def distinct_ips(db: tuple[Path, ...], n: int) -> list[str]:
    """``n`` different ordinary addresses from the databases' networks: one .mmdb's own networks (as every
    earlier run drew them), or the ranges of the table a list compiles into."""
    if len(db) == 1 and db[0].suffix == ".mmdb":
        return sample_ips(db[0], None, n, seed=1, unique=True)
    from bench.labeller import sample_addresses
    from streams.pipeline.geodb.labeller import compile_files

    return sample_addresses(compile_files(list(db)), n, seed=1)


def input_events(n: int, ips: Sequence[str]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of ``n`` comments, keyed by event id (``e2-<position>``), Zipf-like address reuse over
    ``ips``, ~1 % bad events."""
    events = sample_events(
        ips,
        n,
        seed=2,
        start=CREATED_AT,
        interval=timedelta(0),
        pick_ip=zipf_like,
        min_text_bytes=TEXT_BYTES,
        bad_reasons=BAD_REASONS,
    )
    for e in events:
        assert e.event_id is not None
        yield e.event_id.encode(), e.value


async def harness(opts: Options) -> int:
    """Run every mode of ``opts`` on the same input, print and write the report; returns the exit code."""
    run_tag = f"bench-{uuid.uuid4().hex[:8]}"
    opts.workdir.mkdir(parents=True, exist_ok=True)
    db, db_source = ensure_db(opts.db, opts.networks)
    opts = replace(opts, db=db)
    ips = distinct_ips(db, min(opts.distinct_ips, max(100, opts.events)))
    names = ",".join(str(p) for p in db)
    print(
        f"run {run_tag}: DB {names} ({db_source}), {len(ips):,} distinct IPs, logs in {opts.workdir}",
        flush=True,
    )

    def events() -> Iterator[tuple[bytes, bytes]]:
        return input_events(opts.events, ips)

    shared_input: str | None = None
    inputs = InputTimes(opts.events)
    if not opts.rate:
        shared_input = f"{run_tag}-in"
        await create_topics(opts.bootstrap, {shared_input: opts.partitions})
        t0 = time.monotonic()
        await produce(opts.bootstrap, shared_input, events())
        print(f"preloaded {opts.events:,} events in {time.monotonic() - t0:.1f}s", flush=True)
        await inputs.read(opts.bootstrap, shared_input)

    results: list[Result] = []
    rounds = [
        (k, plan_modes(opts, run_tag if opts.rounds == 1 else f"{run_tag}-r{k}", shared_input))
        for k in range(1, opts.rounds + 1)
    ]
    for k, mode in ((k, mode) for k, modes in rounds for mode in modes):
        print(f"running {mode.name}" + (f" (round {k})" if opts.rounds > 1 else "") + " ...", flush=True)
        res = await run_mode(opts, mode, events)
        res.round = k
        if opts.rate:
            # Fresh input per mode: the timestamps to measure from were written while the mode ran.
            inputs = InputTimes(opts.events)
            await inputs.read(opts.bootstrap, mode.input_topic, warmup_s=opts.warmup)
        await read_back(opts.bootstrap, mode, res, inputs)
        print(f"  {res}", flush=True)
        results.append(res)
    return await _report(opts, results, {"db_source": db_source, "run_id": run_tag})


async def _report(opts: Options, results: list[Result], meta: dict[str, Any]) -> int:
    meta = {
        "events": opts.events,
        "partitions": opts.partitions,
        "db": ",".join(str(p) for p in opts.db or ()),
        "rate": opts.rate,
        "warmup": opts.warmup,
        **meta,
    }
    print_table(results, meta)
    if opts.json:
        write_json(opts.json, results, meta)
    if opts.long:
        await delete_run_topics(opts.bootstrap, meta["run_id"])  # some 12 GB of broker disk
    if opts.tiny and (failed := unaccounted(results, opts.events)):
        print("\n".join(failed), file=sys.stderr)
        print("every event must end up in the output or the dead-letter topic exactly once", file=sys.stderr)
        return 1
    return 0
