"""The enrichment step as a plain function over a batch of records: bytes in, bytes out.

No Faust and no Kafka here, so the whole per-event path (decode, validate, label, encode) is tested and
benchmarked without a broker; the agent in :mod:`streams.agents` only moves batches between this and Kafka.
Every record ends up in exactly one of the two outputs, and nothing in this module raises for bad input.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.events import (
    Comment,
    DeadLetterReason,
    InvalidEvent,
    Source,
    decode_comment,
    encode_dead_letter,
    encode_enriched,
    ip_hash,
)
from streams.geoip import Labeller
from streams.territory import InvalidIP, Territory, UnknownReason, parse_ip
from streams.windows import WindowSpec

log = logging.getLogger(__name__)

INVALID_IP_DETAIL = "ip: not an IPv4 or IPv6 address in standard notation"


@dataclass(slots=True)
class InRecord:
    """A consumed Kafka record, reduced to what enrichment and dead-lettering need."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(slots=True)
class OutRecord:
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class BatchStats:
    """What one batch did, tallied in plain ints for :meth:`streams.metrics.Metrics.observe_batch`."""

    enriched: int = 0
    territories: Counter[Territory] = field(default_factory=Counter)
    unknown_reasons: Counter[UnknownReason] = field(default_factory=Counter)
    dead_reasons: Counter[DeadLetterReason] = field(default_factory=Counter)
    cache_hits: int = 0
    cache_misses: int = 0


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._labeller = labeller
        self._windows = windows
        self._max_bytes = max_message_bytes
        self._ip_hash_key = ip_hash_key
        self._clock = clock

    def process_batch(self, records: Sequence[InRecord]) -> BatchResult:
        enriched: list[OutRecord] = []
        dead: list[OutRecord] = []
        stats = BatchStats()
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        labeller = self._labeller
        label = labeller.label
        db_build = labeller.db.build
        territories = stats.territories
        hits_before, misses_before = labeller.cache_counts()
        spec = self._windows
        windows: dict[tuple[Territory, int], Counter[str]] = {}
        watermarks: dict[int, float] = {}
        for record in records:
            try:
                comment = decode_comment(record.value, max_bytes=self._max_bytes)
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
            territories[territory] += 1
            if result.reason is not None:
                stats.unknown_reasons[result.reason] += 1
            value = encode_enriched(
                comment,
                territory,
                enriched_at=now,
                db_build=db_build,
                ip_hash=self._hash(comment),
            )
            enriched.append(OutRecord(record.key or comment.post_id.encode(), value))
            if spec is not None:
                event_time = comment.created_at.timestamp()
                if event_time > watermarks.get(record.partition, -1e18):
                    watermarks[record.partition] = event_time
                for start in spec.starts(event_time):
                    posts = windows.get((territory, start))
                    if posts is None:
                        posts = windows[(territory, start)] = Counter()
                    posts[comment.post_id] += 1
        stats.enriched = len(enriched)
        hits_after, misses_after = labeller.cache_counts()
        stats.cache_hits = max(0, hits_after - hits_before)
        stats.cache_misses = max(0, misses_after - misses_before)
        return BatchResult(enriched, dead, stats, windows, watermarks)

    def _hash(self, comment: Comment) -> str | None:
        if self._ip_hash_key is None:
            return None
        return ip_hash(self._ip_hash_key, parse_ip(comment.ip))

    def _dead_letter(
        self, record: InRecord, reason: DeadLetterReason, detail: str, now: datetime, stats: BatchStats
    ) -> OutRecord:
        stats.dead_reasons[reason] += 1
        source = Source(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
        )
        value = encode_dead_letter(
            reason=reason,
            detail=detail,
            original=record.value,
            original_key=record.key,
            source=source,
            failed_at=now,
        )
        return OutRecord(record.key, value)
