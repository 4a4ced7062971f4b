"""streams.runtime.enrichment: the batch loop, driven with fake records and a fake consumer and producer.

The fakes implement what :class:`EnrichmentService` calls on its aiokafka clients, nothing more: the
consumer's ``getmany``, ``commit``, ``highwater``, ``committed`` and ``beginning_offsets``; the producer's
``send`` and, through ``batch_send``, ``create_batch`` / ``send_batch``. The producer hands out delivery
futures that the test acknowledges, holds or fails. Every commit is checked when it happens: all that was
produced so far is acknowledged, and each input record below a committed offset has its output (an
enriched record or a dead letter) acknowledged. The loop runs as the worker runs it (the ``_consume``
task, the rebalance listener, ``on_stop``), only without ``on_start``, which would build real clients.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError, TopicAuthorizationFailedError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from streams.pipeline.enrich import Enricher, InRecord
from streams.pipeline.events import decode_count_message
from streams.pipeline.geodb.labeller import Labeller
from streams.pipeline.territory import Label
from streams.runtime.counting import window_spec
from streams.runtime.enrichment import EnrichmentService, MissingTopicError, _Rebalance
from streams.runtime.health import Health
from streams.runtime.metrics import Metrics
from streams.settings import Settings

INPUT = "comments"
TP0, TP1 = TopicPartition(INPUT, 0), TopicPartition(INPUT, 1)
GOOD_IPS = {"1.0.1.7": "CN-GD", "36.0.1.7": "HK", "1.0.8.7": "CN-BJ"}  # tests/geoip_fixtures.py CASES
FAILING_IP = "1.0.1.99"  # the labeller raises for it: an internal error, not the event's fault
MAX_BYTES = 4096


# --- records -------------------------------------------------------------------------------------------


def comment(event_id: str, ip: str, **extra: Any) -> bytes:
    event = {
        "event_id": event_id,
        "user_id": "u-1",
        "post_id": f"post-{event_id}",
        "text": "评论",
        "ip": ip,
        "created_at": "2026-11-25T18:04:05.123+08:00",
        **extra,
    }
    return json.dumps(event, ensure_ascii=False).encode()


def good_records(tp: TopicPartition, offsets: Iterable[int]) -> list[InRecord]:
    ips = list(GOOD_IPS)
    return [
        InRecord(tp.topic, tp.partition, o, None, comment(f"e-{tp.partition}-{o}", ips[o % len(ips)]))
        for o in offsets
    ]


# Bad values and the dead-letter reason each must get.
BAD: list[tuple[bytes | None, str]] = [
    (None, "empty"),
    (b"", "empty"),
    (b"x" * (MAX_BYTES + 1), "too_large"),
    (b'{"event_id": "e", "text": "\xff"}', "invalid_encoding"),
    (b'{"event_id": "e",', "invalid_json"),
    (json.dumps({"event_id": "e", "ip": "1.0.1.7"}).encode(), "schema"),
    (comment("bad-ip", "127.1"), "invalid_ip"),
    (comment("boom", FAILING_IP), "internal_error"),
]


# --- the fakes -----------------------------------------------------------------------------------------


@dataclass
class Produced:
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes
    delivery: asyncio.Future[None]

    @property
    def acked(self) -> bool:
        d = self.delivery
        return d.done() and not d.cancelled() and d.exception() is None


class FakeBatch:
    """aiokafka's BatchBuilder as batch_send uses it."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []
        self.closed = False

    def append(self, *, key: bytes | None, value: bytes, timestamp: int | None) -> object | None:
        if self.closed:
            return None
        self.records.append((key, value))
        return object()  # aiokafka returns the record's metadata; None means "full"

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Delivery futures are acknowledged at once, held until :meth:`release`, or failed with ``fail``."""

    def __init__(self) -> None:
        self.produced: list[Produced] = []
        self.hold = False
        self.fail: BaseException | None = None
        self.in_flight = asyncio.Event()  # set when a record is sent and not acknowledged

    def _deliver(
        self, topic: str, records: list[tuple[int | None, bytes | None, bytes]]
    ) -> asyncio.Future[None]:
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            delivery.set_exception(self.fail)
        elif self.hold:
            self.in_flight.set()
        else:
            delivery.set_result(None)
        self.produced += [Produced(topic, p, k, v, delivery) for p, k, v in records]
        return delivery

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        return self._deliver(topic, [(partition, key, value)])

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[None]:
        assert batch.closed, "a batch is closed before it is queued"
        return self._deliver(topic, [(partition, k, v) for k, v in batch.records])

    def ack_pending(self) -> None:
        """Acknowledge what was sent so far; later sends are still held if ``hold`` is."""
        self.in_flight.clear()
        for p in self.produced:
            if not p.delivery.done():
                p.delivery.set_result(None)

    def release(self) -> None:
        self.hold = False
        self.ack_pending()

    async def stop(self) -> None:
        pass

    def to(self, topic: str) -> list[Produced]:
        return [p for p in self.produced if p.topic == topic]


Step = Mapping[TopicPartition, list[InRecord]] | Callable[[], None]


class FakeConsumer:
    """Hands out the scripted batches; a callable step runs between two polls. When the script is done it
    asks the service to stop, as SIGTERM would, and the loop ends."""

    def __init__(self, service: EnrichmentService, producer: FakeProducer, script: Iterable[Step]) -> None:
        self.service = service
        self.producer = producer
        self.script: deque[Step] = deque(script)
        self.handed_out: dict[TopicPartition, list[InRecord]] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.refuse_commits = False
        self.violations: list[str] = []  # kept as well as raised: on_stop swallows a failed final flush
        self.highwaters: dict[TopicPartition, int] = {}

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[InRecord]]:
        await asyncio.sleep(0)
        while self.script:
            step = self.script.popleft()
            if callable(step):
                step()
                continue
            for tp, records in step.items():
                self.handed_out.setdefault(tp, []).extend(records)
            return dict(step)
        self.service.request_stop()
        return {}

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not all(p.acked for p in self.producer.produced):
            self.violations.append(f"commit of {dict(offsets)} before every record was acknowledged")
        done = acknowledged_inputs(self.producer)
        for tp, offset in offsets.items():
            below = [r for r in self.handed_out.get(tp, []) if r.offset < offset]
            missing = [r.offset for r in below if (tp.partition, r.offset) not in done]
            if missing:
                self.violations.append(f"commit of {tp} at {offset} passes unsent output of {missing}")
        assert not self.violations, self.violations
        if self.refuse_commits:
            raise CommitFailedError("the group rebalanced")
        self.commits.append(dict(offsets))

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def committed(self, tp: TopicPartition) -> int | None:
        return None

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    def subscribe(self, topics: list[str], *, listener: object) -> None:
        self.subscribed = topics

    async def stop(self) -> None:
        pass


def acknowledged_inputs(producer: FakeProducer) -> set[tuple[int, int]]:
    """(partition, offset) of the input records whose output is acknowledged."""
    done: set[tuple[int, int]] = set()
    for p in producer.produced:
        if not p.acked:
            continue
        if p.topic == "comments.enriched":
            _, partition, offset = json.loads(p.value)["event_id"].split("-")
            done.add((int(partition), int(offset)))
        elif p.topic == "comments.dlq":
            source = json.loads(p.value)["source"]
            done.add((source["partition"], source["offset"]))
    return done


# --- the service under test ----------------------------------------------------------------------------


@dataclass
class Rig:
    service: EnrichmentService
    consumer: FakeConsumer
    producer: FakeProducer
    metrics: Metrics
    health: Health

    async def run(self) -> None:
        """The worker's life without on_start: the consuming task, then a graceful stop."""
        await EnrichmentService._consume(self.service)
        await self.service.on_stop()

    def counted(self) -> Counter[str]:
        """Comments per territory code in the counts the loop sent."""
        counts: Counter[str] = Counter()
        for p in self.producer.to("territory.counts"):
            for delta in decode_count_message(p.value).deltas:
                counts[delta.territory.code] += sum(w.count for w in delta.windows)
        return counts

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture(autouse=True)
def signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The signals the worker sends itself (Health.stop_worker: a SIGTERM when fatal), recorded instead."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    return sent


@pytest.fixture
def labeller(fixture_db_path: Path) -> Labeller:
    labeller = Labeller.open(fixture_db_path, 1024)
    label = labeller.label

    def label_or_fail(ip: str) -> Label:
        if ip == FAILING_IP:
            raise RuntimeError("a bug in the labeller")
        return label(ip)

    labeller.label = functools.lru_cache(maxsize=1024)(label_or_fail)
    labeller.current = (labeller.label, labeller.build)  # what the enricher reads
    return labeller


@pytest.fixture
def make_rig(labeller: Labeller, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Builds rigs; after the test, every commit any of them saw must have kept the at-least-once rule."""
    rigs: list[Rig] = []

    def make(script: Iterable[Step] = (), *, copartitioned: bool = True, **settings: Any) -> Rig:
        config = Settings(geoip_db=tmp_path / "unused.mmdb", data_dir=tmp_path, partitions=2, **settings)
        enricher = Enricher(labeller, max_message_bytes=MAX_BYTES, windows=window_spec(config))
        metrics = Metrics(CollectorRegistry())
        health = Health(stall_timeout_s=60)
        service = EnrichmentService(config, enricher, metrics, health)
        producer = FakeProducer()
        consumer = FakeConsumer(service, producer, script)
        service.producer, service.consumer = producer, consumer  # what on_start would build
        service._copartitioned = copartitioned
        health.mark_started()
        rigs.append(Rig(service, consumer, producer, metrics, health))
        return rigs[-1]

    yield make
    assert [v for rig in rigs for v in rig.consumer.violations] == []


# --- a batch with bad events ---------------------------------------------------------------------------


@pytest.mark.parametrize("copartitioned", [True, False], ids=["record-batches", "send-per-record"])
def test_bad_events_become_dead_letters_and_no_valid_event_is_lost(
    make_rig: Callable[..., Rig], copartitioned: bool
) -> None:
    bad_at = (1, 4, 5, 9, 13, 14, 17, 19)  # offsets of the bad events among partition 0's twenty
    good0 = good_records(TP0, (o for o in range(20) if o not in bad_at))
    good1 = good_records(TP1, range(9))
    bad = [InRecord(INPUT, 0, o, b"k-%d" % o, value) for o, (value, _) in zip(bad_at, BAD, strict=True)]
    mixed0 = sorted(good0 + bad, key=lambda r: r.offset)

    async def scenario() -> Rig:
        rig = make_rig([{TP0: mixed0, TP1: good1}], copartitioned=copartitioned)
        await rig.run()
        return rig

    rig = asyncio.run(scenario())
    enriched, dead = rig.producer.to("comments.enriched"), rig.producer.to("comments.dlq")
    # Every valid event once, on its input's partition (when co-partitioned), keyed by its post.
    ids = [json.loads(p.value)["event_id"] for p in enriched]
    assert sorted(ids) == sorted(f"e-{r.partition}-{r.offset}" for r in good0 + good1)
    for p in enriched:
        event = json.loads(p.value)
        assert "ip" not in event
        assert p.key == event["post_id"].encode()
        assert p.partition == (int(event["event_id"].split("-")[1]) if copartitioned else None)
    # Every bad one once, with its reason, its source and its original key.
    letters = {json.loads(p.value)["source"]["offset"]: (json.loads(p.value), p.key) for p in dead}
    assert sorted(letters) == [r.offset for r in bad]
    for record, (_, reason) in zip(bad, BAD, strict=True):
        letter, key = letters[record.offset]
        assert letter["reason"] == reason
        assert letter["source"]["partition"] == 0
        assert key == record.key
    # Counted once per valid event; committed past everything, after it was all acknowledged.
    assert rig.counted() == Counter(GOOD_IPS[ip] for ip in _ips(good0 + good1))
    assert rig.consumer.commits == [{TP0: 20, TP1: 9}]
    assert rig.value("shudi_events_total", outcome="enriched") == len(good0) + len(good1)
    assert rig.value("shudi_events_total", outcome="dead_lettered") == len(BAD)
    for reason, n in Counter(reason for _, reason in BAD).items():
        assert rig.value("shudi_dead_letters_total", reason=reason) == n
    assert rig.health.liveness() == (True, "ok")


def _ips(records: Iterable[InRecord]) -> list[str]:
    return [json.loads(r.value or b"")["ip"] for r in records]


# --- a rebalance mid-batch -----------------------------------------------------------------------------


def test_a_rebalance_waits_for_the_batch_in_flight_then_commits_it(make_rig: Callable[..., Rig]) -> None:
    """Partitions are revoked while a batch's records are sent but not acknowledged: the revocation waits
    for the batch, then flushes its counts and, once they are acknowledged too, commits its offsets before
    the partitions go."""
    first = {TP0: good_records(TP0, range(5)), TP1: good_records(TP1, range(3))}

    async def scenario() -> None:
        rig = make_rig([first])
        rig.producer.hold = True
        loop_task = asyncio.create_task(EnrichmentService._consume(rig.service))
        await asyncio.wait_for(rig.producer.in_flight.wait(), 5)
        revoke = asyncio.create_task(
            _Rebalance(rig.service, rig.service.consumer).on_partitions_revoked([TP0, TP1])
        )
        for _ in range(20):
            await asyncio.sleep(0)
        assert not revoke.done(), "a revocation must wait for the batch in flight"
        assert rig.consumer.commits == []
        rig.producer.ack_pending()  # the batch is acknowledged; the counts its flush sends are held
        await asyncio.wait_for(rig.producer.in_flight.wait(), 5)
        assert [p.topic for p in rig.producer.produced if not p.acked] == ["territory.counts"] * 2
        assert rig.consumer.commits == [], "offsets wait for the counts of their events too"
        rig.producer.release()
        await asyncio.wait_for(revoke, 5)
        assert rig.consumer.commits == [{TP0: 5, TP1: 3}]
        assert rig.counted().total() == 8, "the batch's counts are flushed before its offsets are committed"
        assert rig.service._marks == {}, "the revoked partitions' event time is another worker's now"
        await asyncio.wait_for(loop_task, 5)
        await rig.service.on_stop()
        assert rig.consumer.commits == [{TP0: 5, TP1: 3}], "nothing is committed twice"
        assert rig.health.fatal is None

    asyncio.run(scenario())


def test_a_commit_refused_after_a_rebalance_leaves_the_batch_to_be_delivered_again(
    make_rig: Callable[..., Rig],
) -> None:
    """The group moved on before the commit: the batch (already produced) is not committed, the refusal is
    counted, and the loop goes on with the next batch, whose commit is checked like any other."""

    async def scenario() -> Rig:
        rig = make_rig(flush_events=1)  # flush (and commit) after every batch
        rig.consumer.refuse_commits = True
        rig.consumer.script.extend(
            [
                {TP0: good_records(TP0, range(4))},
                lambda: setattr(rig.consumer, "refuse_commits", False),
                {TP0: good_records(TP0, range(4, 6))},
            ]
        )
        await rig.run()
        return rig

    rig = asyncio.run(scenario())
    assert rig.consumer.commits == [{TP0: 6}]
    assert rig.value("shudi_commit_failures_total") == 1.0
    assert len(rig.producer.to("comments.enriched")) == 6
    assert rig.health.fatal is None


# --- a send failure --------------------------------------------------------------------------------------


def test_a_send_failure_is_fatal_and_nothing_past_it_is_committed(
    make_rig: Callable[..., Rig], signals: list[tuple[int, int]]
) -> None:
    """The broker refuses the second batch for good (a non-retriable error: here the topic's ACL): the worker
    is marked fatal (``/healthz`` fails, SIGTERM to itself, exit 70), and no commit passes the first batch,
    not even the final flush of the stop that follows."""

    async def scenario() -> Rig:
        rig = make_rig(flush_events=1)
        rig.consumer.script.extend(
            [
                {TP0: good_records(TP0, range(3)), TP1: good_records(TP1, range(2))},
                lambda: setattr(rig.producer, "fail", TopicAuthorizationFailedError()),
                {TP0: good_records(TP0, range(3, 7))},
            ]
        )
        await EnrichmentService._consume(rig.service)  # returns: the loop ended on the failure
        rig.producer.fail = None  # the broker is back by the time the worker stops
        await rig.service.on_stop()  # what the SIGTERM leads to: a final flush, which may commit
        return rig

    rig = asyncio.run(scenario())
    assert signals == [(os.getpid(), signal.SIGTERM)]
    assert rig.health.liveness() == (False, "fatal: enrichment loop: TopicAuthorizationFailedError")
    assert rig.consumer.commits == [{TP0: 3, TP1: 2}]
    assert rig.value("shudi_events_total", outcome="enriched") == 5, "the failed batch is not counted"


# --- bounded waits: a wedged client never hangs the loop, a revocation or a stop ---------------------------

WAIT_S = 0.3  # the rigs' bound on a broker wait; the tests below wait on events, not on this clock


class WedgedConsumer(FakeConsumer):
    """A commit that never answers (aiokafka after a broker restart: its coordinator never comes back),
    and a ``stop`` that never returns either, not even when cancelled once (aiokafka's does not end
    under cancellation while its coordination task is wedged)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wedged = True
        self.commit_calls = 0

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commit_calls += 1
        if self.wedged:
            await asyncio.Event().wait()
        await super().commit(offsets)

    async def stop(self) -> None:
        if self.wedged:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.Event().wait()  # the first cancellation is ignored; asyncio.run's is not


def wedged_rig(make_rig: Callable[..., Rig], script: Iterable[Step] = ()) -> tuple[Rig, WedgedConsumer]:
    rig = make_rig(flush_events=1)
    wedged = WedgedConsumer(rig.service, rig.producer, script)
    rig.consumer = rig.service.consumer = wedged
    rig.service.broker_wait_s = rig.service.stop_step_s = WAIT_S
    return rig, wedged


def test_a_commit_that_never_answers_resets_the_clients_and_the_batch_comes_again(
    make_rig: Callable[..., Rig],
) -> None:
    """The loop gives up on the commit after its bound, counts a reset, makes new clients (here: a healthy
    consumer that hands the same batch out again, as the broker would redeliver it) and commits that."""
    batch = {TP0: good_records(TP0, range(4))}

    async def scenario() -> tuple[Rig, WedgedConsumer, FakeConsumer]:
        rig, wedged = wedged_rig(make_rig, [batch])
        fresh = FakeConsumer(rig.service, rig.producer, [batch])

        async def make_clients() -> None:
            rig.service.consumer = fresh

        rig.service._make_clients = make_clients  # type: ignore[method-assign]
        rig.service._check_topics = _no_check  # type: ignore[method-assign]
        await asyncio.wait_for(EnrichmentService._consume(rig.service), 30)
        await asyncio.wait_for(rig.service.on_stop(), 30)
        return rig, wedged, fresh

    rig, wedged, fresh = asyncio.run(scenario())
    assert wedged.commit_calls == 1
    assert wedged.commits == [], "the wedged consumer committed nothing"
    assert fresh.commits == [{TP0: 4}]
    assert rig.value("shudi_enrichment_client_resets_total") == 1.0
    assert rig.health.fatal is None
    enriched = Counter(json.loads(p.value)["event_id"] for p in rig.producer.to("comments.enriched"))
    assert set(enriched.values()) == {2}, "delivered twice: once before the reset, once after"


def test_resets_in_a_row_without_a_batch_stop_the_worker(
    make_rig: Callable[..., Rig], signals: list[tuple[int, int]]
) -> None:
    async def scenario() -> Rig:
        rig, wedged = wedged_rig(make_rig, [{TP0: good_records(TP0, range(2))}])
        resets: list[int] = []

        async def make_clients() -> None:
            resets.append(1)  # the consumer stays the wedged one

        rig.service._make_clients = make_clients  # type: ignore[method-assign]
        rig.service._check_topics = _no_check  # type: ignore[method-assign]
        wedged.getmany = _wedged_getmany  # type: ignore[method-assign]
        await asyncio.wait_for(EnrichmentService._consume(rig.service), 60)
        return rig

    rig = asyncio.run(scenario())
    assert signals == [(os.getpid(), signal.SIGTERM)]
    assert rig.health.fatal is not None
    assert rig.health.fatal.startswith("enrichment loop: RuntimeError")


async def _no_check() -> None:
    pass


async def _wedged_getmany(*, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[InRecord]]:
    await asyncio.Event().wait()
    return {}


def test_a_revocation_does_not_wait_forever_for_a_wedged_batch(make_rig: Callable[..., Rig]) -> None:
    """The batch in flight waits for acknowledgements that never come. The revocation (aiokafka's group
    coordination task, which must go on to rejoin the group) returns after its bound, forgets the
    partitions and commits nothing."""

    async def scenario() -> None:
        rig, wedged = wedged_rig(make_rig, [{TP0: good_records(TP0, range(3))}])
        rig.service.broker_wait_s = 3600.0  # the batch's own wait is not the one under test
        rig.producer.hold = True
        loop_task = asyncio.create_task(EnrichmentService._consume(rig.service))
        await asyncio.wait_for(rig.producer.in_flight.wait(), 5)
        rig.service.broker_wait_s = WAIT_S
        await asyncio.wait_for(_Rebalance(rig.service, rig.service.consumer).on_partitions_revoked([TP0]), 30)
        assert wedged.commit_calls == 0
        assert rig.service._offsets == {}
        loop_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task

    asyncio.run(scenario())


def test_a_stop_ends_in_bounded_time_with_a_wedged_batch_and_consumer(make_rig: Callable[..., Rig]) -> None:
    """SIGTERM while a batch waits for acknowledgements that never come and the consumer's ``stop`` hangs:
    ``on_stop`` still returns (each step bounded), and nothing is committed."""

    async def scenario() -> WedgedConsumer:
        rig, wedged = wedged_rig(make_rig, [{TP0: good_records(TP0, range(3))}])
        rig.service.broker_wait_s = 3600.0
        rig.producer.hold = True
        loop_task = asyncio.create_task(EnrichmentService._consume(rig.service))
        await asyncio.wait_for(rig.producer.in_flight.wait(), 5)
        rig.service.request_stop()
        await asyncio.wait_for(rig.service.on_stop(), 30)
        loop_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
        return wedged

    assert asyncio.run(scenario()).commit_calls == 0


def reset_scenario(
    make_rig: Callable[..., Rig], failure: Exception, check_topics: Callable[[], Coroutine[Any, Any, None]]
) -> tuple[Rig, FakeConsumer]:
    """A batch that fails with ``failure``, new clients that deliver it again, the topic check given: runs
    the loop until the new clients' batch is committed, then stops it."""
    batch = {TP0: good_records(TP0, range(3))}

    async def scenario() -> tuple[Rig, FakeConsumer]:
        rig = make_rig(flush_events=1)
        rig.producer.fail = failure
        rig.consumer.script.append(batch)
        producer = FakeProducer()  # the new clients, once the broker is back
        fresh = FakeConsumer(rig.service, producer, [batch])

        async def make_clients() -> None:
            rig.service.consumer, rig.service.producer = fresh, producer

        rig.service._make_clients = make_clients  # type: ignore[method-assign]
        rig.service._check_topics = check_topics  # type: ignore[method-assign]
        await asyncio.wait_for(EnrichmentService._consume(rig.service), 30)
        await asyncio.wait_for(rig.service.on_stop(), 30)
        return rig, fresh

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    "failure",
    [
        KafkaTimeoutError(),
        # The producer's sender task died (a connection reset under uvloop, aio-libs/aiokafka#1038): every
        # send of that producer fails so from then on, and only a new one works again.
        KafkaError("Unexpected error during batch delivery"),
    ],
    ids=["timeout", "dead-sender"],
)
def test_a_batch_the_broker_times_out_resets_the_clients_instead_of_stopping_the_worker(
    make_rig: Callable[..., Rig], signals: list[tuple[int, int]], failure: Exception
) -> None:
    """The broker is away longer than the producer's request timeout (a restart, a pause): the batch fails
    with KafkaTimeoutError. That is the broker's passing state, not a fault: new clients, the batch again.
    So is a producer whose sender task died under a reset connection."""
    rig, fresh = reset_scenario(make_rig, failure, _no_check)
    assert signals == []
    assert rig.health.fatal is None
    assert fresh.commits == [{TP0: 3}]
    assert rig.value("shudi_enrichment_client_resets_total") == 1.0


def test_a_reset_whose_topic_check_gets_no_metadata_yet_tries_again(
    make_rig: Callable[..., Rig], signals: list[tuple[int, int]]
) -> None:
    """Right after a long pause the broker answers without its metadata for a moment, and aiokafka's
    ``fetch_all_metadata`` raises a plain KafkaError. That stopped the worker (bench.faults broker-pause,
    60 s); it is the broker's passing state: the reset backs off and tries again."""
    checks: list[int] = []

    async def check_topics() -> None:
        checks.append(1)
        if len(checks) <= 2:  # the first reset's two checks: before closing and with the new clients
            raise KafkaError("Unable to get cluster metadata over all known brokers")

    rig, fresh = reset_scenario(make_rig, KafkaTimeoutError(), check_topics)
    assert signals == []
    assert rig.health.fatal is None
    assert fresh.commits == [{TP0: 3}]
    assert rig.value("shudi_enrichment_client_resets_total") == 2.0


def test_a_missing_output_topic_found_by_a_reset_is_fatal(
    make_rig: Callable[..., Rig], signals: list[tuple[int, int]]
) -> None:
    """The output topic deleted: the batch times out like a broker away, but the new clients find the topic
    missing from the cluster, and the worker stops (exit 70) instead of retrying."""

    async def scenario() -> Rig:
        rig = make_rig(flush_events=1)
        rig.producer.fail = KafkaTimeoutError()
        rig.consumer.script.append({TP0: good_records(TP0, range(3))})

        async def make_clients() -> None:
            pass

        async def missing() -> None:
            raise MissingTopicError("topics missing from the cluster: comments.enriched")

        rig.service._make_clients = make_clients  # type: ignore[method-assign]
        rig.service._check_topics = missing  # type: ignore[method-assign]
        await asyncio.wait_for(EnrichmentService._consume(rig.service), 30)
        return rig

    rig = asyncio.run(scenario())
    assert signals == [(os.getpid(), signal.SIGTERM)]
    assert rig.health.liveness() == (False, "fatal: enrichment loop: MissingTopicError")


def test_a_tick_flush_the_broker_fails_commits_nothing_until_the_clients_are_reset(
    make_rig: Callable[..., Rig],
) -> None:
    """The counts of a tick's flush are refused (the broker went away): those counts are gone, so no later
    flush may commit the batch they belong to. The consuming loop resets the clients first, and the batch
    comes again (and is counted) before anything is committed."""
    batch = {TP0: good_records(TP0, range(3))}

    async def scenario() -> tuple[Rig, FakeConsumer]:
        rig = make_rig(tick_interval_s=0.01)  # flush_events stays large: only ticks flush
        await rig.service._process(batch)
        rig.consumer.handed_out = dict(batch)
        rig.producer.fail = KafkaTimeoutError()
        tick = asyncio.create_task(EnrichmentService._tick(rig.service))
        while rig.service._reset_needed is None:  # noqa: ASYNC110 -- a flag the service sets, no event
            await asyncio.sleep(0.01)
        rig.producer.fail = None  # the broker is back: a later flush would succeed, and must not commit
        await rig.service.flush()
        assert rig.consumer.commits == []
        producer = FakeProducer()
        fresh = FakeConsumer(rig.service, producer, [batch])

        async def make_clients() -> None:
            rig.service.consumer, rig.service.producer = fresh, producer

        rig.service._make_clients = make_clients  # type: ignore[method-assign]
        rig.service._check_topics = _no_check  # type: ignore[method-assign]
        await asyncio.wait_for(EnrichmentService._consume(rig.service), 30)
        tick.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tick
        await asyncio.wait_for(rig.service.on_stop(), 30)
        return rig, fresh

    rig, fresh = asyncio.run(scenario())
    assert rig.consumer.commits == []
    assert fresh.commits[-1] == {TP0: 3}
    assert rig.health.fatal is None


def test_a_client_call_that_ends_cancelled_resets_the_clients_instead_of_ending_the_loop(
    make_rig: Callable[..., Rig],
) -> None:
    """After a broker restart an aiokafka call came back *cancelled* although nobody cancelled the loop: the
    consuming task ended without a word and the worker lived on without consuming. It is a wedged client:
    the loop resets the clients and goes on."""
    batch = {TP0: good_records(TP0, range(2))}

    async def cancelled_fetch(*, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[InRecord]]:
        raise asyncio.CancelledError

    async def scenario() -> tuple[Rig, FakeConsumer]:
        rig = make_rig(flush_events=1)
        rig.consumer.getmany = cancelled_fetch  # type: ignore[method-assign]
        fresh = FakeConsumer(rig.service, rig.producer, [batch])

        async def make_clients() -> None:
            rig.service.consumer = fresh

        rig.service._make_clients = make_clients  # type: ignore[method-assign]
        rig.service._check_topics = _no_check  # type: ignore[method-assign]
        await asyncio.wait_for(EnrichmentService._consume(rig.service), 30)
        return rig, fresh

    rig, fresh = asyncio.run(scenario())
    assert fresh.commits == [{TP0: 2}]
    assert rig.value("shudi_enrichment_client_resets_total") == 1.0


def test_the_rebalance_callbacks_of_a_replaced_consumer_are_ignored(make_rig: Callable[..., Rig]) -> None:
    """After a client reset the abandoned consumer's coordination task may still revoke its partitions:
    that must neither flush through (and ask the new consumer about partitions it was not assigned: seen,
    aiokafka's ``highwater`` asserts, the worker stopped) nor forget the new consumer's partitions."""

    async def scenario() -> Rig:
        rig = make_rig()
        old = _Rebalance(rig.service, rig.service.consumer)
        await rig.service._process({TP0: good_records(TP0, range(3))})
        rig.service.consumer = FakeConsumer(rig.service, rig.producer, [])  # what a reset leaves
        rig.service._committed[TP0] = 0
        await asyncio.wait_for(old.on_partitions_revoked([TP0]), 5)
        await asyncio.wait_for(old.on_partitions_assigned([TP1]), 5)
        return rig

    rig = asyncio.run(scenario())
    assert rig.service._committed == {TP0: 0}
    assert rig.producer.to("territory.counts") == [], "nothing flushed for the old consumer"
    assert rig.service._offsets == {TP0: 3}
