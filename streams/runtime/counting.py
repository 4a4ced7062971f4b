"""The counting and detection stage: a Faust agent on the counts topic, its state in Faust tables.

Data flow: the enrichment stage sends each territory's per-batch window counts to the partition that owns
the territory (key = territory code) and, about once a second, a watermark tick with the totals of all
comments to every partition (see :mod:`streams.pipeline.clock`). This agent adds the counts to the ``windows``
table, advances the partition's clock on ticks, and for every window that became final steps the detector
(``pipeline.detector``) of every territory the partition owns (a quiet territory gets a 0), publishes
burst events and sets the territory's gauges. Partition 0 also runs the global-surge detector on the totals,
judging breadth from the totals per territory that only its ticks carry.

State lives in three changelog-backed tables, so a restarted worker resumes from its partitions' changelogs:
``windows`` (open windows' counts and top-posts sketches), ``detectors`` (detector state per territory) and
``clocks`` (each partition's watermark, totals and next window to close). The per-message cost of a Faust
agent does not matter here: the agent sees a few messages per enrichment batch, not one per comment.

Detection is driven by event time from the stream (ticks), never by Faust's wall-clock window expiry
(``on_window_close`` has open bugs about late or missed callbacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, cast

import faust
import msgspec

from streams.pipeline.clock import (
    GLOBAL_PARTITION,
    SOURCE_SILENT_S,
    PartitionClock,
    decode_clock,
    encode_clock,
)
from streams.pipeline.codec import msgpack_codec
from streams.pipeline.detector import GLOBAL_KEY, DetectorParams, TerritoryState, Verdict, step
from streams.pipeline.events import (
    BurstEvent,
    BurstKind,
    CountBatch,
    CountDelta,
    Tick,
    TopPost,
    decode_count_message,
    encode_burst,
)
from streams.pipeline.territory import Territory
from streams.pipeline.windows import WindowAgg, WindowSpec, decode_agg, encode_agg
from streams.runtime.health import Health
from streams.runtime.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

_BURST_KINDS: dict[str, BurstKind] = {"started": "started", "ongoing": "updated", "ended": "ended"}
TABLES = (
    "shudi-windows",
    "shudi-detectors",
    "shudi-clocks",
)
TOP_POSTS = 5
# A batch of counts messages: at most this many, or what arrived within this long (a window lasts seconds).
COUNTS_BATCH_MAX = 500
COUNTS_BATCH_WITHIN_S = 0.1


class DetectorRecord(msgspec.Struct, gc=False):
    """A territory's entry in the ``detectors`` table: where it lives and its detector state."""

    partition: int
    territory: Territory | None  # None for the global detector
    state: TerritoryState | None = None


_encode_record, _decode_record = msgpack_codec(DetectorRecord)


def changelog_topics(settings: Settings) -> list[str]:
    """Faust's names for the tables' changelog topics (created by the worker up front, see topics.py)."""
    return [f"{settings.app_id}-{name}-changelog" for name in TABLES]


def window_spec(settings: Settings) -> WindowSpec:
    return WindowSpec(
        size_s=settings.window_s,
        hop_s=settings.window_hop_s or settings.window_s,
        lateness_s=settings.allowed_lateness_s,
    )


def detector_params(settings: Settings) -> DetectorParams:
    """Every detector parameter from its ``detector_*`` setting; the window is the hop (or the size)."""
    given = {
        f.name: getattr(settings, f"detector_{f.name}")
        for f in dataclasses.fields(DetectorParams)
        if f.name != "window_s"
    }
    return DetectorParams(window_s=settings.window_hop_s or settings.window_s, **given)


def _iso(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class Detection:
    """The agent's logic, with the tables and the bursts topic handed in (one instance per app)."""

    def __init__(self, app: faust.App, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.spec = window_spec(settings)
        self.params = detector_params(settings)
        self.windows, self.detectors, self.clocks = (self._table(app, name) for name in TABLES)
        self.bursts = app.topic(settings.bursts_topic, key_serializer="raw", value_serializer="raw")
        # Territories per counting partition, and their labels: rebuilt from `detectors` after a restart.
        self._owned: dict[int, dict[str, Territory]] = {}
        # State changed while one batch of counts messages is handled, written to the tables once at the
        # batch's end. Every table write is a changelog record, i.e. a message through Faust's producer
        # buffer at a few hundred µs each: per message and per window, two workers' flushes once queued
        # ~47,000 of them and delayed burst alerts by tens of seconds (issue #10). Now a batch costs one
        # record per window touched, per territory stepped and per clock, however many messages and
        # windows it holds. The agent acks a batch only after this write (``take_events``), so what a
        # commit covers is in the changelogs: at-least-once as before.
        self._stepped: dict[str, DetectorRecord] = {}
        self._aggs: dict[bytes, tuple[int, WindowAgg]] = {}  # open windows changed in this batch
        self._clocks: dict[int, PartitionClock] = {}  # clocks read or changed in this batch

    def _table(self, app: faust.App, name: str) -> Any:
        # Keys and values are bytes, msgspec-encoded here. Faust picks the changelog codec from the types:
        # bytes means raw; anything else means JSON, which fails at recovery on these values.
        return app.Table(name, partitions=self.settings.partitions, key_type=bytes, value_type=bytes)

    # --- messages ------------------------------------------------------------------------------------------

    async def on_message(self, partition: int, value: bytes | None) -> None:
        await self.on_messages([(partition, value)])

    async def on_messages(
        self,
        messages: Iterable[tuple[int, bytes | None]],
        in_partition: Callable[[int], AbstractContextManager[object]] = lambda _: contextlib.nullcontext(),
    ) -> None:
        """Handle counts messages in order, then write what they changed to the tables once.

        ``in_partition(p)`` wraps everything done for partition ``p``: a Faust table writes a key to the
        changelog partition of the event being handled, which the agent sets (see ``_handling``).
        """
        try:
            for partition, value in messages:
                try:
                    message = decode_count_message(value or b"")
                except msgspec.DecodeError:
                    # Our own internal topic: a bad record is a bug or a foreign producer, never a reason
                    # to stop.
                    self.metrics.bad_count_messages.inc()
                    continue
                with in_partition(partition):
                    await self._handle(partition, message)
        finally:
            # Written even if a send failed half-way: the steps taken are in the gauges and events already.
            self._persist(in_partition)

    def _persist(self, in_partition: Callable[[int], AbstractContextManager[object]]) -> None:
        writes: dict[int, list[tuple[Any, bytes, bytes]]] = {}
        for code, record in self._stepped.items():
            writes.setdefault(record.partition, []).append(
                (self.detectors, code.encode(), _encode_record(record))
            )
        for key, (partition, agg) in self._aggs.items():
            writes.setdefault(partition, []).append((self.windows, key, encode_agg(agg)))
        for partition, clock in self._clocks.items():
            writes.setdefault(partition, []).append((self.clocks, _clock_key(partition), encode_clock(clock)))
        self._stepped.clear()
        self._aggs.clear()
        self._clocks.clear()
        for partition, items in writes.items():
            with in_partition(partition):
                for table, key, value in items:
                    table[key] = value

    async def _handle(self, partition: int, message: CountBatch) -> None:
        for delta in message.deltas:
            self._add_delta(partition, delta)
        if message.ticks:
            await self._apply_ticks(partition, message.ticks)

    async def _apply_ticks(self, partition: int, ticks: list[Tick]) -> None:
        clock = self._clock(partition)
        now = time.time()
        for tick in ticks:
            # When the source was heard from is when it sent the tick (a clock ahead of ours counts as now);
            # a tick from an older worker has no send time: when it is read.
            heard = min(tick.sent_at, now) if tick.sent_at > 0 else now
            clock.apply_tick(
                tick.source,
                tick.watermark,
                tick.totals,
                heard,
                idle=tick.idle,
                by_territory=tick.by_territory,
            )
        ticks_now = clock.heard_until(now)
        due = clock.due(self.spec, ticks_now, SOURCE_SILENT_S)
        for start in due:
            await self._close(partition, start, clock.take_total(start), clock.take_by_territory(start))
        if due:
            clock.drop_totals_before(due[-1])
        mark = clock.watermark(ticks_now, SOURCE_SILENT_S)
        if mark is not None:
            self.metrics.event_time_lag.set(max(0.0, now - mark))

    def _add_delta(self, partition: int, delta: CountDelta) -> None:
        territory = delta.territory
        owned = self._territories(partition)
        if territory.code not in owned:
            owned[territory.code] = territory
            self.detectors[territory.code.encode()] = _encode_record(
                DetectorRecord(partition=partition, territory=territory)
            )
        clock = self._clock(partition)
        for window in delta.windows:
            if clock.is_late(window.start):
                self.metrics.late_events.inc(window.count)
                continue
            key = _window_key(territory.code, window.start)
            known = self._aggs.get(key)
            if known is None:
                raw = self.windows.get(key)
                known = self._aggs[key] = (partition, decode_agg(raw) if raw is not None else WindowAgg())
            agg = known[1]
            agg.count += window.count
            agg.posts.add_many(window.posts)

    # --- closing windows -----------------------------------------------------------------------------------

    async def _close(self, partition: int, start: int, total: int, by_territory: dict[str, int]) -> None:
        for code, territory in sorted(self._territories(partition).items()):
            key = _window_key(code, start)
            raw = self.windows.pop(key, None)  # a changelog tombstone only if the table has the key
            pending = self._aggs.pop(key, None)
            agg = pending[1] if pending is not None else decode_agg(raw) if raw is not None else WindowAgg()
            record = self._record(code, partition, territory)
            if record.state is None and agg.count == 0:
                # A detector starts with its territory's first comments, not with the empty windows that
                # close before them: a run of zeros would teach it a variance its traffic does not have.
                continue
            burst_start = record.state.burst_start if record.state is not None else None
            state, verdict = step(
                record.state,
                key=code,
                window_start=start,
                count=agg.count,
                total=max(total, agg.count) or None,
                params=self.params,
            )
            record.state = state
            self._stepped[code] = record
            if not verdict.stale:
                self._export(territory, agg.count, verdict)
                await self._announce(territory, start, agg, verdict, state.burst_start or burst_start)
        if partition == GLOBAL_PARTITION:
            await self._close_global(partition, start, total, by_territory)
        self.metrics.windows_closed.inc()

    async def _close_global(
        self, partition: int, start: int, total: int, by_territory: dict[str, int]
    ) -> None:
        record = self._record(GLOBAL_KEY, partition, None)
        if record.state is None and total == 0:
            return  # as for a territory: start with the first comments, not with the empty windows before
        burst_start = record.state.burst_start if record.state is not None else None
        # Totals without a breakdown come from workers of an older release: judge them on the total alone
        # rather than call every window narrow.
        territories = by_territory if by_territory or total == 0 else None
        state, verdict = step(
            record.state,
            key=GLOBAL_KEY,
            window_start=start,
            count=total,
            total=None,
            params=self.params,
            territories=territories,
        )
        record.state = state
        self._stepped[GLOBAL_KEY] = record
        if verdict.stale:
            return
        m = self.metrics
        m.global_window_events.set(total)
        m.global_window_baseline.set(verdict.baseline)
        m.global_surge_score.set(_finite(verdict.score))
        m.global_surge_active.set(1 if verdict.active else 0)
        if verdict.transition == "started":
            m.global_surges_started.inc()
        await self._announce(None, start, WindowAgg(count=total), verdict, state.burst_start or burst_start)

    def _export(self, territory: Territory, count: int, verdict: Verdict) -> None:
        labels = (territory.code, territory.scope)
        m = self.metrics
        m.window_events.labels(*labels).set(count)
        m.window_baseline.labels(*labels).set(verdict.baseline)
        m.burst_score.labels(*labels).set(_finite(verdict.score))
        m.burst_share_score.labels(*labels).set(_finite(verdict.share_score))
        m.burst_active.labels(*labels).set(1 if verdict.active else 0)
        started = m.bursts_started.labels(*labels)  # exported at 0 first, so increase() sees the first burst
        if verdict.transition == "started":
            started.inc()

    async def _announce(
        self,
        territory: Territory | None,
        start: int,
        agg: WindowAgg,
        verdict: Verdict,
        burst_start: int | None,
    ) -> None:
        kind = _BURST_KINDS.get(verdict.transition)
        if kind is None or verdict.burst_id is None:
            return
        event = BurstEvent(
            kind=kind,
            type="regional" if territory is not None else "global",
            burst_id=verdict.burst_id,
            territory=territory,
            window_start=_iso(start),
            window_end=_iso(start + self.spec.size_s),
            burst_start=_iso(burst_start) if burst_start is not None else None,
            count=agg.count,
            baseline=verdict.baseline,
            score=_finite_or_none(verdict.score),
            share_score=_finite_or_none(verdict.share_score) if territory is not None else None,
            top_posts=[TopPost(p.post_id, p.count) for p in agg.posts.top(TOP_POSTS)],
            emitted_at=datetime.now(tz=UTC),
        )
        key = (territory.code if territory is not None else GLOBAL_KEY).encode()
        await self.bursts.send(key=key, value=encode_burst(event))
        log.info(
            "burst %s %s %s (count %d, baseline %.1f)",
            kind,
            event.type,
            event.burst_id,
            agg.count,
            verdict.baseline,
        )

    # --- state ---------------------------------------------------------------------------------------------

    def _clock(self, partition: int) -> PartitionClock:
        clock = self._clocks.get(partition)
        if clock is None:
            raw = self.clocks.get(_clock_key(partition))
            clock = self._clocks[partition] = decode_clock(raw) if raw is not None else PartitionClock()
        return clock

    def _record(self, code: str, partition: int, territory: Territory | None) -> DetectorRecord:
        stepped = self._stepped.get(code)
        if stepped is not None:
            return stepped
        raw = self.detectors.get(code.encode())
        if raw is None:
            return DetectorRecord(partition=partition, territory=territory)
        return _decode_record(raw)

    def _territories(self, partition: int) -> dict[str, Territory]:
        owned = self._owned.get(partition)
        if owned is None:
            # First look at this partition since start or assignment: its territories are in the table.
            owned = {}
            for key, raw in self.detectors.items():
                record = _decode_record(raw)
                if record.partition == partition and record.territory is not None:
                    owned[key.decode()] = record.territory
            self._owned[partition] = owned
        return owned

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved to another worker: stop exporting their territories' gauges."""
        m = self.metrics
        for partition in partitions:
            for territory in self._owned.pop(partition, {}).values():
                for gauge in (
                    m.window_events,
                    m.window_baseline,
                    m.burst_score,
                    m.burst_share_score,
                    m.burst_active,
                ):
                    with contextlib.suppress(KeyError):
                        gauge.remove(territory.code, territory.scope)
            if partition == GLOBAL_PARTITION:
                for gauge in (
                    m.global_window_events,
                    m.global_window_baseline,
                    m.global_surge_score,
                    m.global_surge_active,
                ):
                    gauge.set(0)


def _window_key(code: str, start: int) -> bytes:
    return f"{code}|{start}".encode()


def _clock_key(partition: int) -> bytes:
    return f"clock|{partition}".encode()


def _finite(x: float | None) -> float:
    return x if x is not None and x == x else 0.0  # NaN (a stale score) exports as 0


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and x == x else None


def _handling_in(last: Mapping[int, faust.EventT[bytes]], partition: int) -> AbstractContextManager[None]:
    return _handling(last[partition])


@contextlib.contextmanager
def _handling(event: faust.EventT[bytes]) -> Iterator[None]:
    """Faust's "current event" set to ``event``, as inside ``async for event in stream``.

    A Faust table write goes to the changelog partition of the current event, which ``take_events`` does
    not set while its batch is handled ("Cannot modify table key from outside of stream iteration").
    ``faust.streams._current_event`` is the context variable Faust's own stream iteration sets.
    """
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def register_detection_agent(
    app: faust.App, settings: Settings, metrics: Metrics, health: Health
) -> Detection:
    detection = Detection(app, settings, metrics)
    counts = app.topic(
        settings.counts_topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )

    @app.agent(counts, name="shudi.detect", concurrency=1)
    async def detect(stream: faust.StreamT[bytes]) -> None:
        # Batches of messages (acked after the tables are written): see Detection.__init__. The agent is
        # given a faust.Stream, whose take_events the StreamT interface does not declare.
        batches = cast(faust.Stream[bytes], stream).take_events(
            COUNTS_BATCH_MAX, within=COUNTS_BATCH_WITHIN_S
        )
        try:
            async for events in batches:
                last = {e.message.partition: e for e in events}
                messages = ((e.message.partition, e.message.value) for e in events)
                await detection.on_messages(messages, functools.partial(_handling_in, last))
        except asyncio.CancelledError:
            raise  # the worker is stopping or the agent restarting: not a failure
        except Exception as exc:
            health.stop_worker("counting agent", exc)
            raise

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        detection.forget(tp.partition for tp in revoked if tp.topic == settings.counts_topic)

    app.on_partitions_revoked.connect(on_revoked)
    return detection
