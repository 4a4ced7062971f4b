"""Prometheus metrics of a shudi worker.

Conventions (prometheus/client_python): the ``shudi_`` namespace, base units, counters ending in ``_total``,
label values created up front so that a series exists at 0 before its first event, and a registry passed in
so that tests read values from a fresh registry. Labels are bounded: territory codes (a few hundred), scopes,
reasons from fixed vocabularies. Never a post id, a user id or an address.

The per-event path does not touch these objects: it counts in plain ints and :meth:`Metrics.observe_batch`
adds the totals once per batch, because a labelled ``inc()`` costs about as much as a cached label lookup.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streams.pipeline.enrich import BatchStats
from streams.pipeline.events import DEAD_LETTER_REASONS
from streams.pipeline.geodb.labeller import ReloadResult
from streams.pipeline.geodb.table import TerritoryTable
from streams.pipeline.territory import UNKNOWN_REASONS, Territory

NAMESPACE = "shudi"


class HotHistogram(Collector):
    """A histogram without labels for a path that observes once per event.

    prometheus_client's Histogram takes a lock and two ``inc`` calls per observation, 1.5 µs here: a tenth
    of what a cache miss costs. This one keeps per-bucket counts in a list (one bisect, two additions) and
    builds the cumulative buckets only when scraped. Observations come from the event-loop thread alone.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = sorted(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative = list(itertools.accumulate(self._counts))
        go = floatToGoString  # untyped upstream
        buckets = [(go(b), n) for b, n in zip(self._bounds, cumulative, strict=False)]  # type: ignore[no-untyped-call]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=self._sum)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)


TERRITORY_LABELS = ("territory", "scope")


@dataclass(frozen=True)
class _Declare:
    """Metric constructors with the namespace and the registry given once: ``counter(name, ...)`` is
    ``shudi_<name>_total`` on ``registry``."""

    registry: CollectorRegistry

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, namespace=NAMESPACE, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, namespace=NAMESPACE, registry=self.registry)

    def histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(name, documentation, namespace=NAMESPACE, registry=self.registry, buckets=buckets)

    def hot_histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> HotHistogram:
        histogram = HotHistogram(f"{NAMESPACE}_{name}", documentation, buckets)
        self.registry.register(histogram)
        return histogram


class Metrics:
    """Every metric a worker exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._territory_children: dict[Territory, Any] = {}
        on = _Declare(registry)
        self._declare_enrichment(on)
        self._declare_counting(on)
        # Series that exist at 0 before their first event (so rate() and increase() see the first one).
        precreated: tuple[tuple[Counter, Iterable[str]], ...] = (
            (self.events, ("enriched", "dead_lettered")),
            (self.dead_letters, DEAD_LETTER_REASONS),
            (self.unknown_territory, UNKNOWN_REASONS),
            (self.cache_lookups, ("hit", "miss")),
        )
        for metric, values in precreated:
            for label in values:
                metric.labels(label)

    def _declare_enrichment(self, on: _Declare) -> None:
        """The enrichment loop's metrics (every worker, for the input partitions it consumes)."""
        counter, gauge = on.counter, on.gauge
        self.events = counter("events", "Comment events consumed, by outcome.", ["outcome"])
        self.dead_letters = counter(
            "dead_letters", "Events sent to the dead-letter topic, by reason.", ["reason"]
        )
        self.territory_events = counter(
            "territory_events", "Enriched comment events by territory label.", TERRITORY_LABELS
        )
        self.unknown_territory = counter(
            "geoip_unknown_lookups", "Lookups that ended as the unknown territory, by reason.", ["reason"]
        )
        self.lookup_seconds = on.hot_histogram(
            "geoip_lookup_seconds",
            "Time of territory-table lookups: one cache miss in 16, sampled (hits take under a microsecond).",
            buckets=(1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2),
        )
        self.cache_lookups = counter("geoip_cache_lookups", "Label lookups by cache result.", ["result"])
        # `db` is the file name of one configured database: bounded by SHUDI_GEOIP_DB's list.
        self.db_build = gauge(
            "geoip_database_build_timestamp_seconds",
            "Build time of each GeoIP database in use (Unix seconds).",
            ["db"],
        )
        self.db_reloads = counter(
            "geoip_database_reloads",
            "Attempts to load a replaced GeoIP database file, by file and result.",
            ["db", "result"],
        )
        self.table_ranges = gauge(
            "geoip_table_ranges",
            "Address ranges in the compiled territory table, by address family.",
            ["family"],
        )
        self.table_compile_seconds = gauge(
            "geoip_table_compile_seconds",
            "Time the last compile of the territory table took (at start or on a reload).",
        )
        self.batch_seconds = on.histogram(
            "batch_processing_seconds",
            "Time to decode, validate, label and produce one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.commit_failures = counter(
            "commit_failures",
            "Offset commits refused after a rebalance (the batch is delivered again: at-least-once).",
        )
        self.client_resets = counter(
            "enrichment_client_resets",
            "Times the enrichment loop's Kafka clients were remade after a wait on the broker ran past its "
            "bound (the batches since the last commit are delivered again).",
        )
        self.last_batch = gauge(
            "last_batch_timestamp_seconds", "When the worker last finished a batch (Unix seconds)."
        )
        self.consumer_lag = gauge(
            "consumer_lag_messages",
            "Messages between the enrichment consumer's committed offset and the partition's end.",
            ["topic", "partition"],
        )

    def _declare_counting(self, on: _Declare) -> None:
        """Counting and burst detection (exported by the worker that owns the territory's partition)."""
        counter, gauge, territory = on.counter, on.gauge, TERRITORY_LABELS
        self.late_events = counter(
            "late_events",
            "Comments whose event-time window had closed when their count arrived (in no window).",
        )
        self.events_ahead = counter(
            "events_ahead_of_clock",
            "Comments enriched but counted in no window: created_at more than SHUDI_MAX_EVENT_AHEAD_S "
            "ahead of the worker's clock.",
        )
        self.windows_closed = counter("windows_closed", "Event-time windows closed.")
        self.bad_count_messages = counter(
            "count_messages_invalid",
            "Records of the internal counts topic that could not be decoded (skipped).",
        )
        self.window_events = gauge(
            "window_events", "Comments from the territory in the last closed window.", territory
        )
        self.window_baseline = gauge(
            "window_baseline_events",
            "The detector's expected comments per window for the territory.",
            territory,
        )
        self.burst_score = gauge(
            "burst_score",
            "The territory's score against its own baseline in the last closed window.",
            territory,
        )
        self.burst_share_score = gauge(
            "burst_share_score",
            "The territory's share-of-all-comments score in the last closed window.",
            territory,
        )
        self.burst_active = gauge(
            "burst_active", "1 while a regional burst from the territory is active, else 0.", territory
        )
        self.bursts_started = counter("bursts_started", "Regional bursts started, by territory.", territory)
        self.global_window_events = gauge(
            "global_window_events", "Comments of all territories in the last closed window."
        )
        self.global_window_baseline = gauge(
            "global_window_baseline_events", "Expected comments of all territories per window."
        )
        self.global_surge_score = gauge(
            "global_surge_score", "Score of all comments against their baseline in the last closed window."
        )
        self.global_surge_active = gauge(
            "global_surge_active", "1 while a global surge (all territories together) is active, else 0."
        )
        self.global_surges_started = counter("global_surges_started", "Global surges started.")
        self.event_time_lag = gauge(
            "event_time_lag_seconds",
            "Wall time minus the event-time watermark of the counting partitions this worker owns (max).",
        )

    def set_lag(self, lags: Mapping[TopicPartition, int]) -> None:
        for tp, lag in lags.items():
            self.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    def forget_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        """A partition that moved to another worker is that worker's to export (so `sum` stays right)."""
        for tp in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(tp.topic, str(tp.partition))

    def observe_table(self, table: TerritoryTable, names: Sequence[str]) -> None:
        """The table in use and the databases it was compiled from (``names``: their metrics labels)."""
        v4, v6, inner = table.size
        self.table_ranges.labels("4").set(v4)
        self.table_ranges.labels("6").set(v6 + inner)
        self.table_compile_seconds.set(table.compile_seconds)
        for name, source in zip(names, table.sources, strict=True):
            self.db_build.labels(name).set(source.build_epoch)
            for result in ("success", "failure"):
                self.db_reloads.labels(name, result)

    def observe_reload(self, result: ReloadResult) -> None:
        if result.status == "unchanged":
            return
        for outcome in ("success", "failure"):  # both series of a file exist from its first reload
            self.db_reloads.labels(result.db, outcome)
        self.db_reloads.labels(result.db, "success" if result.status == "reloaded" else "failure").inc()
        self.db_build.labels(result.db).set(result.build_epoch)

    def observe_batch(self, stats: BatchStats) -> None:
        """Add one batch's tallies: a handful of ``inc`` calls per batch instead of several per event."""
        if stats.enriched:
            self.events.labels("enriched").inc(stats.enriched)
        dead = sum(stats.dead_reasons.values())
        if dead:
            self.events.labels("dead_lettered").inc(dead)
        for reason, n in stats.dead_reasons.items():
            self.dead_letters.labels(reason).inc(n)
        for territory, n in stats.territories.items():
            child = self._territory_children.get(territory)
            if child is None:
                # labels() costs a few µs and a batch can hold a couple of hundred territories.
                child = self._territory_children[territory] = self.territory_events.labels(
                    territory.code, territory.scope
                )
            child.inc(n)
        for unknown, n in stats.unknown_reasons.items():
            self.unknown_territory.labels(unknown).inc(n)
        if stats.ahead:
            self.events_ahead.inc(stats.ahead)
        if stats.cache_hits:
            self.cache_lookups.labels("hit").inc(stats.cache_hits)
        if stats.cache_misses:
            self.cache_lookups.labels("miss").inc(stats.cache_misses)
