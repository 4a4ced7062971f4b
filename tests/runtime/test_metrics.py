"""runtime.metrics: series at zero from the start, batch and reload observation, naming conventions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.pipeline.enrich import BatchStats, Enricher, InRecord
from streams.pipeline.events import DEAD_LETTER_REASONS
from streams.pipeline.geodb.labeller import Labeller, ReloadResult, compile_files
from streams.pipeline.territory import UNKNOWN, UNKNOWN_REASONS, Territory
from streams.runtime.metrics import HotHistogram, Metrics


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_series_exist_at_zero_before_any_event(metrics: Metrics) -> None:
    for outcome in ("enriched", "dead_lettered"):
        assert value(metrics, "shudi_events_total", outcome=outcome) == 0.0
    for reason in DEAD_LETTER_REASONS:
        assert value(metrics, "shudi_dead_letters_total", reason=reason) == 0.0
    for unknown in UNKNOWN_REASONS:
        assert value(metrics, "shudi_geoip_unknown_lookups_total", reason=unknown) == 0.0
    for result in ("hit", "miss"):
        assert value(metrics, "shudi_geoip_cache_lookups_total", result=result) == 0.0
    # the per-database series exist once the table is known (observe_table, at start): see test_observe_table
    assert value(metrics, "shudi_geoip_lookup_seconds_count") == 0.0
    assert value(metrics, "shudi_batch_processing_seconds_count") == 0.0


def test_two_registries_are_independent() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())  # no "Duplicated timeseries"
    a.observe_batch(BatchStats(enriched=3, territories=Counter({UNKNOWN: 3})))
    assert value(a, "shudi_events_total", outcome="enriched") == 3
    assert value(b, "shudi_events_total", outcome="enriched") == 0


def _enc(ip: str, n: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{n}",
            "user_id": "u",
            "post_id": "p",
            "text": "t",
            "ip": ip,
            "created_at": "2026-11-25T10:00:00Z",
        }
    ).encode()


def test_observe_batch_of_a_real_batch(metrics: Metrics, fixture_db_path: Path) -> None:
    enricher = Enricher(Labeller.open(fixture_db_path, 64), max_message_bytes=4096)
    ips = ["1.0.1.7", "1.0.1.7", "36.0.1.7", "9.9.9.9", "10.0.0.1", "10.0.0.1"]
    values = [_enc(ip, i) for i, ip in enumerate(ips)] + [b"", None, b"{", _enc("127.1", 9)]
    records = [InRecord("t", 0, i, None, v) for i, v in enumerate(values)]
    result = enricher.process_batch(records)
    metrics.observe_batch(result.stats)

    assert value(metrics, "shudi_events_total", outcome="enriched") == 6
    assert value(metrics, "shudi_events_total", outcome="dead_lettered") == 4
    assert value(metrics, "shudi_dead_letters_total", reason="empty") == 2
    assert value(metrics, "shudi_dead_letters_total", reason="invalid_json") == 1
    assert value(metrics, "shudi_dead_letters_total", reason="invalid_ip") == 1
    for reason in ("schema", "too_large", "invalid_encoding", "internal_error"):
        assert value(metrics, "shudi_dead_letters_total", reason=reason) == 0
    assert value(metrics, "shudi_territory_events_total", territory="CN-GD", scope="domestic") == 2
    assert value(metrics, "shudi_territory_events_total", territory="HK", scope="special_region") == 1
    assert value(metrics, "shudi_territory_events_total", territory="ZZ", scope="unknown") == 3
    assert value(metrics, "shudi_geoip_unknown_lookups_total", reason="not_found") == 1
    assert value(metrics, "shudi_geoip_unknown_lookups_total", reason="private") == 2
    assert value(metrics, "shudi_geoip_unknown_lookups_total", reason="loopback") == 0
    # distinct texts looked up: 1.0.1.7, 36.0.1.7, 9.9.9.9, 10.0.0.1, 127.1 (invalid: a miss too)
    assert value(metrics, "shudi_geoip_cache_lookups_total", result="miss") == 5
    assert value(metrics, "shudi_geoip_cache_lookups_total", result="hit") == 2

    metrics.observe_batch(result.stats)  # counters accumulate
    assert value(metrics, "shudi_events_total", outcome="enriched") == 12
    assert value(metrics, "shudi_dead_letters_total", reason="empty") == 4


def test_observe_batch_of_hand_made_stats(metrics: Metrics) -> None:
    gd = Territory("CN-GD", "广东", "Guangdong", "domestic", "CN")
    stats = BatchStats(
        enriched=7,
        territories=Counter({gd: 5, UNKNOWN: 2}),
        unknown_reasons=Counter({"db_error": 2}),
        dead_reasons=Counter({"schema": 3, "too_large": 1}),
        cache_hits=11,
        cache_misses=0,
    )
    metrics.observe_batch(stats)
    assert value(metrics, "shudi_events_total", outcome="enriched") == 7
    assert value(metrics, "shudi_events_total", outcome="dead_lettered") == 4
    assert value(metrics, "shudi_dead_letters_total", reason="schema") == 3
    assert value(metrics, "shudi_dead_letters_total", reason="too_large") == 1
    assert value(metrics, "shudi_territory_events_total", territory="CN-GD", scope="domestic") == 5
    assert value(metrics, "shudi_geoip_unknown_lookups_total", reason="db_error") == 2
    assert value(metrics, "shudi_geoip_cache_lookups_total", result="hit") == 11
    assert value(metrics, "shudi_geoip_cache_lookups_total", result="miss") == 0


def test_observe_empty_batch_changes_nothing(metrics: Metrics) -> None:
    before = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in metrics.registry.collect()
        for s in f.samples
    }
    metrics.observe_batch(BatchStats())
    after = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in metrics.registry.collect()
        for s in f.samples
    }
    for k in before.keys() | after.keys():
        if k[0].endswith("_created"):
            continue
        assert before.get(k) == after.get(k), k


def test_observe_reload(metrics: Metrics) -> None:
    db = "GeoLite2-City.mmdb"
    metrics.observe_reload(ReloadResult("reloaded", db, "GeoIP2-City 2026-01-01T00:00:00Z", 1_767_225_600))
    assert value(metrics, "shudi_geoip_database_reloads_total", db=db, result="success") == 1
    assert value(metrics, "shudi_geoip_database_reloads_total", db=db, result="failure") == 0
    assert value(metrics, "shudi_geoip_database_build_timestamp_seconds", db=db) == 1_767_225_600

    # failed: the old database stays in use, and its build is what the gauge shows
    metrics.observe_reload(
        ReloadResult("failed", db, "GeoIP2-City 2026-01-01T00:00:00Z", 1_767_225_600, "corrupt")
    )
    assert value(metrics, "shudi_geoip_database_reloads_total", db=db, result="success") == 1
    assert value(metrics, "shudi_geoip_database_reloads_total", db=db, result="failure") == 1
    assert value(metrics, "shudi_geoip_database_build_timestamp_seconds", db=db) == 1_767_225_600

    metrics.observe_reload(ReloadResult("unchanged", db, "GeoIP2-City 2026-02-01T00:00:00Z", 1_769_904_000))
    assert value(metrics, "shudi_geoip_database_reloads_total", db=db, result="success") == 1
    assert value(metrics, "shudi_geoip_database_build_timestamp_seconds", db=db) == 1_767_225_600

    metrics.observe_reload(ReloadResult("reloaded", db, "GeoIP2-City 2026-02-01T00:00:00Z", 1_769_904_000))
    assert value(metrics, "shudi_geoip_database_reloads_total", db=db, result="success") == 2
    assert value(metrics, "shudi_geoip_database_build_timestamp_seconds", db=db) == 1_769_904_000

    # a second file has its own series
    metrics.observe_reload(
        ReloadResult("failed", "ip2region_v4.xdb", "ip2region-xdb-v3-IPv4 …", 7, "corrupt")
    )
    assert value(metrics, "shudi_geoip_database_reloads_total", db="ip2region_v4.xdb", result="failure") == 1
    assert value(metrics, "shudi_geoip_database_reloads_total", db=db, result="failure") == 1


def test_observe_table(metrics: Metrics, fixture_db_path: Path) -> None:
    table = compile_files(fixture_db_path)
    metrics.observe_table(table, ["fixture.mmdb"])
    assert value(metrics, "shudi_geoip_database_build_timestamp_seconds", db="fixture.mmdb") == 1_767_225_600
    assert value(metrics, "shudi_geoip_database_reloads_total", db="fixture.mmdb", result="failure") == 0
    assert value(metrics, "shudi_geoip_table_ranges", family="4") == table.size[0]
    assert value(metrics, "shudi_geoip_table_compile_seconds") == table.compile_seconds


def test_lookup_histogram_observes_seconds(metrics: Metrics) -> None:
    metrics.lookup_seconds.observe(2e-6)
    assert value(metrics, "shudi_geoip_lookup_seconds_count") == 1
    assert value(metrics, "shudi_geoip_lookup_seconds_sum") == pytest.approx(2e-6)
    assert value(metrics, "shudi_geoip_lookup_seconds_bucket", le="2.5e-06") == 1
    assert value(metrics, "shudi_geoip_lookup_seconds_bucket", le="1e-06") == 0


# --- conventions --------------------------------------------------------------------------------------------

FORBIDDEN_LABELS = {"post_id", "user_id", "ip", "event_id"}


def test_naming_conventions(metrics: Metrics) -> None:
    families = list(metrics.registry.collect())
    assert families
    for family in families:
        assert family.name.startswith("shudi_"), family.name
        for sample in family.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (sample.name, sample.labels)
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
    names = {f.name for f in families}
    assert "shudi_geoip_lookup_seconds" in names
    types = {f.name: f.type for f in families}
    assert types["shudi_geoip_lookup_seconds"] == "histogram"
    assert types["shudi_geoip_database_build_timestamp_seconds"] == "gauge"


def test_lookup_histogram_buckets_are_seconds(metrics: Metrics) -> None:
    bounds = [
        float(s.labels["le"])
        for f in metrics.registry.collect()
        if f.name == "shudi_geoip_lookup_seconds"
        for s in f.samples
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
    ]
    assert bounds == sorted(bounds)
    # a cache-miss read takes microseconds: in seconds the buckets are well under one, not 1..10000 (µs/ms)
    assert 0 < bounds[0] <= 1e-5
    assert bounds[-1] <= 1.0


BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 1e-3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*BUCKETS, 0.0, 1.0]) | st.floats(0, 2, allow_nan=False), max_size=50))
def test_hot_histogram_exposes_what_prometheus_histogram_does(observations: list[float]) -> None:
    """Same buckets (boundaries included: le is "less than or equal"), count and sum as the library's."""
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h_seconds", "doc", buckets=BUCKETS, registry=theirs)
    hot = HotHistogram("h_seconds", "doc", buckets=BUCKETS)
    ours.register(hot)
    for v in observations:
        reference.observe(v)
        hot.observe(v)
    # `shudi worker` turns `_created` series off; the library's histogram has one here.
    expected = [line for line in generate_latest(theirs).splitlines() if b"_created" not in line]
    assert generate_latest(ours).splitlines() == expected
