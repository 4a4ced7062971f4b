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

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import faust
import msgspec

from streams.pipeline.clock import (
    GLOBAL_PARTITION,
    SOURCE_SILENT_S,
    PartitionClock,
    decode_clock,
    encode_clock,
)
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


class DetectorRecord(msgspec.Struct, gc=False):
    """A territory's entry in the ``detectors`` table: where it lives and its detector state."""

    partition: int
    territory: Territory | None  # None for the global detector
    state: TerritoryState | None = None


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(DetectorRecord)


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

    def _table(self, app: faust.App, name: str) -> Any:
        # Keys and values are bytes, msgspec-encoded here. Faust picks the changelog codec from the types:
        # bytes means raw; anything else means JSON, which fails at recovery on these values.
        return app.Table(name, partitions=self.settings.partitions, key_type=bytes, value_type=bytes)

    # --- messages ------------------------------------------------------------------------------------------

    async def on_message(self, partition: int, value: bytes | None) -> None:
        try:
            message = decode_count_message(value or b"")
        except msgspec.DecodeError:
            # Our own internal topic: a bad record is a bug or a foreign producer, never a reason to stop.
            self.metrics.bad_count_messages.inc()
            return
        if isinstance(message, CountBatch):
            for delta in message.deltas:
                self._add_delta(partition, delta)
            if message.ticks:
                await self._apply_ticks(partition, message.ticks)
        elif isinstance(message, CountDelta):
            self._add_delta(partition, message)
        else:
            await self._apply_ticks(partition, [message])

    async def _apply_ticks(self, partition: int, ticks: list[Tick]) -> None:
        clock = self._clock(partition)
        now = time.time()
        for tick in ticks:
            clock.apply_tick(
                tick.source, tick.watermark, tick.totals, now, idle=tick.idle, by_territory=tick.by_territory
            )
        due = clock.due(self.spec, now, SOURCE_SILENT_S)
        for start in due:
            await self._close(partition, start, clock.take_total(start), clock.take_by_territory(start))
        if due:
            clock.drop_totals_before(due[-1])
        self.clocks[_clock_key(partition)] = encode_clock(clock)
        mark = clock.watermark(now, SOURCE_SILENT_S)
        if mark is not None:
            self.metrics.event_time_lag.set(max(0.0, now - mark))

    def _add_delta(self, partition: int, delta: CountDelta) -> None:
        territory = delta.territory
        owned = self._territories(partition)
        if territory.code not in owned:
            owned[territory.code] = territory
            self.detectors[territory.code.encode()] = _record_encoder.encode(
                DetectorRecord(partition=partition, territory=territory)
            )
        clock = self._clock(partition)
        for window in delta.windows:
            if clock.is_late(window.start, self.spec):
                self.metrics.late_events.inc(window.count)
                continue
            key = _window_key(territory.code, window.start)
            raw = self.windows.get(key)
            agg = decode_agg(raw) if raw is not None else WindowAgg()
            agg.count += window.count
            agg.posts.add_many(window.posts)
            self.windows[key] = encode_agg(agg)

    # --- closing windows -----------------------------------------------------------------------------------

    async def _close(self, partition: int, start: int, total: int, by_territory: dict[str, int]) -> None:
        for code, territory in sorted(self._territories(partition).items()):
            raw = self.windows.pop(_window_key(code, start), None)
            agg = decode_agg(raw) if raw is not None else WindowAgg()
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
            self.detectors[code.encode()] = _record_encoder.encode(record)
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
        self.detectors[GLOBAL_KEY.encode()] = _record_encoder.encode(record)
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
        raw = self.clocks.get(_clock_key(partition))
        return decode_clock(raw) if raw is not None else PartitionClock()

    def _record(self, code: str, partition: int, territory: Territory | None) -> DetectorRecord:
        raw = self.detectors.get(code.encode())
        if raw is None:
            return DetectorRecord(partition=partition, territory=territory)
        return _record_decoder.decode(raw)

    def _territories(self, partition: int) -> dict[str, Territory]:
        owned = self._owned.get(partition)
        if owned is None:
            # First look at this partition since start or assignment: its territories are in the table.
            owned = {}
            for key, raw in self.detectors.items():
                record = _record_decoder.decode(raw)
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


def register_detection_agent(app: faust.App, settings: Settings, metrics: Metrics) -> Detection:
    detection = Detection(app, settings, metrics)
    counts = app.topic(
        settings.counts_topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )

    @app.agent(counts, name="shudi.detect", concurrency=1)
    async def detect(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await detection.on_message(event.message.partition, event.message.value)

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        detection.forget(tp.partition for tp in revoked if tp.topic == settings.counts_topic)

    app.on_partitions_revoked.connect(on_revoked)
    return detection
