"""Burst detection end to end on the real broker: two real ``shudi worker`` processes, the real simulator.

``shudi simulate`` (a subprocess) sends realistic traffic with one scripted regional burst; two workers of
one app share the partitions. Time is shrunk: 10-second windows and a simulator running 10 times faster than
the wall clock, so one window closes per wall second and the 10-window warm-up takes 10 seconds.

Checked: exactly one ``started`` and one ``ended`` event for the bursting territory (same ``burst_id``,
valid against schemas/burst.schema.json), no ``started`` for any other territory; the sum over both workers
of ``shudi_burst_active`` for the territory goes to 1 while the burst lasts and back to 0 after it; each
territory's gauges come from one worker only; the per-window counts the counting stage received (the
deltas in the counts topic's CountBatch records) equal the simulator's ground truth, window by window; and
the workers' ``shudi_events_total{outcome="enriched"}`` adds up to the valid events sent.

The helpers here (settings, the two-worker setup, the simulator process, topic readers, scrapes) are shared
with test_detection_restart.py and tests/deploy/test_prometheus_scrape.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client.parser import text_string_to_metric_families
from referencing import Registry, Resource

from streams.devtools.mmdbbuild import build_demo_db
from streams.pipeline.events import SCHEMAS_DIR, decode_count_message
from streams.testing import WorkerProcess, child_env, run_settings

pytestmark = pytest.mark.integration

PARTITIONS = 4
WINDOW_S = 10  # event-time window, simulated seconds
SPEEDUP = 10  # simulated seconds per wall second: one window closes per wall second
RATE = (
    1000.0  # events per wall second (≈ 1000 per window), before the daily cycle (≈ 1.7 at 20:00) and bursts
)
SEED = 4242
# A fixed simulated start (20:00 in Shanghai, near the daily peak): with the seed, the traffic is the same
# on every run, whatever the time of day the test runs at.
SIM_START = "2026-06-01T20:00:00+08:00"
TERRITORY = "CN-SX"
SCOPE = "domestic"
# The gauges a counting partition exports per territory (only its owner may export them).
TERRITORY_GAUGES = (
    "shudi_window_events",
    "shudi_window_baseline_events",
    "shudi_burst_score",
    "shudi_burst_share_score",
    "shudi_burst_active",
)
_SENT = re.compile(r"sent ([\d,]+) events \(([\d,]+) malformed\)")

LabelKey = tuple[tuple[str, str], ...]
Scrape = dict[tuple[str, LabelKey], float]


# --- settings and processes ---------------------------------------------------------------------------------


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    return build_demo_db(tmp_path / "demo.mmdb")


def counting_settings(bootstrap: str, uid: str, db: Path, **extra: str) -> dict[str, str]:
    """uid-named topics and app id, small windows and a short warm-up (see the module docstring)."""
    return run_settings(
        bootstrap,
        f"shudi-{uid}",
        partitions=PARTITIONS,
        SHUDI_GEOIP_DB=str(db),
        SHUDI_WINDOW_S=str(WINDOW_S),
        SHUDI_ALLOWED_LATENESS_S="5",
        SHUDI_DETECTOR_WARMUP_WINDOWS="10",
        SHUDI_TICK_INTERVAL_S="0.25",
        **extra,
    )


@contextlib.contextmanager
def running_workers(tmp: Path, settings: Mapping[str, str], n: int = 2) -> Iterator[list[WorkerProcess]]:
    """``n`` workers of one app (own ports and data dirs), started together and ready, partitions split
    between them; killed on exit whatever happened."""
    workers = [WorkerProcess.configure(tmp, f"worker-{chr(ord('a') + i)}", settings) for i in range(n)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready()
        wait_for_split(workers, settings["SHUDI_INPUT_TOPIC"])
        yield workers
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.stop(timeout=20)


def wait_for_split(workers: Sequence[WorkerProcess], input_topic: str, timeout: float = 60.0) -> None:
    """Until every input partition is owned by exactly one worker and every worker owns one (the
    enrichment consumers export their partitions' lag), and the counting partitions are assigned too."""
    deadline = time.monotonic() + timeout
    owned: list[set[str]] = []
    while time.monotonic() < deadline:
        owned = []
        for w in workers:
            scrape = scrape_worker(w) or {}
            owned.append(
                {
                    dict(labels)["partition"]
                    for (name, labels) in scrape
                    if name == "shudi_consumer_lag_messages" and dict(labels).get("topic") == input_topic
                }
            )
        every = [p for parts in owned for p in parts]
        if all(owned) and len(every) == len(set(every)) == PARTITIONS:
            time.sleep(2.0)  # the Faust consumer group (counts topic, tables) rebalanced alongside
            return
        time.sleep(0.25)
    raise AssertionError(f"input partitions not split between the workers after {timeout}s: {owned}")


@dataclass
class Simulator:
    """``python -m streams.cli simulate`` as a subprocess, with its truth and counts files."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    truth_path: Path
    counts_path: Path
    started_at: float  # monotonic time the process was started (≈ simulated offset 0)

    @classmethod
    def start(
        cls,
        tmp: Path,
        settings: Mapping[str, str],
        bursts: Sequence[Mapping[str, Any]],
        *,
        duration: float,
        rate: float = RATE,
        bad_fraction: float = 0.01,
        seed: int = SEED,
        name: str = "simulate",
    ) -> Simulator:
        bursts_path = tmp / f"{name}-bursts.jsonl"
        bursts_path.write_text("".join(json.dumps(b) + "\n" for b in bursts), encoding="utf-8")
        truth_path, counts_path, log_path = (
            tmp / f"{name}-{x}" for x in ("truth.jsonl", "counts.jsonl", "log")
        )
        args = [
            sys.executable, "-m", "streams.cli", "simulate",
            "--db", settings["SHUDI_GEOIP_DB"],
            "--broker", settings["SHUDI_BROKER"],
            "--topic", settings["SHUDI_INPUT_TOPIC"],
            "--rate", str(rate), "--speedup", str(SPEEDUP), "--window", str(WINDOW_S),
            "--duration", str(duration), "--start", SIM_START, "--seed", str(seed),
            "--bad-fraction", str(bad_fraction),
            "--bursts", str(bursts_path), "--truth", str(truth_path), "--counts", str(counts_path),
            "--no-progress",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                args, env=child_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return cls(proc, log_path, truth_path, counts_path, time.monotonic())

    def sim_time(self, monotonic: float) -> datetime:
        """The simulated time being sent at ``monotonic`` (roughly: the simulator's start-up is not known)."""
        return datetime.fromisoformat(SIM_START) + timedelta(seconds=(monotonic - self.started_at) * SPEEDUP)

    def wall_of(self, sim_offset: float) -> float:
        """Monotonic wall time at which simulated offset ``sim_offset`` is sent (roughly: plus start-up)."""
        return self.started_at + sim_offset / SPEEDUP

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> tuple[int, int]:
        """Until it exits (0 expected); returns (events sent, malformed among them)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"simulator still running after {timeout}s:\n{self.log()[-3000:]}") from None
        assert code == 0, f"simulator exited with {code}:\n{self.log()[-3000:]}"
        m = _SENT.search(self.log())
        assert m, self.log()[-3000:]
        return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def truth(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.truth_path.read_text(encoding="utf-8").splitlines()]

    def counts(self) -> Counter[tuple[str, int]]:
        """Valid events sent per (territory, window start in Unix seconds)."""
        out: Counter[tuple[str, int]] = Counter()
        for line in self.counts_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert row["window_s"] == WINDOW_S, row
            out[(row["territory"], int(datetime.fromisoformat(row["window_start"]).timestamp()))] += row[
                "count"
            ]
        return +out


# --- metrics ------------------------------------------------------------------------------------------------


def scrape_worker(worker: WorkerProcess) -> Scrape | None:
    """Every sample of the worker's /metrics by (sample name, sorted labels); None if it does not answer."""
    if worker.proc is None or worker.proc.poll() is not None:
        return None
    try:
        text = worker.metrics()
    except OSError:
        return None
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value_of(scrape: Scrape | None, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels, or None."""
    if scrape is None:
        return None
    return scrape.get((name, tuple(sorted(labels.items()))))


def summed(scrapes: Sequence[Scrape | None], name: str, **labels: str) -> float:
    return sum(value_of(s, name, **labels) or 0.0 for s in scrapes)


def total(scrapes: Sequence[Scrape | None], name: str) -> float:
    """The sum of every sample named ``name``, whatever its labels, over the scrapes."""
    return sum(v for s in scrapes for (n, _), v in (s or {}).items() if n == name)


def gauge_exporters(scrapes: Sequence[Scrape | None]) -> dict[tuple[str, str], list[int]]:
    """(gauge, territory) -> the indexes of the workers that export it."""
    found: dict[tuple[str, str], list[int]] = {}
    for i, scrape in enumerate(scrapes):
        for name, labels in scrape or {}:
            if name in TERRITORY_GAUGES:
                found.setdefault((name, dict(labels)["territory"]), []).append(i)
    return found


def assert_one_exporter_each(scrapes: Sequence[Scrape | None], *, exactly: bool) -> None:
    exporters = gauge_exporters(scrapes)
    doubled = {k: v for k, v in exporters.items() if len(v) > 1}
    assert not doubled, f"territory gauges exported by more than one worker: {doubled}"
    if exactly:
        # Every territory that has gauges has all five of them, on one worker.
        territories = {t for _, t in exporters}
        missing = [(g, t) for t in territories for g in TERRITORY_GAUGES if (g, t) not in exporters]
        assert not missing, missing
        for t in territories:
            assert len({exporters[(g, t)][0] for g in TERRITORY_GAUGES}) == 1, t


def poll_until(
    condition: Callable[[], bool], timeout: float, what: str | Callable[[], str], interval: float = 0.25
) -> None:
    """Until ``condition()`` holds; an AssertionError naming ``what`` (a text, or a function giving the
    text at the time of failure) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what() if callable(what) else what} after {timeout:.0f}s")
        time.sleep(interval)


# --- topics -------------------------------------------------------------------------------------------------


async def _read_all(bootstrap: str, topic: str, timeout: float) -> list[ConsumerRecord[bytes, bytes]]:  # noqa: ASYNC109
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, f"topic {topic} has no partitions"
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while True:
            if set(partitions) <= consumer.assignment():
                positions = [await consumer.position(tp) for tp in partitions]
                if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                    break
            assert time.monotonic() < deadline, f"reading {topic} took more than {timeout}s"
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for recs in batch.values():
                records.extend(r for r in recs if r.offset < ends[TopicPartition(r.topic, r.partition)])
    finally:
        await consumer.stop()
    return records


def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its current end."""
    return asyncio.run(_read_all(bootstrap, topic, timeout))


def burst_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    events = []
    for record in read_all(bootstrap, topic):
        assert record.value is not None
        events.append(json.loads(record.value))
    return events


def delta_counts(bootstrap: str, topic: str) -> Counter[tuple[str, int]]:
    """The comments the counting stage was sent per (territory, window start): the counts topic's deltas."""
    out: Counter[tuple[str, int]] = Counter()
    for record in read_all(bootstrap, topic):
        for delta in decode_count_message(record.value or b"").deltas:
            for window in delta.windows:
                out[(delta.territory.code, window.start)] += window.count
    return out


def burst_validator() -> Draft202012Validator:
    """schemas/burst.schema.json, with its references to the other schemas resolved by a Registry."""
    schemas = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCHEMAS_DIR.glob("*.schema.json"))]
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas
    )
    (burst,) = (s for s in schemas if s["$id"].endswith("/burst.schema.json"))
    Draft202012Validator.check_schema(burst)
    return Draft202012Validator(burst, registry=registry, format_checker=FormatChecker())


def regional(
    events: Sequence[dict[str, Any]], kind: str, territory: str | None = None
) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["kind"] == kind
        and e["type"] == "regional"
        and (territory is None or e["territory"]["code"] == territory)
    ]


def burst_script(start: float, duration: float, multiplier: float = 8) -> list[dict[str, Any]]:
    return [
        {
            "territory": TERRITORY,
            "start": start,
            "duration": duration,
            "multiplier": multiplier,
            "post_ids": ["p-hot-1"],
            "concentration": 0.8,
        }
    ]


def describe(workers: Sequence[WorkerProcess], sim: Simulator | None = None) -> str:
    """The tails of the logs, for assertion messages."""
    parts = [f"--- {w.log_path.name}\n{w.log()[-2500:]}" for w in workers]
    if sim is not None:
        parts.append(f"--- simulator\n{sim.log()[-1500:]}")
    return "\n".join(parts)


@dataclass
class ActiveWatch:
    """Scrapes the workers and follows ``sum`` over them of one territory's ``shudi_burst_active``.

    Every scrape also checks that no territory gauge is exported by two workers at once. ``timeline`` holds
    (seconds since ``t0``, sum) at each change."""

    workers: Sequence[WorkerProcess]
    t0: float
    territory: str = TERRITORY
    scope: str = SCOPE
    allow_down: bool = False  # a worker may be stopped (restart tests): its scrape is None
    timeline: list[tuple[float, float]] = field(default_factory=list)
    last: list[Scrape | None] = field(default_factory=list)

    def scrape(self) -> list[Scrape | None]:
        scrapes = [scrape_worker(w) for w in self.workers]
        assert self.allow_down or all(s is not None for s in scrapes), describe(self.workers)
        assert_one_exporter_each(scrapes, exactly=False)
        active = summed(scrapes, "shudi_burst_active", territory=self.territory, scope=self.scope)
        assert active in (0.0, 1.0), (active, self.timeline)
        if not self.timeline or self.timeline[-1][1] != active:
            self.timeline.append((round(time.monotonic() - self.t0, 1), active))
        self.last = scrapes
        return scrapes

    def active(self) -> float:
        return summed(self.scrape(), "shudi_burst_active", territory=self.territory, scope=self.scope)

    def wait_for(self, value: float, timeout: float) -> None:
        poll_until(
            lambda: self.active() == value,
            timeout,
            lambda: f"sum of {self.territory}'s shudi_burst_active == {value} (timeline {self.timeline})",
        )

    def values(self) -> list[float]:
        return [v for _, v in self.timeline]


def wait_until_enriched(workers: Sequence[WorkerProcess], valid: int, timeout: float = 30.0) -> None:
    """Until the workers' enriched counters add up to ``valid`` (or more), then a little longer."""

    def enriched() -> float:
        return summed([scrape_worker(w) for w in workers], "shudi_events_total", outcome="enriched")

    with contextlib.suppress(AssertionError):  # the exact comparison that follows says what is wrong
        poll_until(lambda: enriched() >= valid, timeout, "all events enriched")
    time.sleep(2.0)  # duplicates, if any, would show up now


def check_burst_against_truth(started: dict[str, Any], ended: dict[str, Any], truth: dict[str, Any]) -> None:
    """The burst was found where the simulator put it: fired in one of its windows, on its post, ended after
    it. The detector's burst_start is the window that fired it; one window of slack before the scripted
    start is allowed (a window that happened to be warm already)."""
    begin, end = datetime.fromisoformat(truth["start"]), datetime.fromisoformat(truth["end"])
    fired_in = datetime.fromisoformat(started["window_start"])
    assert begin <= fired_in < end, (started, truth)
    assert begin.timestamp() - WINDOW_S <= datetime.fromisoformat(started["burst_start"]).timestamp(), started
    assert started["top_posts"][0]["post_id"] in truth["post_ids"], started
    assert datetime.fromisoformat(ended["window_start"]) >= end, (ended, truth)


# --- the test -----------------------------------------------------------------------------------------------

BURST_START, BURST_DURATION, SIM_DURATION = 200.0, 100.0, 400.0  # simulated seconds
# The counting stage may lag behind the stream while the input flows (it caught up within ~10 s of the
# end of the input in trial runs): the burst gauge is awaited until this long after the simulator's end.
DETECTION_SLACK_S = 45.0


def test_one_regional_burst_two_workers(
    kafka_bootstrap: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    settings = counting_settings(kafka_bootstrap, uid, demo_db)
    validate = burst_validator()
    with running_workers(tmp_path, settings) as workers:
        sim = Simulator.start(
            tmp_path, settings, burst_script(BURST_START, BURST_DURATION), duration=SIM_DURATION
        )
        try:
            watch = ActiveWatch(workers, sim.started_at)
            # The sum over both workers of the territory's gauge goes to 1 while the burst is on ...
            watch.wait_for(1.0, sim.wall_of(SIM_DURATION) + DETECTION_SLACK_S - time.monotonic())
            # ... and back to 0 once it is over.
            watch.wait_for(0.0, timeout=30)
            print(  # how far detection lags behind the stream (not asserted)
                f"burst at {BURST_START / SPEEDUP:.0f}-{(BURST_START + BURST_DURATION) / SPEEDUP:.0f}s, "
                f"simulator ends at {SIM_DURATION / SPEEDUP:.0f}s; sum of burst_active: {watch.timeline}"
            )
            sent, malformed = sim.wait(timeout=60)
            truth_counts = sim.counts()
            valid = sent - malformed
            assert sum(truth_counts.values()) == valid

            # Every valid event enriched once, across the two workers; every bad one dead-lettered.
            wait_until_enriched(workers, valid)
            final = [scrape_worker(w) for w in workers]
            assert summed(final, "shudi_events_total", outcome="enriched") == valid, describe(workers, sim)
            assert summed(final, "shudi_events_total", outcome="dead_lettered") == malformed
            # Each territory's gauges on one worker, and both workers count some territories.
            assert_one_exporter_each(final, exactly=True)
            exporters = gauge_exporters(final)
            assert {ws[0] for ws in exporters.values()} == {0, 1}, exporters
            assert summed(final, "shudi_burst_active", territory=TERRITORY, scope=SCOPE) == 0

            # The counting stage was sent exactly the simulator's counts, window by window.
            got = delta_counts(kafka_bootstrap, settings["SHUDI_COUNTS_TOPIC"])
            diff = {
                k: (got[k], truth_counts[k])
                for k in set(got) | set(truth_counts)
                if got[k] != truth_counts[k]
            }
            assert not diff, f"counts topic vs simulator (got, sent) differ in {len(diff)} windows: {diff}"
            assert sum(got.values()) == valid

            events = burst_events(kafka_bootstrap, settings["SHUDI_BURSTS_TOPIC"])
        finally:
            sim.kill()

    for event in events:
        validate.validate(event)
    started = regional(events, "started", TERRITORY)
    ended = regional(events, "ended", TERRITORY)
    assert len(started) == 1, (started, watch.timeline)
    assert len(ended) == 1, (ended, watch.timeline)
    burst_id = started[0]["burst_id"]
    assert ended[0]["burst_id"] == burst_id
    assert {e["burst_id"] for e in events if e["type"] == "regional"} == {burst_id}, "one regional burst only"
    others = [e for e in regional(events, "started") if e["territory"]["code"] != TERRITORY]
    assert not others, others
    (truth,) = sim.truth()
    assert truth["territory"] == TERRITORY
    assert truth["emitted_extra"] > 0
    check_burst_against_truth(started[0], ended[0], truth)
    assert watch.values() == [0.0, 1.0, 0.0], watch.timeline
