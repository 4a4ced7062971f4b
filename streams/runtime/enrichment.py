"""The enrichment stage: a batch loop on a plain aiokafka consumer, living inside the Faust worker.

Why not a Faust stream agent: measured on these machines (bench/FAUST-PROFILE.md), a Faust agent costs
130–460 µs of CPU per message in Faust's per-message machinery (a ``wait_first`` with four tasks per
message in ``Consumer._drain_messages``, an Event, sensor calls, a FutureMessage per send), so even tuned it
relays ≈ 7 k events/s where a plain aiokafka loop relays ≈ 25 k/s. The enrichment stage is stateless and
needs none of Faust's tables, so it runs as a ``mode.Service`` started and stopped with the Faust app,
with its own consumer group ``<app_id>-enrich``; the stateful stages keep Faust's agents and tables.

Each batch's enriched records go out as whole record batches to their input's partition number
(``batch_send``), its dead letters one by one, and their acknowledgements are awaited before the
next batch. Its counts are merged in memory and *flushed* about once a second (``SHUDI_TICK_INTERVAL_S``, or
sooner once ``SHUDI_FLUSH_EVENTS`` events wait): one ``CountBatch`` per counts partition (the deltas of the
territories it owns, then a watermark tick per source partition), and then the offsets of every batch since
the last flush are committed. A few messages a second whatever the input rate keep the Faust counting
agent's per-message cost out of the way, and commits stop costing a round trip per batch.

Guarantees:
- At-least-once: offsets are committed only after the broker acknowledged every record produced for them
  (enriched, dead letters and counts), so a commit never passes an unprocessed or uncounted event. A crash
  replays at most the batches since the last flush (fewer than ``flush_events`` + ``batch_size`` events).
  A rebalance, and a graceful stop, wait for the batch in flight and flush first; a commit refused after a
  rebalance only means those batches are delivered again.
- Every wait on the broker is bounded (:data:`BROKER_WAIT_S`: acknowledgements, fetches, commits, offset
  look-ups, a revocation waiting for the batch in flight; :data:`STOP_STEP_S` for each step of a stop). A
  wait that runs out means the clients are wedged (aiokafka can leave a consumer group's coordination stuck
  after a broker restart, see :class:`_Rebalance`): the loop logs what it waited for, drops the batches
  since the last commit (they are delivered again) and makes new clients; ``/healthz`` fails if that keeps
  happening for longer than the stall timeout, and after :data:`MAX_CLIENT_RESETS` resets in a row without a
  batch the worker stops (exit 70). A SIGTERM ends the worker within a bounded time whatever the broker does.
- Bad input never raises out of :class:`streams.pipeline.enrich.Enricher`. Anything else that escapes the loop
  (e.g. the broker unreachable beyond the producer's retries) is fatal: it is logged, ``/healthz`` fails,
  and the worker stops with exit code 70, so the orchestrator restarts it instead of keeping a live process
  that no longer consumes (the zombie of faust-streaming issues 175 and 640).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeVar

import mode
import msgspec
from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, KafkaTimeoutError
from aiokafka.structs import TopicPartition

from streams.pipeline.clock import (
    GLOBAL_PARTITION,
    count_deltas,
    counting_partition,
    territory_totals,
    window_totals,
)
from streams.pipeline.enrich import Enricher, OutRecord
from streams.pipeline.events import CountBatch, CountDelta, Tick, encode_count_message
from streams.pipeline.territory import Territory
from streams.runtime.batch_send import send_batches
from streams.runtime.health import Health
from streams.runtime.kafka import KafkaConnection
from streams.runtime.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

FETCH_MIN_BYTES = 256 * 1024
FETCH_WAIT_MS = 20
POLL_MS = 500
# Longest the loop waits on the broker for one thing (a batch's acknowledgements, a commit, a fetch, the
# committed offsets of new partitions, a revocation's turn). The producer gives up on a record after its
# request timeout (aiokafka's default, 40 s) and retries; a wait longer than this means a wedged client.
BROKER_WAIT_S = 90.0
# Longest each step of a stop may take (the final flush, closing the consumer, closing the producer).
STOP_STEP_S = 15.0
# Client resets in a row, with no batch between them, after which the worker gives up (exit 70); they are
# spaced by a backoff of 1, 2, 4 ... RESET_BACKOFF_MAX_S seconds (plus each attempt's own bounded waits), so
# the loop rides out a broker that is away for several minutes.
MAX_CLIENT_RESETS = 10
RESET_BACKOFF_MAX_S = 30.0


class MissingTopicError(Exception):
    """A topic the loop reads or writes is not in the cluster (deleted under the worker): fatal."""


class BrokerWaitTimeoutError(Exception):
    """A wait on the broker ran past its bound: the clients are presumed wedged."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what}: no answer in {seconds:.0f}s")
        self.what = what


class ClientCancelledError(Exception):
    """An aiokafka call ended *cancelled* although nobody cancelled the loop: seen after a broker restart
    (a client's internal task cancelled under it). Let through as ``CancelledError`` it ended the consuming
    task without a word, leaving a live worker that no longer consumed; it is a wedged client instead."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: cancelled inside the client")


def transient(exc: BaseException) -> bool:
    """Whether a failure is the broker's passing state (gone, paused, restarting, electing leaders) that new
    clients ride out, rather than a fault of shudi's own or of the cluster's set-up (fatal)."""
    return (
        isinstance(exc, BrokerWaitTimeoutError | ClientCancelledError | KafkaTimeoutError)
        or (isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False)))
        or dead_sender(exc)
        or no_metadata(exc)
    )


# What aiokafka's producer raises, for this send and every later one, once its sender task died of an
# exception it did not expect. Seen when connections are reset (a network cut, bench.faults network-cut):
# under uvloop, writing to a transport the peer reset raises RuntimeError, which aiokafka's connection does
# not catch (it catches OSError; aio-libs/aiokafka#1038), so the sender task ends and the producer is
# useless for good (aio-libs/aiokafka#907). New clients are the cure: a transient failure, not a fatal one.
DEAD_SENDER = "Unexpected error during batch delivery"


def dead_sender(exc: BaseException) -> bool:
    """Whether ``exc`` is aiokafka's producer reporting that its sender task died (matched on the message:
    aiokafka raises a plain KafkaError and copies it, so neither the class nor the cause tells)."""
    return type(exc) is KafkaError and DEAD_SENDER in str(exc)


# What aiokafka's ``fetch_all_metadata`` raises when no broker gave it the cluster's metadata: a plain
# KafkaError, not retriable by its class. Seen right after a broker paused for 60 s resumed (it answered
# "No broker metadata found in MetadataResponse" for a moment): the reset's topic check then stopped the
# worker (exit 70) although the broker was back a second later. A broker that cannot tell yet is passing.
NO_METADATA = "Unable to get cluster metadata"


def no_metadata(exc: BaseException) -> bool:
    return type(exc) is KafkaError and NO_METADATA in str(exc)


async def bounded(aw: Awaitable[T], seconds: float, what: str) -> T:
    """``await aw``, or :class:`BrokerWaitTimeoutError` after ``seconds``.

    On time-out ``aw`` is cancelled but *not waited for*: ``asyncio.wait_for`` waits until the cancelled
    awaitable has finished, and aiokafka's ``stop()`` does not finish under cancellation while its group
    coordination task is wedged (seen: a reset that closed a consumer after a broker restart waited for
    minutes). A wedged client's task is abandoned instead; the caller makes new clients."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise BrokerWaitTimeoutError(what, seconds)
    if task.cancelled():
        raise ClientCancelledError(what)
    return task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Consume an abandoned task's outcome, so asyncio does not log "exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


async def acquire_within(lock: asyncio.Lock, seconds: float, what: str) -> None:
    """``lock.acquire()`` or :class:`BrokerWaitTimeoutError` after ``seconds``. ``wait_for`` here (not
    :func:`bounded`): an acquire cancels promptly, and an abandoned one could take the lock later."""
    try:
        await asyncio.wait_for(lock.acquire(), seconds)
    except TimeoutError as exc:
        raise BrokerWaitTimeoutError(what, seconds) from exc


async def produce_all(producer: AIOKafkaProducer, batches: Iterable[tuple[str, Sequence[OutRecord]]]) -> None:
    """Send records one by one (the producer picks partitions by key), then wait for all acknowledgements
    at once: one ``await`` per record would serialise on the round trip."""
    pending: list[Awaitable[Any]] = []
    for topic, records in batches:
        for record in records:
            pending.append(await producer.send(topic, record.value, key=record.key))
    if pending:
        await asyncio.gather(*pending)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions are taken away only between batches, never while one is being produced.

    aiokafka calls these from its group coordination task: while they wait, the consumer neither
    heartbeats nor rejoins its group, and a commit the batch in flight waits for may need exactly that
    rejoin. Unbounded, the two waited for each other after a broker restart (the stall of issue 14: the
    group never rejoined, and a SIGTERM then waited forever for the batch lock). So the revocation waits
    for the batch in flight at most ``BROKER_WAIT_S``; if the batch is still stuck, the partitions go
    without a flush (the batch's offsets are then not committed, or refused: it is delivered again)."""

    def __init__(self, service: EnrichmentService, consumer: Any) -> None:
        self._service = service
        # The consumer it listens for: one abandoned by a client reset may still call it (its coordination
        # task lives on until it ends) and must not touch the state of its successor.
        self._consumer = consumer

    def _current(self) -> bool:
        current = self._service.consumer is self._consumer
        if not current:
            log.info("rebalance callback of a replaced consumer ignored")
        return current

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        service = self._service
        revoked = list(revoked)
        if not self._current():
            return
        try:
            await acquire_within(service.batch_lock, service.broker_wait_s, "the batch in flight")
        except BrokerWaitTimeoutError as exc:
            log.warning("partitions revoked while %s; they go without a flush (redelivered)", exc)
            service.needs_reset(exc)
            service.forget(revoked)
            return
        try:
            await service.flush()
        except Exception as exc:  # noqa: BLE001 -- the partitions go anyway; their batches are redelivered
            log.warning("flush before a revocation failed (%s); the batches will be redelivered", exc)
            service.needs_reset(exc)
        finally:
            service.forget(revoked)
            service.batch_lock.release()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if not self._current():
            return
        try:
            await self._service.learn_offsets(assigned)
        except Exception as exc:  # noqa: BLE001 -- only the lag's base: known again after the next commit
            log.warning("committed offsets of the new partitions unknown (%s)", exc)


class EnrichmentService(mode.Service):
    """comments → (Enricher) → comments.enriched + comments.dlq + counts, in batches, at least once."""

    def __init__(
        self, settings: Settings, enricher: Enricher, metrics: Metrics, health: Health, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.enricher = enricher
        self.metrics = metrics
        self.health = health
        self.batch_lock = asyncio.Lock()
        # Event-time progress per input partition, for the ticks to the counting stage.
        self._marks: dict[int, float] = {}  # latest created_at seen
        self._marked_at: dict[int, float] = {}  # wall time it was seen
        self._busy: set[int] = set()  # partitions with events since the last tick
        # Counts and offsets of the batches since the last flush.
        self._windows: dict[tuple[Territory, int], Counter[str]] = {}
        self._offsets: dict[TopicPartition, int] = {}
        self._pending_events = 0
        # Where each assigned partition's consumption stands (the next offset to commit): the lag's base.
        self._committed: dict[TopicPartition, int] = {}
        self._copartitioned = False  # decided at start, see _check_copartitioning
        # Set when the worker begins to stop, long before Faust reaches this service in its stop order.
        self._stop_requested = False
        self.broker_wait_s = BROKER_WAIT_S
        self.stop_step_s = STOP_STEP_S
        self._resets_in_a_row = 0
        # Set when a flush failed: its counts are gone, so no later flush may commit past them; the consuming
        # loop resets the clients (back to the last commit) before anything else.
        self._reset_needed: BaseException | None = None

    def request_stop(self) -> None:
        """Take no more batches: the one in flight finishes, and ``on_stop`` flushes and commits it.

        Faust stops its own services (fetcher, tables, agents) before this one, and while they stop the loop
        would keep taking batches that only make the stop longer and the next worker's backlog shorter."""
        if not self._stop_requested:
            log.info("stop requested: finishing the batch in flight")
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop_requested or self.should_stop

    async def on_start(self) -> None:
        # Faust leaves aiokafka's logger at DEBUG, and AIOKafkaProducer.send() builds a debug record per
        # message: 15 % of the worker's CPU in a profile. Nothing of value is logged below INFO there.
        logging.getLogger("aiokafka").setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
        # aiokafka clients bind to the running loop (Faust's), so they are made here, not in __init__.
        await self._make_clients()
        await self._check_copartitioning()
        self.consumer.subscribe([self.settings.input_topic], listener=_Rebalance(self, self.consumer))
        # Everything built so far (Faust's app, tables, the GeoIP reader) lives as long as the worker: keep
        # it out of the garbage collector's full passes, which otherwise walk it again and again while the
        # loop allocates a few objects per event.
        gc.freeze()
        self.health.mark_started()

    async def _make_clients(self) -> None:
        kafka = KafkaConnection.from_settings(self.settings)
        self.consumer = kafka.consumer(
            group_id=f"{self.settings.app_id}-enrich",
            client_id=f"{self.settings.app_id}-enrich",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=16 << 20,
            # Let the broker gather a few hundred comments (or wait FETCH_WAIT_MS) per fetch: at moderate
            # rates a fetch per handful of records makes batches of a handful, and every batch pays for a
            # produce request, an acknowledgement round trip and its bookkeeping.
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        self.producer = kafka.producer(
            client_id=f"{self.settings.app_id}-enrich",
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            max_request_size=max(1 << 20, 4 * self.settings.max_message_bytes),
        )
        await bounded(self.producer.start(), self.broker_wait_s, "starting the producer")
        await bounded(self.consumer.start(), self.broker_wait_s, "starting the consumer")

    async def _check_copartitioning(self) -> None:
        """Enriched records go to their input's partition number when the two topics have as many
        partitions (as the worker creates them): the input's key → partition mapping carries over, and the
        records go out as whole batches. Otherwise the producer partitions them by key, one by one."""
        settings = self.settings
        inputs = await self.producer.partitions_for(settings.input_topic)
        outputs = await self.producer.partitions_for(settings.enriched_topic)
        self._copartitioned = len(inputs) == len(outputs)
        if not self._copartitioned:
            log.warning(
                "%s has %d partitions and %s %d: enriched records are partitioned by key, one send per "
                "record (slower); give both topics the same partition count",
                settings.input_topic,
                len(inputs),
                settings.enriched_topic,
                len(outputs),
            )

    async def on_stop(self) -> None:
        """Flush and commit, then close the clients: each step bounded, so a stop ends whatever the broker
        does (what could not be flushed is delivered again)."""
        step = self.stop_step_s
        try:
            await acquire_within(self.batch_lock, step, "the batch in flight")
        except BrokerWaitTimeoutError as exc:
            log.warning("stopping without the final flush (%s); the last batches will be redelivered", exc)
        else:
            try:
                await bounded(self.flush(), step, "the final flush")
            except Exception as exc:  # noqa: BLE001 -- stopping anyway; unflushed batches are redelivered
                log.warning("final flush failed (%s); the last batches will be redelivered", exc)
            finally:
                self.batch_lock.release()
        await self._close_clients(step)

    async def _close_clients(self, step: float) -> None:
        for name, client in (("consumer", self.consumer), ("producer", self.producer)):
            try:
                await bounded(client.stop(), step, f"closing the {name}")
            except Exception as exc:  # noqa: BLE001 -- a wedged client is abandoned, not waited for
                log.warning("enrichment %s not closed cleanly: %s", name, exc)

    @mode.Service.task
    async def _consume(self) -> None:
        try:
            while not self.stopping:
                try:
                    await self._poll_once()
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if self.stopping or current is None or current.cancelling():
                        raise  # the loop itself is cancelled: the worker is stopping
                    await self.reset_clients(ClientCancelledError("a batch"))
                except Exception as exc:
                    if self.stopping or not transient(exc):
                        raise
                    await self.reset_clients(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- see the module docstring: fatal, restart the worker
            if self.should_stop:
                # Clients closing under a stopping worker: nothing is lost, the batch is redelivered.
                log.info("enrichment loop ended while stopping (%s)", type(exc).__name__)
                return
            self._fatal(exc)

    async def _poll_once(self) -> None:
        if (exc := self._reset_needed) is not None:
            raise exc
        batches = await bounded(
            self.consumer.getmany(timeout_ms=POLL_MS, max_records=self.settings.batch_size),
            POLL_MS / 1000 + self.broker_wait_s,
            "a fetch",
        )
        if self.stopping:
            return  # stopping: this batch is neither produced nor committed, so it is redelivered
        if batches:
            await acquire_within(self.batch_lock, self.broker_wait_s, "the batch lock")
            try:
                await self._process(batches)
                # A flush costs the counting agent a message per counts partition and a table write
                # per territory: under a backlog, flushing every 4,000 events took ~20 % more CPU
                # per event than every 16,000 (bench/throughput).
                if self._pending_events >= self.settings.flush_events:
                    await self.flush()
            finally:
                self.batch_lock.release()
            self._resets_in_a_row = 0
        self.health.polled(self._lag())

    async def reset_clients(self, exc: BaseException) -> None:
        """The broker went away or a client is wedged: drop what was not committed (it is delivered again),
        close the clients (bounded: a wedged one is abandoned) and make new ones, which rejoin the group.
        Retried with a backoff while the broker does not answer; a missing topic is fatal at once."""
        while not self.stopping:
            self._resets_in_a_row += 1
            if self._resets_in_a_row > MAX_CLIENT_RESETS:
                raise RuntimeError(f"{MAX_CLIENT_RESETS} client resets in a row without a batch") from exc
            self.metrics.client_resets.inc()
            log.error(
                "enrichment clients reset after %s: %s; the batches since the last commit will be delivered "
                "again (reset %d in a row)",
                type(exc).__name__,
                exc,
                self._resets_in_a_row,
            )
            async with self.batch_lock:
                self.drop_pending()
                self._committed.clear()
                try:  # a deleted topic is fatal: tell at once, not after closing and remaking the clients
                    await bounded(self._check_topics(), self.stop_step_s, "the topics' metadata")
                except MissingTopicError:
                    raise
                except Exception:  # noqa: BLE001, S110 -- the broker may be away: checked again below
                    pass
                await self._close_clients(self.stop_step_s)
                try:
                    await self._make_clients()
                    await bounded(self._check_topics(), self.broker_wait_s, "the topics' metadata")
                except MissingTopicError:
                    raise
                except Exception as failed:
                    if not transient(failed):
                        raise
                    exc = failed
                else:
                    self.consumer.subscribe(
                        [self.settings.input_topic], listener=_Rebalance(self, self.consumer)
                    )
                    self._reset_needed = None
                    return
            await self.sleep(min(2.0 ** (self._resets_in_a_row - 1), RESET_BACKOFF_MAX_S))

    async def _check_topics(self) -> None:
        settings = self.settings
        cluster = await self.producer.client.fetch_all_metadata()
        topics = (settings.input_topic, settings.enriched_topic, settings.dlq_topic, settings.counts_topic)
        missing = [t for t in topics if not cluster.partitions_for_topic(t)]
        if missing:
            raise MissingTopicError(f"topics missing from the cluster: {', '.join(missing)}")

    def needs_reset(self, exc: BaseException) -> None:
        self.drop_pending()
        if self._reset_needed is None:
            self._reset_needed = exc

    def drop_pending(self) -> None:
        """Forget the counts and offsets of the batches since the last flush: they are delivered again."""
        self._windows = {}
        self._offsets = {}
        self._pending_events = 0

    def _fatal(self, exc: BaseException) -> None:
        self.health.stop_worker("enrichment loop", exc)

    async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        started = time.perf_counter()
        records = [m for messages in batches.values() for m in messages]
        result = self.enricher.process_batch(records)
        await bounded(self._produce(result), self.broker_wait_s, "a batch's acknowledgements")
        now = time.time()
        for partition, mark in result.watermarks.items():
            if mark > self._marks.get(partition, -1e18):
                self._marks[partition] = mark
            self._marked_at[partition] = now
            self._busy.add(partition)
        for key, posts in result.windows.items():
            pending = self._windows.get(key)
            if pending is None:
                self._windows[key] = posts
            else:
                pending.update(posts)
        self._offsets.update({tp: messages[-1].offset + 1 for tp, messages in batches.items()})
        self._pending_events += len(records)
        self.metrics.observe_batch(result.stats)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.last_batch.set_to_current_time()
        self.health.progressed()

    async def _produce(self, result: Any) -> None:
        settings = self.settings
        if self._copartitioned:
            delivered = await send_batches(self.producer, settings.enriched_topic, result.enriched)
            await produce_all(self.producer, ((settings.dlq_topic, result.dead_letters),))
            if delivered:
                await asyncio.gather(*delivered)
        else:
            await produce_all(
                self.producer,
                ((settings.enriched_topic, result.enriched), (settings.dlq_topic, result.dead_letters)),
            )

    @mode.Service.task
    async def _tick(self) -> None:
        """Flush about once a second, also when no batch comes (quiet windows must still close)."""
        try:
            while not self.should_stop:
                await self.sleep(self.settings.tick_interval_s)
                try:
                    await acquire_within(self.batch_lock, self.broker_wait_s, "the batch lock")
                except BrokerWaitTimeoutError:
                    continue  # the consuming loop is in a wait of its own, bounded too
                try:
                    await self.flush()
                except Exception as exc:
                    if not transient(exc):
                        raise
                    # The counts of this flush are gone: nothing may be committed until the consuming loop
                    # has reset the clients, which rewinds to the last commit (the batches come again).
                    log.warning("tick flush failed (%s: %s); resetting the clients", type(exc).__name__, exc)
                    self.needs_reset(exc)
                finally:
                    self.batch_lock.release()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- as in _consume
            if self.should_stop:
                return
            self._fatal(exc)

    async def flush(self) -> None:
        """Send the pending counts and the watermark ticks, wait for the broker, then commit the offsets."""
        if self._reset_needed is not None:
            self.drop_pending()  # a batch that came after the failed flush: delivered again after the reset
            return
        settings = self.settings
        windows, self._windows = self._windows, {}
        n = settings.partitions
        deltas: dict[int, list[CountDelta]] = {}
        for delta in count_deltas(windows):
            deltas.setdefault(counting_partition(delta.territory.code, n), []).append(delta)
        ticks = self._ticks(window_totals(windows))
        # Only the global detector's partition needs the totals per territory; they ride on its first tick.
        global_ticks = ticks[:1] and [
            msgspec.structs.replace(ticks[0], by_territory=territory_totals(windows)),
            *ticks[1:],
        ]
        offsets, self._offsets = self._offsets, {}
        self._pending_events = 0

        async def send_counts() -> None:
            records: list[Awaitable[Any]] = []
            for partition in range(n):
                batch = CountBatch(
                    deltas=deltas.get(partition, []),
                    ticks=global_ticks if partition == GLOBAL_PARTITION else ticks,
                )
                if batch.deltas or batch.ticks:
                    value = encode_count_message(batch)
                    records.append(
                        await self.producer.send(settings.counts_topic, value, partition=partition)
                    )
            if records:
                await asyncio.gather(*records)

        await bounded(send_counts(), self.broker_wait_s, "the counts' acknowledgements")
        self._busy.clear()
        if not offsets:
            return
        try:
            await bounded(self.consumer.commit(offsets), self.broker_wait_s, "a commit")
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved on meanwhile: those batches will be delivered again (and counted again).
            log.warning("commit refused (%s); the batches will be redelivered", type(exc).__name__)
            self.metrics.commit_failures.inc()

    def _ticks(self, totals: Counter[int]) -> list[Tick]:
        """A tick for every source partition this worker has seen; the totals ride on the first, so that
        each comment is counted once per counting partition."""
        now = time.time()
        ticks: list[Tick] = []
        for partition, mark in sorted(self._marks.items()):
            idle = partition not in self._busy and self._caught_up(partition)
            if idle:
                # No events: let event time run on with wall time, so quiet windows still close.
                mark += now - self._marked_at[partition]
            ticks.append(Tick(source=partition, watermark=mark, idle=idle, totals=[], sent_at=now))
        if ticks:
            ticks[0] = msgspec.structs.replace(ticks[0], totals=sorted(totals.items()))
        return ticks

    def _caught_up(self, partition: int) -> bool:
        """Whether a source with no events since the last tick has none waiting either.

        Only then may its tick say ``idle`` (its watermark runs on with wall time and stops holding back
        window closes). A source that is merely not being read (the worker is stopping, or lags behind)
        has events to come for windows that must stay open: telling the counting stage it is idle closed
        them early, and their comments were then counted late (seen after a restart during a burst).
        """
        if self._stop_requested:
            return False
        tp = TopicPartition(self.settings.input_topic, partition)
        position = self._committed.get(tp)
        if position is None:
            return False  # not (or no longer) this consumer's: aiokafka's highwater() asserts it is assigned
        highwater = self.consumer.highwater(tp)
        return position is not None and highwater is not None and position >= highwater

    async def learn_offsets(self, assigned: Iterable[TopicPartition]) -> None:
        """Start each newly assigned partition's lag from its committed offset (or its beginning)."""
        assigned = list(assigned)
        if not assigned:
            return
        wait = self.broker_wait_s
        beginning = await bounded(self.consumer.beginning_offsets(assigned), wait, "the beginning offsets")
        for tp in assigned:
            committed = await bounded(self.consumer.committed(tp), wait, "the committed offsets")
            self._committed[tp] = committed if committed is not None else beginning.get(tp, 0)

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)
            # Another worker speaks for this partition's event time now.
            self._marks.pop(tp.partition, None)
            self._marked_at.pop(tp.partition, None)
        self.metrics.forget_partitions(revoked)

    def _lag(self) -> int:
        """Messages behind the high watermark, summed over assigned partitions (exported per partition)."""
        lags: dict[TopicPartition, int] = {}
        for tp, position in self._committed.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                lags[tp] = max(0, highwater - position)
        self.metrics.set_lag(lags)
        return sum(lags.values())
