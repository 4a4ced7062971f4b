"""Benchmark (not a test): the counting path alone, one real ``shudi worker`` on a real broker.

The enrichment stage's output is played straight into the counts topic (``CountBatch`` messages, as
``runtime.enrichment`` flushes them: one per counting partition per flush, deltas then ticks), so what is
measured is only the Faust agent, its tables and changelogs, and the burst events:

- **paced**: event time advances one window per ``--window-wall-s`` of wall time, with ``--flushes`` flushes
  per window and one territory ×8 from window ``--burst-from`` on. Reported: changelog records per flush
  (from the changelog topics' end offsets), and the wall time from a window's close (the flush that
  carries the tick past its end + lateness) to the burst's ``started`` event (its ``emitted_at``).
- **catch-up**: then one tick moves event time ``--catch-up`` windows on at once (a long pause, or a
  clock jump); reported: how long the agent takes to close them (``shudi_windows_closed_total``) and the
  changelog records it costs.

    python -m bench.counting --bootstrap 127.0.0.1:9092        # or without --bootstrap: a local broker
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from aiokafka import TopicPartition

from streams.devtools import localkafka
from streams.devtools.mmdbbuild import build_demo_db
from streams.pipeline.clock import counting_partition
from streams.pipeline.events import CountBatch, CountDelta, Tick, WindowDelta, encode_count_message
from streams.pipeline.territory import DIVISIONS, Territory
from streams.runtime.counting import changelog_topics
from streams.runtime.kafka import connection_from_env
from streams.runtime.topics import ensure_topics
from streams.settings import load_settings
from streams.testing import WorkerProcess, free_port, metric_value, run_settings

T0 = 1_780_000_000  # a multiple of every window size used here
LATENESS_S = 5
SETTLE_S = 5.0  # changelog records leave Faust's producer buffer after the state changed: wait for them


@dataclass(frozen=True)
class Plan:
    window_s: int
    windows: int
    flushes: int  # per window
    sources: int  # input partitions, one tick each per flush
    partitions: int  # counting partitions
    territories: list[Territory]
    burst_code: str
    burst_from: int  # window index

    def counts(self, window: int, territory: Territory) -> int:
        base = 40 + 10 * (zlib.crc32(territory.code.encode()) % 5)  # stable across runs, unlike hash()
        return base * (8 if territory.code == self.burst_code and window >= self.burst_from else 1)

    def flush(self, window: int, f: int) -> dict[int, CountBatch]:
        """One enrichment flush: the ``f``-th of ``window``, for every counting partition."""
        start = T0 + window * self.window_s
        deltas: dict[int, list[CountDelta]] = {}
        total = 0
        for territory in self.territories:
            n = self.counts(window, territory) // self.flushes
            total += n
            posts = [(f"{territory.code}/p{i}", n // 4) for i in range(3)]
            delta = CountDelta(territory=territory, windows=[WindowDelta(start, n, posts)])
            deltas.setdefault(counting_partition(territory.code, self.partitions), []).append(delta)
        mark = start + (f + 1) * self.window_s / self.flushes
        ticks = [
            Tick(source=s, watermark=mark, totals=[(start, total)] if s == 0 else [])
            for s in range(self.sources)
        ]
        return {p: CountBatch(deltas=deltas.get(p, []), ticks=ticks) for p in range(self.partitions)}


def settings_env(bootstrap: str, uid: str, db: Path, plan: Plan) -> dict[str, str]:
    return run_settings(bootstrap, f"bench-counting-{uid}", partitions=plan.partitions) | {
        "SHUDI_GEOIP_DB": str(db),
        "SHUDI_WINDOW_S": str(plan.window_s),
        "SHUDI_ALLOWED_LATENESS_S": str(LATENESS_S),
        "SHUDI_DETECTOR_WARMUP_WINDOWS": "10",
    }


async def end_offsets(bootstrap: str, topics: list[str], partitions: int) -> int:
    """Records written to ``topics`` so far (each has ``partitions`` partitions: the worker made them)."""
    consumer = connection_from_env(bootstrap).consumer()
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)  # an assigned consumer stops cleanly (a bare one raised CancelledError)
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def read_bursts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = connection_from_env(bootstrap).consumer(topic, auto_offset_reset="earliest")
    await consumer.start()
    try:
        events: list[dict[str, Any]] = []
        while batch := await consumer.getmany(timeout_ms=2000):
            events += [json.loads(r.value or b"") for records in batch.values() for r in records]
        return events
    finally:
        await consumer.stop()


async def play(bootstrap: str, topic: str, plan: Plan, window_wall_s: float) -> dict[int, float]:
    """Send the plan paced in wall time; returns when (wall) each window's closing flush was acknowledged."""
    producer = connection_from_env(bootstrap).producer(linger_ms=2)
    await producer.start()
    closes: dict[int, float] = {}
    try:
        began = time.monotonic()
        for window in range(plan.windows):
            for f in range(plan.flushes):
                due = began + (window + (f + 1) / plan.flushes) * window_wall_s
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                batches = plan.flush(window, f)
                sent = [
                    await producer.send(topic, encode_count_message(b), partition=p)
                    for p, b in batches.items()
                ]
                await asyncio.gather(*sent)
                mark = T0 + window * plan.window_s + (f + 1) * plan.window_s / plan.flushes
                closing = int((mark - LATENESS_S - plan.window_s - T0) // plan.window_s)
                if closing >= 0 and closing not in closes:
                    closes[closing] = time.time()
    finally:
        await producer.stop()
    return closes


async def catch_up(bootstrap: str, topic: str, plan: Plan, windows: int) -> None:
    producer = connection_from_env(bootstrap).producer()
    await producer.start()
    try:
        mark = T0 + (plan.windows + windows) * plan.window_s + LATENESS_S + 1
        tick = [Tick(source=s, watermark=mark, totals=[]) for s in range(plan.sources)]
        for p in range(plan.partitions):
            await producer.send_and_wait(
                topic, encode_count_message(CountBatch(deltas=[], ticks=tick)), partition=p
            )
    finally:
        await producer.stop()


def windows_closed(worker: WorkerProcess) -> float:
    return metric_value(worker.metrics(), "shudi_windows_closed_total") or 0.0


def wait_closed(worker: WorkerProcess, target: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (seen := windows_closed(worker)) < target and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


@click.command()
@click.option("--bootstrap", help="A broker (default: start a local one).")
@click.option(
    "--territories", default=34, show_default=True, help="Territories (the mainland divisions first)."
)
@click.option("--partitions", default=8, show_default=True)
@click.option("--sources", default=8, show_default=True, help="Input partitions: a tick each per flush.")
@click.option("--windows", default=60, show_default=True)
@click.option("--window-s", default=10, show_default=True, help="Event-time window, seconds.")
@click.option("--window-wall-s", default=1.0, show_default=True, help="Wall seconds per window (pacing).")
@click.option("--flushes", default=4, show_default=True, help="Enrichment flushes per window.")
@click.option("--burst-from", default=40, show_default=True, help="Window from which one territory is ×8.")
@click.option("--catch-up", "catch_up_windows", default=1440, show_default=True)
def main(
    bootstrap: str | None,
    territories: int,
    partitions: int,
    sources: int,
    windows: int,
    window_s: int,
    window_wall_s: float,
    flushes: int,
    burst_from: int,
    catch_up_windows: int,
) -> None:
    """Counting-path throughput and burst latency on one real worker (see the module docstring)."""
    chosen = [d.territory for d in DIVISIONS][:territories]
    plan = Plan(window_s, windows, flushes, sources, partitions, chosen, chosen[0].code, burst_from)
    tmp = Path(tempfile.mkdtemp(prefix="shudi-bench-counting-"))
    broker = None
    if bootstrap is None:
        broker = localkafka.start(port=free_port(), data_dir=tmp / "kafka")
        bootstrap = broker.bootstrap
    uid = f"{int(time.time())}"
    env = settings_env(bootstrap, uid, build_demo_db(tmp / "demo.mmdb"), plan)
    settings = load_settings(env)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess.configure(tmp, "worker", env)
    try:
        worker.start()
        worker.wait_ready()
        closes = asyncio.run(play(bootstrap, settings.counts_topic, plan, window_wall_s))
        closed = wait_closed(worker, len(closes), timeout=60)
        time.sleep(SETTLE_S)
        records = asyncio.run(end_offsets(bootstrap, changelog_topics(settings), partitions))
        bursts = asyncio.run(read_bursts(bootstrap, settings.bursts_topic))
        started = [e for e in bursts if e["kind"] == "started"]
        delays = []
        for event in started:
            window = (int(datetime.fromisoformat(event["window_start"]).timestamp()) - T0) // window_s
            delays.append(datetime.fromisoformat(event["emitted_at"]).timestamp() - closes[window])
        flushes_sent = windows * flushes
        click.echo(
            f"paced: {windows} windows × {flushes} flushes, {territories} territories, {partitions} "
            f"counting partitions, {sources} sources: {closed:.0f} windows closed"
        )
        click.echo(f"  changelog records per flush: {records / flushes_sent:.1f} ({records} in all)")
        click.echo(
            f"  burst started events: {len(started)}; close → started: "
            + ", ".join(f"{d:.2f} s" for d in delays)
        )
        before_closed, before_records = closed, records
        began = time.monotonic()
        asyncio.run(catch_up(bootstrap, settings.counts_topic, plan, catch_up_windows))
        target = before_closed + catch_up_windows * partitions
        seen = wait_closed(worker, target, timeout=600)
        took = time.monotonic() - began
        time.sleep(SETTLE_S)
        records = asyncio.run(end_offsets(bootstrap, changelog_topics(settings), partitions)) - before_records
        click.echo(
            f"catch-up of {catch_up_windows} windows: {seen - before_closed:.0f} closes "
            f"(all partitions) in {took:.2f} s = {(seen - before_closed) / took:,.0f} windows closed/s, "
            f"{records} changelog records"
        )
    finally:
        worker.stop(timeout=30)
        if broker is not None:
            localkafka.stop(broker)


if __name__ == "__main__":
    main()
