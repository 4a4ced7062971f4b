"""Event-time bookkeeping of one counting partition: the watermark, the global totals, which windows close.

Pure (no Faust, no Kafka): the counting agent (:mod:`streams.runtime.counting`) keeps a
:class:`PartitionClock` per partition of the counts topic in a Faust table and asks it, after every tick,
which windows are now final. The enrichment loop (:mod:`streams.runtime.enrichment`) uses the functions at
the end of this module to build what it sends: :func:`count_deltas`, :func:`window_totals` and
:func:`counting_partition`.

Why ticks: the enrichment stage sends each territory's per-batch counts to the one partition that owns the
territory, but event time and the total of all comments (for the share test and the global detector) are
needed by every partition. So every source (input partition) also sends a tick to every counting partition
about once a second, after the deltas in the same ``CountBatch``: its watermark (the latest ``created_at``
it has seen) and the per-window totals since its last tick. A partition's watermark is the lowest of its
active sources', so a window closes only when every source has moved past it plus the allowed lateness; a
source whose last tick was sent ``SOURCE_SILENT_S`` before the latest tick of another stops holding the
others back (a quiet partition must not stall every window). Ticks carry their send time, so that a backlog
read late (after a rebalance or a restart) is judged on when its ticks were sent, not on when they are read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import msgspec
from aiokafka.partitioner import murmur2

from streams.pipeline.codec import msgpack_codec
from streams.pipeline.events import MAX_DELTA_POSTS, CountDelta, WindowDelta
from streams.pipeline.territory import Territory
from streams.pipeline.windows import WindowSpec

GLOBAL_PARTITION = 0
"""The counting partition that also runs the global-surge detector (and so gets totals per territory)."""

SOURCE_SILENT_S = 30.0
"""A source whose ticks stopped this long before the other sources' latest tick (its worker died or lost the
partition) no longer holds the watermark back; its events, if it comes back, arrive as late events."""


class SourceClock(msgspec.Struct, array_like=True, gc=False):
    watermark: float  # latest event time the source has reported
    heard_at: float  # wall time of its last tick
    idle: bool = False  # the source had no events since its previous tick


class PartitionClock(msgspec.Struct, gc=False):
    sources: dict[int, SourceClock] = msgspec.field(default_factory=dict)
    totals: dict[int, int] = msgspec.field(default_factory=dict)  # window start -> comments, all territories
    next_close: int | None = None  # start of the earliest window not yet closed
    # window start -> territory code -> comments: kept only where ticks carry it (the global partition)
    by_territory: dict[int, dict[str, int]] = msgspec.field(default_factory=dict)

    def watermark(self, now: float, source_silent_s: float) -> float | None:
        """The lowest watermark of the sources that have events to give; the highest if none has."""
        busy = [
            s.watermark for s in self.sources.values() if not s.idle and now - s.heard_at <= source_silent_s
        ]
        if busy:
            return min(busy)
        # Every source is idle (their ticks advance with wall time) or silent: the latest word wins.
        return max((s.watermark for s in self.sources.values()), default=None)

    def apply_tick(
        self,
        source: int,
        watermark: float,
        totals: Iterable[tuple[int, int]],
        now: float,
        *,
        idle: bool,
        by_territory: Iterable[tuple[int, str, int]] = (),
    ) -> None:
        known = self.sources.get(source)
        # Watermarks never go back, even when a rebalance makes a source replay older events; nor does the
        # time a source was last heard from (a replayed tick was sent before the last one applied).
        high = max(watermark, known.watermark) if known is not None else watermark
        heard = max(now, known.heard_at) if known is not None else now
        self.sources[source] = SourceClock(high, heard, idle)
        for start, n in totals:
            self.totals[start] = self.totals.get(start, 0) + n
        for start, code, n in by_territory:
            window = self.by_territory.setdefault(start, {})
            window[code] = window.get(code, 0) + n

    def heard_until(self, wall_now: float) -> float:
        """The time the partition's ticks have reached: the latest time a source was heard from, never past
        ``wall_now``. Silence is measured against this, not against the wall clock: after a while without an
        owner (a rebalance, a slow restart) the agent reads a backlog of ticks sent long ago, and by the wall
        clock every source whose tick is further down the backlog would look silent, so windows closed ahead
        of comments still in the backlog (seen as under-counted burst windows after a restart)."""
        return min(wall_now, max((s.heard_at for s in self.sources.values()), default=wall_now))

    def is_late(self, window_start: int) -> bool:
        """A window already closed here: counts for it arrive too late to be counted."""
        return self.next_close is not None and window_start < self.next_close

    def due(self, spec: WindowSpec, now: float, source_silent_s: float, limit: int = 1440) -> list[int]:
        """Starts of the windows that became final, oldest first; marks them closed.

        ``limit`` bounds the catch-up after a long silence (a day of one-minute windows by default): older
        windows are skipped, not closed one by one.
        """
        mark = self.watermark(now, source_silent_s)
        if mark is None:
            return []
        if self.next_close is None:
            # First word from anyone: start with the oldest window that can still receive events.
            self.next_close = _align(mark - spec.lateness_s - spec.size_s, spec.hop_s)
        last_due = _align(mark - spec.lateness_s - spec.size_s, spec.hop_s)
        if last_due < self.next_close:
            return []
        first = max(self.next_close, last_due - (limit - 1) * spec.hop_s)
        due = list(range(first, last_due + 1, spec.hop_s))
        self.next_close = last_due + spec.hop_s
        return due

    def take_total(self, window_start: int) -> int:
        return self.totals.pop(window_start, 0)

    def take_by_territory(self, window_start: int) -> dict[str, int]:
        return self.by_territory.pop(window_start, {})

    def drop_totals_before(self, start: int) -> None:
        for old in [s for s in self.totals if s < start]:
            del self.totals[old]
        for old in [s for s in self.by_territory if s < start]:
            del self.by_territory[old]


def count_deltas(windows: dict[tuple[Territory, int], Counter[str]]) -> list[CountDelta]:
    """One delta per territory from a batch's per-window post counts (busiest posts first, bounded)."""
    by_territory: dict[Territory, list[WindowDelta]] = {}
    for (territory, start), posts in windows.items():
        delta = WindowDelta(start, sum(posts.values()), posts.most_common(MAX_DELTA_POSTS))
        by_territory.setdefault(territory, []).append(delta)
    return [
        CountDelta(territory=territory, windows=sorted(deltas, key=lambda d: d.start))
        for territory, deltas in by_territory.items()
    ]


def counting_partition(code: str, partitions: int) -> int:
    """The counts-topic partition that owns a territory: Kafka's default partitioner on the code as key
    (as when each territory's delta was sent keyed by its code), so ownership is the same everywhere."""
    hashed: int = murmur2(code.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def territory_totals(windows: dict[tuple[Territory, int], Counter[str]]) -> list[tuple[int, str, int]]:
    """``[window start, territory code, comments]`` of a batch, for the global detector's breadth test."""
    out: Counter[tuple[int, str]] = Counter()
    for (territory, start), posts in windows.items():
        out[(start, territory.code)] += sum(posts.values())
    return [(start, code, n) for (start, code), n in sorted(out.items()) if n > 0]


def window_totals(windows: dict[tuple[Territory, int], Counter[str]]) -> Counter[int]:
    totals: Counter[int] = Counter()
    for (_, start), posts in windows.items():
        totals[start] += sum(posts.values())
    return totals


def _align(t: float, hop: int) -> int:
    return int(t // hop) * hop


encode_clock, decode_clock = msgpack_codec(PartitionClock)
