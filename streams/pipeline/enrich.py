"""The enrichment step as a plain function over a batch of records: bytes in, bytes out.

No Faust and no Kafka here, so the whole per-event path (decode, validate, label, encode) is tested and
benchmarked without a broker; the loop in ``runtime.enrichment`` only moves batches between this and Kafka.
Every record ends up in exactly one of the two outputs, and nothing in this module raises for bad input.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from streams.pipeline.events import (
    DeadLetterReason,
    InvalidEvent,
    Source,
    decode_comment,
    encode_dead_letter,
    encode_enriched,
    event_seconds,
    ip_hash,
)
from streams.pipeline.geodb.labeller import Labeller
from streams.pipeline.territory import InvalidIP, Territory, UnknownReason, parse_ip
from streams.pipeline.windows import WindowSpec

log = logging.getLogger(__name__)

INVALID_IP_DETAIL = "ip: not an IPv4 or IPv6 address in standard notation"
# Most bytes of an input value, and of its key, a dead letter carries. Base64 makes them 4/3 as large and
# the key also goes as the record's key, and a dead letter must stay under the producer's max_request_size
# (≥ 1 MiB) and the broker's message.max.bytes (1 MiB by default): with the whole of a ~1 MB input value in
# it, the send failed and the worker stopped and, restarted, met the same message again (a crash loop on one
# poison pill). 384 KiB + 64 KiB come to ≈ 660 kB.
MAX_DEAD_LETTER_ORIGINAL = 384 * 1024
MAX_DEAD_LETTER_KEY = 64 * 1024


class ConsumedRecord(Protocol):
    """What enrichment and dead-lettering read of a consumed record: aiokafka's ConsumerRecord has it all,
    so the loop hands its records over as they come, without a copy per event."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | None: ...


@dataclass(slots=True)
class InRecord:
    """A ConsumedRecord made by hand (tests, benchmarks)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None


class OutRecord(NamedTuple):
    """A record to produce: enriched records go to the partition number their input came from."""

    partition: int
    key: bytes | None
    value: bytes


# OutRecord(...) runs a Python-level __new__; this builds the same tuple subclass in one C call.
_out_record = tuple.__new__


@dataclass(slots=True)
class BatchStats:
    """What one batch did, tallied in plain ints for :meth:`streams.runtime.metrics.Metrics.observe_batch`."""

    enriched: int = 0
    territories: Counter[Territory] = field(default_factory=Counter)
    unknown_reasons: Counter[UnknownReason] = field(default_factory=Counter)
    dead_reasons: Counter[DeadLetterReason] = field(default_factory=Counter)
    cache_hits: int = 0
    cache_misses: int = 0
    # Enriched, but not counted in any window: created_at too far ahead of the worker's clock.
    ahead: int = 0


@dataclass(slots=True)
class BatchResult:
    enriched: list[OutRecord]
    dead_letters: list[OutRecord]
    stats: BatchStats
    # For the counting stage (empty without a WindowSpec): comments per post, per (territory, window start),
    # and the latest event time seen per input partition.
    windows: dict[tuple[Territory, int], Counter[str]] = field(default_factory=dict)
    watermarks: dict[int, float] = field(default_factory=dict)


class Enricher:
    """Turns comment records into enriched records or dead letters.

    ``enriched_at`` is taken once per batch: batches last milliseconds, and a clock read per event
    would cost more than the cached label lookup.
    """

    def __init__(
        self,
        labeller: Labeller,
        *,
        max_message_bytes: int,
        ip_hash_key: bytes | None = None,
        windows: WindowSpec | None = None,
        max_ahead_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._labeller = labeller
        self._windows = windows
        self._max_bytes = max_message_bytes
        self._ip_hash_key = ip_hash_key
        self._clock = clock
        # One comment stamped a year ahead (a device with a wrong clock) would move its partition's
        # watermark a year on: every window up to it would close, and all later comments would be late.
        self._max_ahead_s = max_ahead_s if max_ahead_s > 0 else math.inf

    def process_batch(self, records: Sequence[ConsumedRecord]) -> BatchResult:
        enriched: list[OutRecord] = []
        dead: list[OutRecord] = []
        stats = BatchStats()
        wall = self._clock()
        now = datetime.fromtimestamp(wall, tz=UTC)
        horizon = wall + self._max_ahead_s
        ahead = 0
        labeller = self._labeller
        label, db_build = labeller.current  # one read: a swap cannot come between them
        hits_before, misses_before = labeller.cache_counts()
        spec = self._windows
        hop = spec.hop_s if spec is not None else 0
        max_bytes = self._max_bytes
        hash_key = self._ip_hash_key
        # Per event only appends to lists and one max; everything is tallied after the loop, over a
        # Counter of (territory code, window slot, post) that counts in C.
        counted: list[tuple[str, int, str]] = []
        by_code: dict[str, Territory] = {}
        unknown_reasons = stats.unknown_reasons
        watermarks: dict[int, float] = {}
        for record in records:
            try:
                comment = decode_comment(record.value, max_bytes=max_bytes)
                result = label(comment.ip)
            except InvalidEvent as exc:
                dead.append(self._dead_letter(record, exc.reason, exc.detail, now, stats))
                continue
            except InvalidIP:
                # A fixed detail: the exception's text quotes the input, and details reach logs and UIs.
                dead.append(self._dead_letter(record, "invalid_ip", INVALID_IP_DETAIL, now, stats))
                continue
            except Exception as exc:
                # The exception text may quote the payload; log only its type.
                log.exception(
                    "internal error enriching %s[%d]@%d", record.topic, record.partition, record.offset
                )
                dead.append(self._dead_letter(record, "internal_error", type(exc).__name__, now, stats))
                continue
            territory = result.territory
            if result.reason is not None:
                unknown_reasons[result.reason] += 1
            code = territory.code
            by_code[code] = territory
            value = encode_enriched(
                comment,
                territory,
                enriched_at=now,
                db_build=db_build,
                ip_hash=None if hash_key is None else ip_hash(hash_key, parse_ip(comment.ip)),
            )
            enriched.append(
                _out_record(OutRecord, (record.partition, record.key or comment.post_id.encode(), value))
            )
            if hop:
                event_time = event_seconds(comment.created_at)  # a dict hit: decode_comment checked it
                if event_time > horizon:
                    ahead += 1
                    continue
                counted.append((code, int(event_time // hop), comment.post_id))
                partition = record.partition
                if event_time > watermarks.get(partition, -1e18):
                    watermarks[partition] = event_time
            else:
                counted.append((code, 0, ""))
        stats.enriched = len(enriched)
        stats.ahead = ahead
        hits_after, misses_after = labeller.cache_counts()
        stats.cache_hits = max(0, hits_after - hits_before)
        stats.cache_misses = max(0, misses_after - misses_before)
        windows = self._tally(counted, by_code, stats.territories)
        return BatchResult(enriched, dead, stats, windows, watermarks)

    def _tally(
        self,
        counted: list[tuple[str, int, str]],
        by_code: dict[str, Territory],
        territories: Counter[Territory],
    ) -> dict[tuple[Territory, int], Counter[str]]:
        """Comments per territory, and per post in each (territory, window start).

        ``Counter(counted)`` counts in C; the loop after it runs once per distinct (territory, window slot,
        post), and then once per window slot.
        """
        per_slot: dict[tuple[str, int], Counter[str]] = {}
        for (code, slot, post), n in Counter(counted).items():
            posts = per_slot.get((code, slot))
            if posts is None:
                posts = per_slot[(code, slot)] = Counter()
            posts[post] = n
        spec = self._windows
        windows: dict[tuple[Territory, int], Counter[str]] = {}
        for (code, slot), posts in per_slot.items():
            territory = by_code[code]
            territories[territory] += posts.total()
            if spec is None:
                continue
            hopping = spec.hop_s != spec.size_s
            for start in spec.starts(slot * spec.hop_s):
                window = windows.get((territory, start))
                if window is None:
                    # Hopping: a slot is in several windows, and a window gathers several slots; each
                    # window gets its own Counter so that merging into one never changes another.
                    windows[(territory, start)] = posts.copy() if hopping else posts
                else:
                    window.update(posts)
        return windows

    def _dead_letter(
        self, record: ConsumedRecord, reason: DeadLetterReason, detail: str, now: datetime, stats: BatchStats
    ) -> OutRecord:
        stats.dead_reasons[reason] += 1
        source = Source(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
        )
        original, key = record.value, record.key
        cut = MAX_DEAD_LETTER_ORIGINAL
        if original is not None and len(original) > cut:
            detail = f"original cut to its first {cut} of {len(original)} bytes; {detail}"
            original = original[:cut]
        if key is not None and len(key) > MAX_DEAD_LETTER_KEY:
            detail = f"key cut to its first {MAX_DEAD_LETTER_KEY} of {len(key)} bytes; {detail}"
            key = key[:MAX_DEAD_LETTER_KEY]
        value = encode_dead_letter(
            reason=reason,
            detail=detail,
            original=original,
            original_key=key,
            source=source,
            failed_at=now,
        )
        return OutRecord(record.partition, key, value)
