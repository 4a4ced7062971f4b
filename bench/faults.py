"""The fault matrix: real ``shudi worker`` processes on a real local broker, one fault injected mid-stream,
then every output topic read from its beginning and the invariants checked.

    python -m bench.faults --fault broker-kill --events 30000 --repeat 20 --kafka-version 4.4.0

Each run starts its own broker (``streams.devtools.localkafka``, the version from ``--kafka-version``) on a
free port and a data directory of its own, sends ``--events`` comments (about 1 % bad, known event ids) at
``--rate``, starts the workers, injects the fault once ``--at`` of the events came out enriched, lets the
producer finish and the group go idle, then checks (:func:`verify`):

- no loss: every valid event_id in the enriched topic, every bad event in the dead-letter topic with its
  reason;
- bounded duplicates: the duplicates are reported and compared with the row's bound;
- privacy: no input address in any output topic but the dead-letter topic;
- liveness: the enrichment group's committed offsets reach the end of the input (lag 0) without a restart
  the harness did not script, ``/healthz`` is sampled all along (its answers are reported), and every worker
  exits within ``STOP_BOUND_S`` of a SIGTERM at the end.

Rows (``--fault``): ``none`` (the baseline), ``broker-kill`` (``kill -9`` of the broker and a restart on
the same data directory), ``broker-pause`` (SIGSTOP for ``--pause`` seconds, then SIGCONT), ``worker-kill``
(``kill -9`` of the worker mid-batch and a new one on the same data dir), ``rolling-restart`` (3 workers,
each stopped with SIGTERM and started again, one at a time); and in :mod:`bench.faultrows`: ``network-cut``
(the workers' network blackholed or reset for ``--cut`` seconds through :mod:`bench.faultproxy`),
``rebalance-storm`` (1 → 3 → 1 workers), ``worker-kill-rebalance`` (``kill -9`` as a rebalance
begins); in :mod:`bench.faults_input`: ``poison-pills``, ``geodb-swap`` and ``disk-full`` (hostile input,
the GeoIP file replaced, the data directory full).
:func:`bench.faultrows.check_after` adds the counts per window, the burst events (a scripted burst in every
stream must be found), ``/healthz``'s truthfulness and, for its rows, the group's assignment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import click
from aiokafka.structs import ConsumerRecord, TopicPartition

from bench.faultproxy import CUT_MODES, CutMode, FaultProxy
from streams.cli.send import produce_lines
from streams.devtools import localkafka
from streams.devtools.mmdbbuild import build_demo_db, sample_ips
from streams.devtools.sample import SampleEvent, sample_events
from streams.runtime.admin import create_topics
from streams.runtime.kafka import KafkaConnection
from streams.testing import WORKER_READY, WorkerProcess, free_port, run_settings

Fault = Literal[
    "none",
    "broker-kill",
    "broker-pause",
    "worker-kill",
    "rolling-restart",
    "network-cut",
    "rebalance-storm",
    "worker-kill-rebalance",
    # Issue 14, hostile input and the worker's files (bench.faults_input):
    "poison-pills",
    "geodb-swap",
    "disk-full",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)

PARTITIONS = 4
# Longest a worker may take to exit after SIGTERM, whatever state the broker is in.
STOP_BOUND_S = 60.0


@dataclass
class RowOptions:
    fault: Fault
    events: int = 30_000
    rate: float = 3000.0
    at: float = 0.33  # inject once this share of the events came out
    pause_s: float = 60.0
    down_s: float = 2.0  # broker-kill: how long the broker stays down
    seed: int = 1
    stall_timeout_s: float = 30.0
    idle_timeout_s: float = 300.0  # most the group may take to reach lag 0 after the producer finished
    batch_size: int = 2000  # the worker's defaults
    flush_events: int = 20_000
    cut_s: float = 30.0  # network-cut: how long the workers' network is down
    cut_mode: CutMode = "blackhole"  # network-cut: bytes stop silently, or every connection reset

    @property
    def in_flight_bound(self) -> int:
        """What a worker killed (-9) may have produced without committing it: the events waiting for the
        next flush and one batch."""
        return self.flush_events + self.batch_size


@dataclass
class RowResult:
    fault: str
    kafka_version: str
    events_in: int
    valid: int
    bad: int
    enriched_out: int = 0
    dlq_out: int = 0
    duplicates: int = 0
    duplicate_bound: int = 0
    input_duplicates: int = 0  # records the harness's producer sent twice (its retries across the fault)
    lost: int = 0
    dlq_wrong: int = 0
    leaked_ips: int = 0
    lag_end: int | None = None
    recover_s: float | None = None  # from the fault's end to the first record enriched after it
    idle_s: float | None = None  # from the producer's end to lag 0
    stop_s: list[float] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    healthz: dict[str, int] = field(default_factory=dict)
    stall_s: float | None = None  # longest time input waited and nothing came out (bench.faultrows)
    count_windows: int = 0  # windows whose counts were checked against the events sent in them
    bursts: int = 0  # bursts started
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # a row's own figures (e.g. dead letters by reason)

    @property
    def ok(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- reading and checking


def _ids_of(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        body = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: hostile input nested deeper than the stack
        return None
    event_id = body.get("event_id") if isinstance(body, dict) else None
    return event_id if isinstance(event_id, str) else None


def _dead_letter(value: bytes | None) -> tuple[bytes | None, str] | None:
    if value is None:
        return None
    body = json.loads(value)
    original = body.get("original_b64")
    return (None if original is None else base64.b64decode(original)), str(body.get("reason"))


def _dead_source(value: bytes) -> tuple[int, int] | None:
    source = json.loads(value).get("source")
    return (int(source["partition"]), int(source["offset"])) if isinstance(source, dict) else None


@dataclass
class Outputs:
    enriched: Counter[str]
    dead: Counter[tuple[bytes | None, str]]
    other_values: list[bytes]  # every output record but the dead letters, for the privacy check
    input_ids: Counter[str]  # the input topic's event ids: a producer retry across a fault may repeat one
    # The reasons of the dead letters of each input (partition, offset), from their ``source``.
    dead_at: dict[tuple[int, int], list[str]] = field(default_factory=dict)


def verify(events: Sequence[SampleEvent], out: Outputs, result: RowResult) -> None:
    """The invariants of one run, written into ``result`` (``problems`` names every one that failed)."""
    valid = Counter(e.event_id for e in events if e.bad_reason is None and e.event_id is not None)
    bad: Counter[tuple[bytes | None, str]] = Counter(
        (e.value, e.bad_reason) for e in events if e.bad_reason is not None
    )
    result.enriched_out = out.enriched.total()
    result.dlq_out = out.dead.total()
    missing = [i for i in valid if i not in out.enriched]
    result.lost = len(missing)
    if missing:
        result.problems.append(f"{len(missing)} valid events never enriched, e.g. {missing[:3]}")
    foreign = [i for i in out.enriched if i not in valid]
    if foreign:
        result.problems.append(f"{len(foreign)} enriched ids that were not sent valid, e.g. {foreign[:3]}")
    dead_missing = [k for k in bad if k not in out.dead]
    result.dlq_wrong = len(dead_missing) + sum(1 for k in out.dead if k not in bad)
    if result.dlq_wrong:
        result.problems.append(f"{result.dlq_wrong} bad events missing from the DLQ or with a wrong reason")
    # Bad events may repeat (two unparseable values can be the same bytes): only more than was sent counts.
    result.duplicates = sum(n - 1 for n in out.enriched.values() if n > 1) + sum(
        max(0, n - bad[k]) for k, n in out.dead.items()
    )
    result.input_duplicates = sum(n - 1 for n in out.input_ids.values() if n > 1)
    if result.duplicates - result.input_duplicates > result.duplicate_bound:
        result.problems.append(
            f"{result.duplicates} duplicates, more than the bound {result.duplicate_bound}"
        )
    ips = {e.ip.encode() for e in events if e.ip}
    leaked = {ip for value in out.other_values for ip in ips if ip in value}
    result.leaked_ips = len(leaked)
    if leaked:
        result.problems.append(f"{len(leaked)} input addresses in the output topics")


async def records_to_end(
    bootstrap: str,
    topics: Sequence[str],
    what: str,
    timeout: float = 120.0,  # noqa: ASYNC109 -- a plain deadline for a polling loop
) -> AsyncIterator[tuple[TopicPartition, ConsumerRecord[bytes, bytes]]]:
    """Every record of ``topics``, from their beginning up to their end offsets at the call, each with its
    partition (in each partition's order); TimeoutError naming ``what`` if the end is not reached in time.
    Yielded one by one: a poison-pills run's input holds hundreds of MB."""
    consumer = KafkaConnection.plaintext(bootstrap).consumer(group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        parts = [TopicPartition(t, p) for t in topics for p in (cluster.partitions_for_topic(t) or set())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        left = {tp for tp in parts if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(*left, timeout_ms=500, max_records=10_000)).items():
                for r in records:
                    if r.offset < ends[tp]:
                        yield tp, r
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        if left:
            raise TimeoutError(f"{what} not read to their end after {timeout:.0f}s: {sorted(left)}")
    finally:
        await consumer.stop()


async def read_outputs(bootstrap: str, settings: dict[str, str], timeout: float = 120.0) -> Outputs:  # noqa: ASYNC109
    """Every record of the output topics, from the beginning up to their end offsets at the call."""
    topics = [
        settings["SHUDI_INPUT_TOPIC"],
        settings["SHUDI_ENRICHED_TOPIC"],
        settings["SHUDI_DLQ_TOPIC"],
        settings["SHUDI_COUNTS_TOPIC"],
        settings["SHUDI_BURSTS_TOPIC"],
    ]
    out = Outputs(Counter(), Counter(), [], Counter())
    async for tp, r in records_to_end(bootstrap, topics, "output partitions", timeout):
        if tp.topic == settings["SHUDI_INPUT_TOPIC"]:
            if (event_id := _ids_of(r.value)) is not None:
                out.input_ids[event_id] += 1
            continue
        if tp.topic == settings["SHUDI_ENRICHED_TOPIC"]:
            if (event_id := _ids_of(r.value)) is not None:
                out.enriched[event_id] += 1
        elif tp.topic == settings["SHUDI_DLQ_TOPIC"]:
            if (dead := _dead_letter(r.value)) is not None:
                out.dead[dead] += 1
                if (at := _dead_source(r.value)) is not None:
                    out.dead_at.setdefault(at, []).append(dead[1])
            continue
        if r.value is not None:
            out.other_values.append(r.value)
    return out


async def enrich_lag(bootstrap: str, settings: dict[str, str]) -> int | None:
    """Input records not yet committed by the enrichment group (None if it has committed nothing)."""
    group = f"{settings['SHUDI_APP_ID']}-enrich"
    kafka = KafkaConnection.plaintext(bootstrap)
    admin = kafka.admin(request_timeout_ms=10_000)
    consumer = kafka.consumer(group_id=None, request_timeout_ms=10_000)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        parts = [TopicPartition(settings["SHUDI_INPUT_TOPIC"], p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
        await admin.close()
    if not committed:
        return None
    lag: int = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in parts)
    return lag


async def count_enriched(bootstrap: str, topic: str) -> int:
    consumer = KafkaConnection.plaintext(bootstrap).consumer(group_id=None, request_timeout_ms=10_000)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    return sum(ends.values())


# --------------------------------------------------------------------------- /healthz sampling


def healthz(port: int) -> str:
    """``200``, ``503 <reason>`` or ``down``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return f"{exc.code} {exc.read().decode().strip().split(' ')[0]}"
    except OSError:
        return "down"


@contextlib.contextmanager
def sampling_healthz(workers: Sequence[WorkerProcess], seen: Counter[str]) -> Iterator[None]:
    """Samples every running worker's /healthz twice a second into ``seen`` while the block runs."""
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            for w in workers:
                if w.running():
                    seen[healthz(w.metrics_port)] += 1

    thread = threading.Thread(target=sample, name="healthz-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# --------------------------------------------------------------------------- one row


class Run:
    """One row's broker, workers and clock."""

    def __init__(self, workdir: Path, options: RowOptions, kafka_version: str) -> None:
        self.workdir = workdir
        self.options = options
        self.kafka_version = kafka_version
        self.broker: localkafka.Broker | None = None
        self.port = free_port()
        self.data_dir = workdir / "kafka"
        self.db = build_demo_db(workdir / "demo.mmdb")
        run = f"faults-{options.fault}-{os.getpid()}-{int(time.time())}"
        self.settings = run_settings(
            f"127.0.0.1:{self.port}",
            run,
            partitions=PARTITIONS,
            SHUDI_GEOIP_DB=str(self.db),
            SHUDI_BATCH_SIZE=str(options.batch_size),
            SHUDI_FLUSH_EVENTS=str(options.flush_events),
            SHUDI_STALL_TIMEOUT_S=str(options.stall_timeout_s),
            SHUDI_LOG_LEVEL="info",
        )
        from bench.faultrows import burst_settings

        self.settings.update(burst_settings(options.events))
        self.workers: list[WorkerProcess] = []
        # network-cut: the workers reach the broker through a proxy (a listener of its own, advertised as the
        # proxy's port); the harness's producer, lag and output reads use the direct one and see no cut.
        self.proxy: FaultProxy | None = None
        if options.fault == "network-cut":
            self.proxied_port = free_port()
            self.proxy = FaultProxy(upstream=self.proxied_port).start()
            self.settings["SHUDI_BROKER"] = f"127.0.0.1:{self.proxy.port}"
        # A row's own checks of the outputs, run before verify() (they may take their records out of it).
        self.checks: list[Callable[[Outputs, RowResult], None]] = []
        # Valid comments a row's checks found enriched besides the row's events (the hostile records that
        # are valid comments): counted in their windows like the events.
        self.counted_extra: list[SampleEvent] = []
        # Whether the scripted burst must be detected: not where the row relabels addresses mid-stream
        # (geodb-swap: the swap itself moves whole territories' traffic, which the detector rightly calls
        # bursts, and the scripted one may land inside one of them under another name).
        self.expect_scripted_burst = True
        # Undone at the end of the run whatever happened (e.g. a file system a row mounted).
        self.cleanups: list[Callable[[], object]] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_broker(self) -> None:
        with _version(self.kafka_version):
            proxied = None if self.proxy is None else (self.proxied_port, self.proxy.port)
            self.broker = localkafka.start(port=self.port, data_dir=self.data_dir, proxied=proxied)

    def kill_broker(self) -> None:
        assert self.broker is not None
        assert self.broker.proc is not None
        os.killpg(self.broker.pid, signal.SIGKILL)
        self.broker.proc.wait()

    def stop_broker(self) -> None:
        if self.broker is not None:
            with _version(self.kafka_version):
                localkafka.stop(self.broker)
            self.broker = None
        if self.proxy is not None:
            self.proxy.stop()

    def worker(self, name: str, data: str | None = None) -> WorkerProcess:
        settings = dict(self.settings)
        settings["SHUDI_DATA_DIR"] = str(self.workdir / f"{data or name}-data")
        w = WorkerProcess.configure(self.workdir, name, settings, new_session=True)
        self.workers.append(w)
        return w


@contextlib.contextmanager
def _version(version: str) -> Iterator[None]:
    before = os.environ.get("KAFKA_LOCAL_VERSION")
    os.environ["KAFKA_LOCAL_VERSION"] = version
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KAFKA_LOCAL_VERSION", None)
        else:
            os.environ["KAFKA_LOCAL_VERSION"] = before


def _say(msg: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {msg}", err=True)


async def _wait_enriched(run: Run, n: int, timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    topic = run.settings["SHUDI_ENRICHED_TOPIC"]
    while (got := await _safe_count(run.bootstrap, topic)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {got} of {n} enriched after {timeout:.0f}s")
        await asyncio.sleep(0.5)


async def _safe_count(bootstrap: str, topic: str) -> int:
    try:
        return await asyncio.wait_for(count_enriched(bootstrap, topic), 20)
    except Exception:  # noqa: BLE001 -- the broker may be down during the fault: not yet
        return -1


def run_row(options: RowOptions, kafka_version: str, workdir: Path) -> RowResult:
    """One run of one fault; the broker and the workers are gone when it returns."""
    from bench.faultrows import Timeline, check_after, watching, with_scripted_burst

    run = Run(workdir, options, kafka_version)
    ips = sample_ips(run.db, None, n=400, seed=options.seed)
    events = list(sample_events(ips, options.events, bad_fraction=0.01, seed=options.seed))
    events = with_scripted_burst(run.db, events, options.seed)
    valid = sum(1 for e in events if e.bad_reason is None)
    result = RowResult(options.fault, kafka_version, len(events), valid, len(events) - valid)
    seen: Counter[str] = Counter()
    timeline = Timeline()
    try:
        run.start_broker()
        _say(f"Kafka {kafka_version} on {run.bootstrap}; {options.fault}, {len(events)} events")
        # The local broker keeps 64 MiB per partition (localkafka: a dev broker stays small on disk): a long
        # run's hot partition outgrows it, and its first records were deleted before the verifier read them
        # (seen: 200,000 events, 27,818 "lost" from the start of partition 2). The worker leaves existing
        # topics as they are.
        kept = [run.settings[k] for k in ("SHUDI_INPUT_TOPIC", "SHUDI_ENRICHED_TOPIC", "SHUDI_DLQ_TOPIC")]
        asyncio.run(
            create_topics(
                run.bootstrap,
                dict.fromkeys(kept, PARTITIONS),
                {t: {"retention.bytes": "-1"} for t in kept},
            )
        )
        inject, bound = _fault_plan(run, options)
        result.duplicate_bound = bound
        for w in run.workers:
            w.start()
        for w in run.workers:
            w.wait_ready(180)
        with sampling_healthz(run.workers, seen), watching(run, timeline):
            asyncio.run(_scenario(run, options, events, inject, result))
            _say(f"lag 0 after {result.idle_s:.1f}s; reading the outputs")
            out = asyncio.run(read_outputs(run.bootstrap, run.settings))
        for check in run.checks:
            check(out, result)
        verify(events, out, result)
        check_after(run, [*events, *run.counted_extra], timeline, result)
        for w in run.workers:
            if w.running():
                t0 = time.monotonic()
                result.exit_codes.append(w.stop(STOP_BOUND_S))
                result.stop_s.append(round(time.monotonic() - t0, 1))
        if any(code != 0 for code in result.exit_codes):
            result.problems.append(f"exit codes after SIGTERM: {result.exit_codes}")
    except AssertionError as exc:
        result.problems.append(str(exc).splitlines()[0])
        for w in run.workers:
            _say(f"--- {w.name} log tail:\n{w.tail(40)}")
    finally:
        for w in run.workers:
            if w.running():
                t0 = time.monotonic()
                code = w.stop(STOP_BOUND_S)
                result.exit_codes.append(code)
                result.stop_s.append(round(time.monotonic() - t0, 1))
                if code != 0:
                    result.problems.append(f"{w.name} exit {code} after SIGTERM at the end")
        run.stop_broker()
        for cleanup in run.cleanups:
            cleanup()
        result.healthz = dict(seen)
    return result


Inject = Callable[[Run], None]


def _fault_plan(run: Run, options: RowOptions) -> tuple[Inject, int]:
    """The workers of the row (configured, not started), the injection and the duplicate bound."""
    fault = options.fault
    if fault == "rolling-restart":
        for i in range(3):
            run.worker(f"worker-{i + 1}")

        def rolling(r: Run) -> None:
            for w in list(r.workers[:3]):
                starts = w.log().count(WORKER_READY)
                code = w.stop(STOP_BOUND_S)
                if code != 0:
                    raise AssertionError(f"{w.name} exit {code} on a rolling SIGTERM")
                w.start()
                w.wait_ready(180, times=starts + 1)

        # Each restart rebalances the group: a surviving worker's commit can then be refused (the partition
        # moved under it) and its batches since the last flush are delivered again to the new owner, as
        # at-least-once allows (seen once in CI: 1 duplicate). At most one flush per restart.
        return rolling, 3 * (options.flush_events + options.batch_size)
    from bench.faultrows import plan as more_faults

    if (plan := more_faults(run, options)) is not None:
        return plan
    run.worker("worker-1")
    if fault == "none":
        return (lambda r: None), 0
    if fault == "broker-kill":

        def bounce(r: Run) -> None:
            r.kill_broker()
            time.sleep(options.down_s)
            r.start_broker()

        # Batches acknowledged by the broker but whose commit was refused or lost replay once.
        return bounce, 2 * options.in_flight_bound
    if fault == "broker-pause":

        def pause(r: Run) -> None:
            assert r.broker is not None
            os.killpg(r.broker.pid, signal.SIGSTOP)
            time.sleep(options.pause_s)
            os.killpg(r.broker.pid, signal.SIGCONT)

        return pause, 2 * options.in_flight_bound
    if fault == "worker-kill":

        def kill(r: Run) -> None:
            old = r.workers[0]
            old.kill()
            new = r.worker("worker-2", data="worker-1")
            new.start()
            new.wait_ready(240)

        return kill, options.in_flight_bound
    if fault in ("poison-pills", "geodb-swap", "disk-full"):
        from bench import faults_input

        return faults_input.plan(run, options)
    raise click.BadParameter(f"unknown fault {fault}")


async def produce_through_faults(bootstrap: str, topic: str, values: Sequence[bytes], rate: float) -> int:
    """Send ``values`` in chunks of a second's worth (``produce_lines``), resending a chunk whose sending
    failed (the broker away longer than the producer's timeout) until it goes through: what a client with
    retries would do. A resent chunk may repeat records: the verifier counts them as input duplicates."""
    chunk = max(500, int(rate) if rate > 0 else 10_000)
    started = time.monotonic()
    sent = 0
    for i in range(0, len(values), chunk):
        part = values[i : i + chunk]
        while True:
            try:
                await produce_lines(bootstrap, topic, part, rate=rate)
                break
            except Exception as exc:  # noqa: BLE001 -- the fault under test; try again
                _say(f"producer: {type(exc).__name__}; resending {len(part)} events")
                await asyncio.sleep(1)
        sent += len(part)
        if rate > 0:
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
    return sent


async def _scenario(
    run: Run, options: RowOptions, events: Sequence[SampleEvent], inject: Inject, result: RowResult
) -> None:
    producer = asyncio.create_task(
        produce_through_faults(
            run.bootstrap, run.settings["SHUDI_INPUT_TOPIC"], [e.value for e in events], options.rate
        )
    )
    topic = run.settings["SHUDI_ENRICHED_TOPIC"]
    await _wait_enriched(run, int(options.at * options.events * 0.99), 300, "before the fault")
    _say(f"injecting {options.fault}")
    await asyncio.to_thread(inject, run)
    t_end = time.monotonic()
    at_end = await _safe_count(run.bootstrap, topic)
    _say(f"fault over ({at_end} enriched); waiting for progress")
    deadline = time.monotonic() + options.idle_timeout_s
    while time.monotonic() < deadline:
        now = await _safe_count(run.bootstrap, topic)
        if now > max(at_end, 0):
            result.recover_s = round(time.monotonic() - t_end, 1)
            break
        if producer.done() and now >= 0 and (await _lag_or_none(run)) == 0:
            result.recover_s = round(time.monotonic() - t_end, 1)
            break
        await asyncio.sleep(0.5)
    if result.recover_s is None:
        raise AssertionError(f"no progress {options.idle_timeout_s:.0f}s after the fault ({at_end} enriched)")
    _say(f"progress {result.recover_s}s after the fault")
    try:
        await producer
    except Exception as exc:
        raise AssertionError(f"producer failed: {exc!r}") from exc
    t_produced = time.monotonic()
    deadline = t_produced + options.idle_timeout_s
    while (lag := await _lag_or_none(run)) != 0:
        dead = [w.name for w in run.workers if w.proc is not None and not w.running()]
        if time.monotonic() > deadline or (dead and len(dead) == len(run.workers)):
            result.lag_end = lag
            raise AssertionError(
                f"lag {lag} {time.monotonic() - t_produced:.0f}s after the last event; exited: {dead}"
            )
        await asyncio.sleep(1)
    result.lag_end = 0
    result.idle_s = round(time.monotonic() - t_produced, 1)


async def _lag_or_none(run: Run) -> int | None:
    try:
        return await asyncio.wait_for(enrich_lag(run.bootstrap, run.settings), 30)
    except Exception:  # noqa: BLE001 -- the broker may be restarting
        return None


# --------------------------------------------------------------------------- command


def _row_line(r: RowResult) -> str:
    return (
        f"{r.fault:16} kafka {r.kafka_version:6} in {r.events_in} (valid {r.valid}, bad {r.bad}) "
        f"enriched {r.enriched_out} dlq {r.dlq_out} dup {r.duplicates} (input {r.input_duplicates}, "
        f"bound {r.duplicate_bound}) lost {r.lost} "
        f"leaks {r.leaked_ips} recover {r.recover_s}s stall {r.stall_s}s idle {r.idle_s}s "
        f"windows {r.count_windows} bursts {r.bursts} stop {r.stop_s} exits {r.exit_codes} "
        f"healthz {r.healthz} {json.dumps(r.notes, ensure_ascii=False) + ' ' if r.notes else ''}"
        f"-> {'OK' if r.ok else 'FAIL: ' + '; '.join(r.problems)}"
    )


INVARIANT = {
    "none": "baseline: nothing lost, no duplicates",
    "broker-kill": "nothing lost; duplicates ≤ 2 flushes; resumes without a restart",
    "broker-pause": "nothing lost; duplicates ≤ 2 flushes; resumes without a restart",
    "worker-kill": "nothing lost; duplicates ≤ 1 flush (flush_events + batch_size)",
    "rolling-restart": "nothing lost; duplicates ≤ one flush per restart; every exit 0",
    "network-cut": "nothing lost; duplicates ≤ 2 flushes; resumes without a restart; /healthz fails if stuck",
    "rebalance-storm": "nothing lost; duplicates ≤ one flush per membership change; one owner per partition",
    "worker-kill-rebalance": "nothing lost; duplicates ≤ 2 flushes; one owner per partition",
    "poison-pills": "each hostile message enriched or dead-lettered with a right reason; no crash; lag 0",
    "geodb-swap": "labels follow the valid file; corrupt/removed file keeps the old table; nothing lost",
    "disk-full": "clean exit 70 with one line; restarted on the freed dir: nothing lost",
}


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The README's table from ``--json-out`` rows."""
    lines = [
        "| fault | Kafka | invariant | events in (bad) | enriched / dead-lettered | duplicates (input) "
        "| lost | recovered after | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fault']} | {r['kafka_version']} | {INVARIANT.get(r['fault'], '')} "
            f"| {r['events_in']:,} ({r['bad']}) | {r['enriched_out']:,} / {r['dlq_out']} "
            f"| {r['duplicates']:,} ({r.get('input_duplicates', 0):,}) | {r['lost']} "
            f"| {r['recover_s']} s | {'yes' if r['ok'] else 'NO: ' + '; '.join(r['problems'])} |"
        )
    return "\n".join(lines)


@click.command()
@click.option("--fault", "faults", type=click.Choice(FAULTS), multiple=True, default=["broker-kill"])
@click.option("--kafka-version", "versions", multiple=True, default=[localkafka.KAFKA_VERSION])
@click.option("--events", type=int, default=30_000, show_default=True)
@click.option("--rate", type=float, default=3000.0, show_default=True, help="Events per second sent.")
@click.option("--at", type=float, default=0.33, show_default=True, help="Share enriched before the fault.")
@click.option(
    "--pause", "pause_s", type=float, default=60.0, show_default=True, help="broker-pause: seconds."
)
@click.option("--batch-size", type=int, default=2000, show_default=True)
@click.option("--flush-events", type=int, default=20_000, show_default=True)
@click.option(
    "--down", "down_s", type=float, default=2.0, show_default=True, help="broker-kill: seconds down."
)
@click.option("--cut", "cut_s", type=float, default=30.0, show_default=True, help="network-cut: seconds cut.")
@click.option(
    "--cut-mode",
    type=click.Choice(CUT_MODES),
    default="blackhole",
    show_default=True,
    help="network-cut: bytes stop silently (blackhole) or every connection is reset.",
)
@click.option("--repeat", type=int, default=1, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Append each row as JSON.")
@click.option("--keep", is_flag=True, help="Keep each run's directory (logs, broker data).")
@click.option(
    "--summarize",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Only print the markdown table of a --json-out file.",
)
def main(
    faults: tuple[Fault, ...],
    versions: tuple[str, ...],
    events: int,
    rate: float,
    at: float,
    pause_s: float,
    down_s: float,
    cut_s: float,
    cut_mode: CutMode,
    batch_size: int,
    flush_events: int,
    repeat: int,
    json_out: Path | None,
    keep: bool,
    summarize: Path | None,
) -> None:
    """Run each fault row REPEAT times on each Kafka version; exit 1 if any invariant failed."""
    if summarize is not None:
        click.echo(markdown_table([json.loads(line) for line in summarize.read_text().splitlines() if line]))
        return
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C, so that the broker and the workers are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # The harness's own clients see the broker go away on purpose: their reconnect errors are noise here.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    failed = 0
    for version in versions:
        for fault in faults:
            for i in range(repeat):
                workdir = Path(tempfile.mkdtemp(prefix=f"shudi-faults-{fault}-"))
                options = RowOptions(
                    fault,
                    events=events,
                    rate=rate,
                    at=at,
                    pause_s=pause_s,
                    down_s=down_s,
                    cut_s=cut_s,
                    cut_mode=cut_mode,
                    seed=i + 1,
                    batch_size=batch_size,
                    flush_events=flush_events,
                )
                result = run_row(options, version, workdir)
                failed += not result.ok
                click.echo(f"{i + 1}/{repeat} " + _row_line(result))
                if json_out is not None:
                    with json_out.open("a") as fh:
                        fh.write(
                            json.dumps({**asdict(result), "ok": result.ok, "workdir": str(workdir)}) + "\n"
                        )
                if result.ok and not keep:
                    import shutil

                    shutil.rmtree(workdir, ignore_errors=True)
                else:
                    click.echo(f"   kept {workdir}", err=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
