"""The fault matrix's rows and checks of issue 14 that ``bench.faults`` calls: the network cut (through
``bench.faultproxy``), the rebalance storm, a worker killed during a rebalance; the group's assignment at the
end, and whether ``/healthz`` told the truth.

Kept apart from ``bench.faults`` so that rows added side by side merge easily; it imports the harness (the
harness imports this module inside the functions that call it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.structs import TopicPartition

from bench import faults
from streams.devtools.mmdbbuild import sample_ips
from streams.devtools.sample import SampleEvent, comment
from streams.pipeline.events import decode_count_message
from streams.pipeline.windows import WindowSpec
from streams.runtime.kafka import KafkaConnection
from streams.settings import Settings

if TYPE_CHECKING:
    from bench.faults import Inject, RowOptions, RowResult, Run

# What a worker's /healthz may take beyond its stall timeout to fail once it is stuck: the worker's own
# last progress can be a little later than the last record the harness saw come out, and the sampler looks
# twice a second. Only a stall longer than stall_timeout_s + this must have shown as a 503.
HEALTHZ_MARGIN_S = 5.0
# aiokafka logs this (INFO) when a member's rebalance begins, before its revocation callback runs.
REBALANCE_BEGINS = "Revoking previously assigned partitions"
# How long after lag 0 the scripted burst may take to come out (the counting stage runs behind).
DETECTION_WAIT_S = 60.0


# --------------------------------------------------------------------------- the scripted burst

# The harness's events are ``sample_events``'s: 10 ms apart from this instant.
EVENTS_START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
EVENT_INTERVAL_S = 0.01
# The stream spans about this many windows, whatever its length; the detector warms up on the first ones.
SPAN_WINDOWS = 30
WARMUP_WINDOWS = 10
BURST_TERRITORY = (
    "CN-SX"  # a mid-sized province of the demo database, as in tests/integration/test_bursts_e2e
)
BURST_WINDOWS = range(18, 21)  # window indexes of the stream that carry the burst


def burst_window_s(events: int) -> int:
    """The window size that makes ``events`` span about SPAN_WINDOWS windows (10 s for 30,000 events)."""
    return max(1, round(events * EVENT_INTERVAL_S / SPAN_WINDOWS))


def burst_settings(events: int) -> dict[str, str]:
    """The workers' window and detector settings of a row: short windows and warm-up, so that a run of
    seconds has enough windows for the scripted burst to be found."""
    window_s = burst_window_s(events)
    return {
        "SHUDI_WINDOW_S": str(window_s),
        "SHUDI_ALLOWED_LATENESS_S": str(window_s),
        "SHUDI_DETECTOR_WARMUP_WINDOWS": str(WARMUP_WINDOWS),
        "SHUDI_TICK_INTERVAL_S": "0.25",
    }


def burst_starts(events: int) -> list[int]:
    """Epoch starts of the burst's windows."""
    window_s = burst_window_s(events)
    first = int(EVENTS_START.timestamp()) // window_s * window_s
    return [first + i * window_s for i in BURST_WINDOWS]


def with_scripted_burst(db: Path, events: Sequence[SampleEvent], seed: int) -> list[SampleEvent]:
    """``events`` (sample_events's, in time order) with a regional burst in BURST_TERRITORY merged in: in
    each of its windows, about eight times what an average territory gets, on one hot post."""
    window_s = burst_window_s(len(events))
    per_window = max(40, int(window_s / EVENT_INTERVAL_S) // 5)
    rng = random.Random(seed)
    ips = sample_ips(db, BURST_TERRITORY, n=50, seed=seed)
    extra: dict[int, list[SampleEvent]] = {}
    for start in burst_starts(len(events)):
        for j in range(per_window):
            when = datetime.fromtimestamp(start + (j + 0.5) * window_s / per_window, tz=UTC)
            ip = rng.choice(ips)
            event_id = f"burst{seed}-{start}-{j}"
            body = comment(rng, event_id, ip, when, post_id="p-burst-1" if j % 4 else None)
            # Sent right after the last event of the stream that is not later than it.
            at = math.floor((when - EVENTS_START) / timedelta(seconds=EVENT_INTERVAL_S))
            extra.setdefault(at, []).append(SampleEvent(json.dumps(body).encode(), event_id, ip, None))
    merged: list[SampleEvent] = []
    for i, e in enumerate(events):
        merged.append(e)
        merged.extend(extra.pop(i, []))
    for rest in extra.values():
        merged.extend(rest)
    return merged


def scripted_burst_problem(bursts: Sequence[dict[str, object]], events: int) -> str | None:
    """None if a regional burst of BURST_TERRITORY started in one of the scripted windows (or one before:
    a window that happened to be warm already, as the e2e test allows)."""
    starts = burst_starts(events)
    window_s = burst_window_s(events)
    for b in bursts:
        territory = b.get("territory")
        code = territory.get("code") if isinstance(territory, dict) else None
        if b.get("kind") == "started" and b.get("type") == "regional" and code == BURST_TERRITORY:
            fired = datetime.fromisoformat(str(b["window_start"])).timestamp()
            if starts[0] - window_s <= fired <= starts[-1]:
                return None
    seen = [f"{b.get('kind')} {b.get('burst_id')}" for b in bursts]
    return f"the scripted burst of {BURST_TERRITORY} was not detected (burst events: {seen[:5]})"


# --------------------------------------------------------------------------- rows


def plan(run: Run, options: RowOptions) -> tuple[Inject, int] | None:
    """The workers, injection and duplicate bound of issue 14's rows; None for a fault not of them."""
    fault = options.fault
    if fault == "network-cut":
        run.worker("worker-1")

        def cut(r: Run) -> None:
            assert r.proxy is not None
            r.proxy.cut(options.cut_mode)
            # What was in flight when the cut came may still land; after that nothing the workers send may.
            settle = min(2.0, options.cut_s / 4)
            time.sleep(settle)
            held = asyncio.run(faults._safe_count(r.bootstrap, r.settings["SHUDI_ENRICHED_TOPIC"]))
            time.sleep(options.cut_s - settle)
            after = asyncio.run(faults._safe_count(r.bootstrap, r.settings["SHUDI_ENRICHED_TOPIC"]))
            r.proxy.restore()
            if held >= 0 and after >= 0 and after != held:
                # The workers' traffic bypassed the proxy (an advertised listener not pointing at it).
                raise AssertionError(
                    f"the cut did not hold: {held} enriched at its start, {after} at its end"
                )

        # As for a broker fault: batches acknowledged but whose commit was lost replay once, twice at most.
        return cut, 2 * options.in_flight_bound
    if fault == "rebalance-storm":
        run.worker("worker-1")

        def storm(r: Run) -> None:
            extra = [r.worker("worker-2"), r.worker("worker-3")]
            for w in extra:
                w.start()
            for w in extra:
                w.wait_ready(240)
            for w in extra:
                code = w.stop(faults.STOP_BOUND_S)
                if code != 0:
                    raise AssertionError(f"{w.name} exit {code} on SIGTERM in the storm")

        # Four membership changes (two joins, two leaves), each may refuse a commit: one flush each.
        return storm, 4 * options.in_flight_bound
    if fault == "worker-kill-rebalance":
        run.worker("worker-1")

        def kill_in_rebalance(r: Run) -> None:
            old = r.workers[0]
            begun = old.log().count(REBALANCE_BEGINS)
            new = r.worker("worker-2")
            new.start()
            # The second member's join makes the coordinator rebalance: kill the first as soon as it logs
            # that its rebalance began (its revocation, its flush and commit in progress).
            deadline = time.monotonic() + 240
            while old.log().count(REBALANCE_BEGINS) <= begun:
                if time.monotonic() > deadline or not new.running():
                    raise AssertionError(f"{old.name} never began a rebalance after {new.name} started")
                time.sleep(0.05)
            old.kill()
            new.wait_ready(240)

        # The killed worker's uncommitted flush, and one more for the rebalance it was in.
        return kill_in_rebalance, 2 * options.in_flight_bound
    return None


# --------------------------------------------------------------------------- what the harness watches


@dataclass
class Sample:
    t: float  # monotonic
    enriched: int  # end offsets of the enriched topic; -1: the broker did not answer
    lag: int | None  # the enrichment group's lag; None: the broker did not answer or nothing committed


@dataclass
class Timeline:
    """The harness's view of progress (once a second) and every worker's /healthz answers (twice a
    second), from the workers' start to the end of the output reads."""

    progress: list[Sample] = field(default_factory=list)
    healthz: dict[str, list[tuple[float, str]]] = field(default_factory=dict)

    def longest_stall(self) -> float:
        """How long :meth:`stall` lasted (0 if never)."""
        begin, end = self.stall()
        return end - begin

    def stall(self) -> tuple[float, float]:
        """The longest time (first and last sample) during which input waited (lag not 0) and nothing new
        came out enriched: the workers were stuck, from the outside. An unanswered probe (the broker away)
        counts as no progress."""
        longest = (0.0, 0.0)
        since: float | None = None
        last = -1
        for s in self.progress:
            waiting = s.lag is None or s.lag > 0
            grew = s.enriched > last and s.enriched >= 0
            if s.enriched >= 0:
                last = max(last, s.enriched)
            if waiting and not grew:
                since = s.t if since is None else since
                if s.t - since > longest[1] - longest[0]:
                    longest = (since, s.t)
            else:
                since = None
        return longest


@contextlib.contextmanager
def watching(run: Run, timeline: Timeline) -> Iterator[None]:
    """Fills ``timeline`` while the block runs, from a thread of its own (the scenario's loop is busy)."""
    done = threading.Event()

    def health() -> None:
        while not done.wait(0.5):
            for w in list(run.workers):
                if w.running():
                    timeline.healthz.setdefault(w.name, []).append(
                        (time.monotonic(), faults.healthz(w.metrics_port))
                    )

    async def probe() -> Sample:
        t = time.monotonic()
        try:
            enriched, lag = await _probe(run)
        except Exception:  # noqa: BLE001 -- the broker away or paused (a fault): no answer this time
            return Sample(t, -1, None)
        return Sample(t, enriched, lag)

    def progress() -> None:
        while not done.wait(1.0):
            timeline.progress.append(asyncio.run(probe()))

    threads = [
        threading.Thread(target=f, name=f"watch-{f.__name__}", daemon=True) for f in (health, progress)
    ]
    for th in threads:
        th.start()
    try:
        yield
    finally:
        done.set()
        for th in threads:
            th.join()


async def _probe(run: Run) -> tuple[int, int | None]:
    """The enriched topic's end offsets and the enrichment group's lag (None: nothing committed yet).

    Unlike the scenario's probes, every client is closed even when its start fails (the broker away):
    called once a second through a fault, an unclosed one each time ends in ResourceWarnings."""
    kafka = KafkaConnection.plaintext(run.bootstrap)
    inputs = [TopicPartition(run.settings["SHUDI_INPUT_TOPIC"], p) for p in range(faults.PARTITIONS)]
    outputs = [TopicPartition(run.settings["SHUDI_ENRICHED_TOPIC"], p) for p in range(faults.PARTITIONS)]
    consumer = kafka.consumer(group_id=None, request_timeout_ms=5_000)
    admin = kafka.admin(request_timeout_ms=5_000)
    try:
        await consumer.start()
        await admin.start()
        ends = await consumer.end_offsets([*inputs, *outputs])
        committed = await admin.list_consumer_group_offsets(f"{run.settings['SHUDI_APP_ID']}-enrich")
    finally:
        await consumer.stop()
        await admin.close()
    enriched = sum(ends[tp] for tp in outputs)
    if not committed:
        return enriched, None
    lag = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in inputs)
    return enriched, lag


# --------------------------------------------------------------------------- checks after a row


def check_after(run: Run, events: Sequence[SampleEvent], timeline: Timeline, result: RowResult) -> None:
    """The checks of issue 14 that need the run (not only its outputs); problems go into ``result``."""
    # The counting stage may still be behind the enrichment group's lag 0: wait a while for the burst.
    deadline = time.monotonic() + DETECTION_WAIT_S
    while True:
        counts, bursts = asyncio.run(read_counts_and_bursts(run))
        missed = scripted_burst_problem(bursts, run.options.events) if run.expect_scripted_burst else None
        if missed is None or time.monotonic() > deadline:
            break
        time.sleep(2)
    if missed is not None:
        result.problems.append(missed)
    waited = time.monotonic() - (deadline - DETECTION_WAIT_S)
    faults._say(f"counts and bursts read; waited {waited:.0f}s for the scripted burst")
    check_counts(events, counts, _window_spec(run.settings), result)
    check_bursts(bursts, result)
    running = {w.name for w in run.workers if w.running()}
    check_healthz(timeline, run.options.stall_timeout_s, running, result)
    if run.options.fault in ("rebalance-storm", "worker-kill-rebalance", "network-cut"):
        t0 = time.monotonic()
        problem = asyncio.run(group_assignment_problem(run))
        faults._say(
            f"group assignment read in {time.monotonic() - t0:.0f}s: {problem or 'each partition owned once'}"
        )
        if problem is not None:
            result.problems.append(problem)


def check_healthz(timeline: Timeline, stall_timeout_s: float, running: set[str], result: RowResult) -> None:
    """/healthz tells the truth: every worker alive at the end passes (its last answer 200); and if the
    workers were stuck (input waiting, nothing coming out) longer than the stall timeout plus a margin, some
    worker's /healthz failed during that time (unless a worker was starting in it)."""
    result.stall_s = round(timeline.longest_stall(), 1)
    for name, answers in timeline.healthz.items():
        if answers and answers[-1][1] != "200" and name in running:
            result.problems.append(
                f"{name}'s /healthz answered {answers[-1][1]!r} at the end, after recovery"
            )
    begin, end = timeline.stall()
    # A worker started during the stall (a replacement after a kill) answers 200 "starting" by design (a
    # startup probe covers that time, not the liveness probe): such a stall asks nothing of /healthz.
    starting = any(begin <= answers[0][0] <= end for answers in timeline.healthz.values() if answers)
    if result.stall_s > stall_timeout_s + HEALTHZ_MARGIN_S and not starting:
        failed = sum(
            1
            for answers in timeline.healthz.values()
            for t, a in answers
            if a.startswith("503") and begin <= t <= end + HEALTHZ_MARGIN_S
        )
        if not failed:
            result.problems.append(
                f"stuck {result.stall_s}s (stall timeout {stall_timeout_s:.0f}s) and /healthz never failed"
            )


async def group_assignment_problem(run: Run) -> str | None:
    """None if the enrichment group is Stable and its members own every input partition exactly once;
    otherwise what is wrong. Waits up to a minute for a rebalance still settling after the last leave."""
    group = f"{run.settings['SHUDI_APP_ID']}-enrich"
    want = {TopicPartition(run.settings["SHUDI_INPUT_TOPIC"], p) for p in range(faults.PARTITIONS)}
    admin = KafkaConnection.plaintext(run.bootstrap).admin(request_timeout_ms=10_000)
    await admin.start()
    problem: str | None = "not described"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            problem = None
            for resp in await admin.describe_consumer_groups([group]):
                for g in resp.groups:
                    # (error_code, group_id, state, protocol_type, protocol, members[, operations])
                    state, members = g[2], g[5]
                    owned: list[TopicPartition] = []
                    for m in members:
                        # The member's assignment is its last field, whatever the response's version.
                        # (empty while the group is still syncing: no partitions yet).
                        if m[-1]:
                            owned += ConsumerProtocolMemberAssignment.decode(m[-1]).partitions()
                    if state != "Stable":
                        problem = f"enrichment group {state}, not Stable, at the end"
                    elif sorted(owned) != sorted(want):
                        problem = (
                            f"enrichment group owns {sorted(owned)} at the end, not each input partition"
                        )
            if problem is None:
                return None
            await asyncio.sleep(1)
    finally:
        await admin.close()
    return problem


def _window_spec(settings: dict[str, str]) -> WindowSpec:
    """The workers' windows: their settings, or the defaults of :class:`streams.settings.Settings`."""

    def value(name: str) -> int:
        raw = settings.get(f"SHUDI_{name.upper()}")
        default = Settings.model_fields[name].default
        return int(raw) if raw is not None else int(default)

    size = value("window_s")
    return WindowSpec(
        size_s=size, hop_s=value("window_hop_s") or size, lateness_s=value("allowed_lateness_s")
    )


def expected_counts(events: Sequence[SampleEvent], spec: WindowSpec) -> Counter[int]:
    """Valid events per window start, from each event's own time (``created_at``)."""
    want: Counter[int] = Counter()
    for e in events:
        if e.bad_reason is None:
            when = datetime.fromisoformat(json.loads(e.value)["created_at"]).timestamp()
            for start in spec.starts(when):
                want[start] += 1
    return want


def check_counts(
    events: Sequence[SampleEvent], counts: Counter[int], spec: WindowSpec, result: RowResult
) -> None:
    """Each window's count over all territories, as the enrichment stage handed it to the counting stage
    (the counts topic, the only record of counts per window: the counting agent keeps the final ones in
    memory and its table, and publishes only bursts and gauges), is at least the valid events sent in it;
    exactly that when nothing was delivered twice (a replayed batch replays its counts too)."""
    want = expected_counts(events, spec)
    result.count_windows = len(want)
    short = {w: (counts[w], n) for w, n in want.items() if counts[w] < n}
    if short:
        result.problems.append(f"{len(short)} windows counted short (got, sent): {sorted(short.items())[:3]}")
    foreign = sorted(w for w in counts if w not in want)
    if foreign:
        result.problems.append(f"counts for windows no event was sent in: {foreign[:3]}")
    if result.duplicates == 0:
        over = {w: (counts[w], n) for w, n in want.items() if counts[w] > n}
        if over:
            result.problems.append(
                f"{len(over)} windows over-counted without a duplicate: {sorted(over.items())[:3]}"
            )


def check_bursts(bursts: Sequence[dict[str, object]], result: RowResult) -> None:
    """Burst events in order per partition (one territory's all go to one): no ``burst_id`` started twice,
    no ``updated`` or ``ended`` of a burst that never started. The same ``started`` event sent again (same
    window: a replay after a refused commit, which consumers de-duplicate on ``(burst_id, kind,
    window_start)`` as the schema says) is not a second start; a start in another window is."""
    started: dict[str, set[str]] = {}
    orphans: list[str] = []
    for b in bursts:
        burst_id, kind = str(b.get("burst_id")), b.get("kind")
        if kind == "started":
            started.setdefault(burst_id, set()).add(str(b.get("window_start")))
        elif burst_id not in started:
            orphans.append(f"{kind} {burst_id}")
    result.bursts = len(started)
    twice = [i for i, windows in started.items() if len(windows) > 1]
    if twice:
        result.problems.append(f"bursts started more than once: {twice[:3]}")
    if orphans:
        result.problems.append(f"burst events without a start: {orphans[:3]}")


async def read_counts_and_bursts(
    run: Run,
    timeout: float = 120.0,  # noqa: ASYNC109 -- a plain deadline for a polling loop
) -> tuple[Counter[int], list[dict[str, object]]]:
    """The counts topic's counts per window start (summed over territories) and every burst event, from the
    beginning of both topics to their end offsets at the call (bursts in each partition's order)."""
    counts_topic, bursts_topic = run.settings["SHUDI_COUNTS_TOPIC"], run.settings["SHUDI_BURSTS_TOPIC"]
    counts: Counter[int] = Counter()
    bursts: list[dict[str, object]] = []
    records = faults.records_to_end(run.bootstrap, (counts_topic, bursts_topic), "counts and bursts", timeout)
    try:
        async for tp, r in records:
            if r.value is None:
                continue
            if tp.topic == counts_topic:
                for delta in decode_count_message(r.value).deltas:
                    for w in delta.windows:
                        counts[w.start] += w.count
            else:
                bursts.append(json.loads(r.value))
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from exc  # a failed check of the row, as run_row reports them
    return counts, bursts
