"""streams.pipeline.clock (PartitionClock, count_deltas, window_totals); counts/burst topic schemas."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from streams.pipeline.clock import (
    SOURCE_SILENT_S,
    PartitionClock,
    count_deltas,
    counting_partition,
    decode_clock,
    encode_clock,
    territory_totals,
    window_totals,
)
from streams.pipeline.events import (
    MAX_DELTA_POSTS,
    BurstEvent,
    CountBatch,
    Tick,
    TopPost,
    decode_count_message,
    encode_burst,
    encode_count_message,
    load_schema,
)
from streams.pipeline.territory import DIVISIONS, UNKNOWN, Territory
from streams.pipeline.windows import WindowSpec

T0 = 1_767_225_600  # a multiple of 60
SPEC = WindowSpec(size_s=60, hop_s=60, lateness_s=30)
NOW = 1_800_000_000.0  # wall time

HK = Territory("HK", "中国香港", "Hong Kong", "special_region", "HK")
US = Territory("US", "美国", "United States", "overseas", "US")
GD = next(d.territory for d in DIVISIONS if d.iso == "CN-GD")
TERRITORIES = [d.territory for d in DIVISIONS[:6]] + [HK, US, UNKNOWN]


def align(t: float, hop: int = 60) -> int:
    return int(t // hop) * hop


# --- PartitionClock: the watermark -------------------------------------------------------------------------


def test_no_sources_no_watermark_nothing_due() -> None:
    clock = PartitionClock()
    assert clock.watermark(NOW, SOURCE_SILENT_S) is None
    assert clock.due(SPEC, NOW, SOURCE_SILENT_S) == []
    assert clock.next_close is None


def test_watermark_is_the_lowest_busy_source() -> None:
    clock = PartitionClock()
    for source, mark in ((0, 1000.0), (1, 940.5), (2, 1200.0)):
        clock.apply_tick(source, mark, [], NOW, idle=False)
    assert clock.watermark(NOW, SOURCE_SILENT_S) == 940.5


def test_idle_source_does_not_hold_the_watermark_back() -> None:
    clock = PartitionClock()
    clock.apply_tick(0, 1000.0, [], NOW, idle=False)
    clock.apply_tick(1, 500.0, [], NOW, idle=True)
    clock.apply_tick(2, 1100.0, [], NOW, idle=False)
    assert clock.watermark(NOW, SOURCE_SILENT_S) == 1000.0
    # Busy again: it holds the others back again.
    clock.apply_tick(1, 600.0, [], NOW, idle=False)
    assert clock.watermark(NOW, SOURCE_SILENT_S) == 600.0


def test_silent_source_stops_holding_the_watermark_back() -> None:
    clock = PartitionClock()
    clock.apply_tick(0, 500.0, [], NOW, idle=False)  # then stops ticking
    clock.apply_tick(1, 1000.0, [], NOW + SOURCE_SILENT_S, idle=False)
    assert clock.watermark(NOW + SOURCE_SILENT_S, SOURCE_SILENT_S) == 500.0  # exactly at the limit: held
    later = NOW + SOURCE_SILENT_S + 1
    clock.apply_tick(1, 1010.0, [], later, idle=False)
    assert clock.watermark(later, SOURCE_SILENT_S) == 1010.0


def test_all_idle_or_silent_gives_the_highest() -> None:
    clock = PartitionClock()
    clock.apply_tick(0, 700.0, [], NOW, idle=True)
    clock.apply_tick(1, 900.0, [], NOW, idle=True)
    assert clock.watermark(NOW, SOURCE_SILENT_S) == 900.0
    clock.apply_tick(2, 800.0, [], NOW, idle=False)
    assert clock.watermark(NOW, SOURCE_SILENT_S) == 800.0
    # Everyone silent: the latest word wins.
    assert clock.watermark(NOW + SOURCE_SILENT_S + 1, SOURCE_SILENT_S) == 900.0


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1e9), st.booleans()), min_size=1, max_size=40))
def test_source_watermarks_never_go_back(ticks: list[tuple[int, float, bool]]) -> None:
    clock = PartitionClock()
    highest: dict[int, float] = {}
    for source, mark, idle in ticks:
        clock.apply_tick(source, mark, [], NOW, idle=idle)
        highest[source] = max(mark, highest.get(source, mark))
        assert clock.sources[source].watermark == highest[source]
        assert clock.sources[source].idle == idle
    busy = [highest[s] for s, c in clock.sources.items() if not c.idle]
    expected = min(busy) if busy else max(highest.values())
    assert clock.watermark(NOW, SOURCE_SILENT_S) == expected


def test_replayed_older_tick_does_not_move_the_watermark_back() -> None:
    clock = PartitionClock()
    clock.apply_tick(0, 1000.0, [], NOW, idle=False)
    clock.apply_tick(0, 900.0, [], NOW + 1, idle=False)
    assert clock.watermark(NOW + 1, SOURCE_SILENT_S) == 1000.0
    assert clock.sources[0].heard_at == NOW + 1  # but it was heard


# --- PartitionClock: closing windows ----------------------------------------------------------------------


def tick(clock: PartitionClock, mark: float, now: float = NOW, limit: int = 1440) -> list[int]:
    clock.apply_tick(0, mark, [], now, idle=False)
    return clock.due(SPEC, now, SOURCE_SILENT_S, limit=limit)


def test_first_tick_initialises_without_closing_the_history() -> None:
    clock = PartitionClock()
    mark = T0 + 9.5
    # Only the latest window that is already final, not every window since the epoch.
    assert tick(clock, mark) == [align(mark - SPEC.lateness_s - SPEC.size_s)]
    assert clock.next_close == align(mark - SPEC.lateness_s - SPEC.size_s) + SPEC.hop_s


def test_due_closes_each_window_once_in_order_when_final() -> None:
    clock = PartitionClock()
    assert tick(clock, T0 + 9.5) == [T0 - 120]
    assert tick(clock, T0 + 29.9) == []  # T0 - 60 closes at T0 + 30
    assert tick(clock, T0 + 30) == [T0 - 60]
    assert tick(clock, T0 + 30) == []  # once
    assert tick(clock, T0 + 89.99) == []
    assert tick(clock, T0 + 150) == [T0, T0 + 60]
    assert tick(clock, T0 + 100) == []  # an older tick changes nothing


@given(st.lists(st.floats(min_value=0, max_value=3000), min_size=1, max_size=30), st.integers(1, 5))
def test_due_property(steps: list[float], k: int) -> None:
    spec = WindowSpec(size_s=60 * k, hop_s=60, lateness_s=30)
    clock = PartitionClock()
    mark = float(T0)
    closed: list[int] = []
    for step in steps:
        mark += step
        clock.apply_tick(0, mark, [], NOW, idle=False)
        due = clock.due(spec, NOW, SOURCE_SILENT_S)
        for start in due:
            assert start % spec.hop_s == 0
            assert spec.closes_at(start) <= mark
        # The next window is not final yet.
        assert clock.next_close is not None
        assert spec.closes_at(clock.next_close) > mark
        closed.extend(due)
    assert closed == list(range(closed[0], closed[-1] + 1, spec.hop_s))  # contiguous, ordered, no repeats


def test_catch_up_is_capped_at_limit() -> None:
    clock = PartitionClock()
    tick(clock, T0 + 9.5, limit=10)
    late_mark = T0 + 100 * 60 + 45.0  # a hundred windows later
    due = tick(clock, late_mark, limit=10)
    last = align(late_mark - SPEC.lateness_s - SPEC.size_s)
    assert due == list(range(last - 9 * 60, last + 1, 60))  # the latest ten; older ones are skipped
    assert clock.next_close == last + 60
    assert tick(clock, late_mark + 60, limit=10) == [last + 60]


def test_is_late_after_closing() -> None:
    clock = PartitionClock()
    assert not clock.is_late(T0 - 10_000 * 60)  # nothing closed yet
    tick(clock, T0 + 9.5)
    tick(clock, T0 + 150)  # closes up to T0 + 60
    assert clock.is_late(T0 + 60)
    assert clock.is_late(T0 - 600)
    assert not clock.is_late(T0 + 120)


def test_totals_accumulate_and_are_taken_once() -> None:
    clock = PartitionClock()
    clock.apply_tick(0, T0 + 10, [(T0, 5)], NOW, idle=False)
    clock.apply_tick(1, T0 + 12, [(T0, 7), (T0 + 60, 1)], NOW, idle=False)
    clock.apply_tick(0, T0 + 20, [(T0, 3)], NOW + 1, idle=False)
    assert clock.take_total(T0) == 5 + 7 + 3
    assert clock.take_total(T0) == 0
    assert clock.take_total(T0 + 60) == 1
    assert clock.take_total(T0 + 120) == 0


def test_drop_totals_before() -> None:
    clock = PartitionClock(
        totals={T0 - 60: 4, T0: 5, T0 + 60: 6}, by_territory={T0 - 60: {"HK": 4}, T0: {"HK": 5}}
    )
    clock.drop_totals_before(T0)
    assert clock.totals == {T0: 5, T0 + 60: 6}
    assert clock.by_territory == {T0: {"HK": 5}}


def test_totals_per_territory_accumulate_and_are_taken_once() -> None:
    clock = PartitionClock()
    clock.apply_tick(0, T0 + 10, [(T0, 5)], NOW, idle=False, by_territory=[(T0, "CN-GD", 3), (T0, "HK", 2)])
    clock.apply_tick(1, T0 + 12, [(T0, 7)], NOW, idle=False, by_territory=[(T0, "CN-GD", 7)])
    clock.apply_tick(1, T0 + 13, [(T0, 1)], NOW, idle=False)  # a tick without the breakdown adds nothing
    assert clock.take_by_territory(T0) == {"CN-GD": 10, "HK": 2}
    assert clock.take_by_territory(T0) == {}
    assert decode_clock(encode_clock(clock)) == clock


def test_territory_totals_are_the_batch_counts_per_window_and_territory() -> None:
    windows = {
        (GD, T0): Counter({"p1": 3, "p2": 4}),
        (HK, T0): Counter({"p3": 2}),
        (GD, T0 + 60): Counter({"p1": 1}),
    }
    assert territory_totals(windows) == [(T0, "CN-GD", 7), (T0, "HK", 2), (T0 + 60, "CN-GD", 1)]
    assert sum(n for _, _, n in territory_totals(windows)) == sum(window_totals(windows).values())


@given(
    st.dictionaries(
        st.integers(0, 64),
        st.tuples(st.floats(0, 2e9), st.floats(0, 2e9), st.booleans()),
        max_size=8,
    ),
    st.dictionaries(st.integers(0, 2**40), st.integers(1, 2**40), max_size=8),
    st.none() | st.integers(0, 2**40),
)
def test_clock_round_trip(
    sources: dict[int, tuple[float, float, bool]], totals: dict[int, int], next_close: int | None
) -> None:
    clock = PartitionClock(totals=dict(totals), next_close=next_close)
    for source, (mark, heard, idle) in sources.items():
        clock.apply_tick(source, mark, [], heard, idle=idle)
    back = decode_clock(encode_clock(clock))
    assert back == clock
    assert back.next_close == next_close
    assert back.totals == totals
    assert {s: (c.watermark, c.heard_at, c.idle) for s, c in back.sources.items()} == sources


# --- count_deltas, window_totals --------------------------------------------------------------------------


def test_count_deltas_example() -> None:
    windows = {
        (GD, T0 + 60): Counter({"a": 2, "b": 1}),
        (HK, T0): Counter({"c": 4}),
        (GD, T0): Counter({"a": 1, "d": 5}),
    }
    deltas = {d.territory.code: d for d in count_deltas(windows)}
    assert set(deltas) == {"CN-GD", "HK"}
    gd = deltas["CN-GD"]
    assert [(w.start, w.count, w.posts) for w in gd.windows] == [
        (T0, 6, [("d", 5), ("a", 1)]),
        (T0 + 60, 3, [("a", 2), ("b", 1)]),
    ]
    assert [(w.start, w.count, w.posts) for w in deltas["HK"].windows] == [(T0, 4, [("c", 4)])]
    assert window_totals(windows) == Counter({T0: 10, T0 + 60: 3})


def test_count_deltas_bounds_posts_busiest_first() -> None:
    posts = Counter({f"p{i:02d}": i + 1 for i in range(MAX_DELTA_POSTS + 10)})
    (delta,) = count_deltas({(GD, T0): posts})
    (window,) = delta.windows
    assert window.count == sum(posts.values())  # the count is every comment, not just the listed posts
    assert len(window.posts) == MAX_DELTA_POSTS
    expected = sorted(posts.items(), key=lambda kv: -kv[1])[:MAX_DELTA_POSTS]
    assert window.posts == expected


post_ids = st.text(min_size=1, max_size=12)
window_maps = st.dictionaries(
    st.tuples(
        st.sampled_from(TERRITORIES), st.integers(T0 // 60 - 100, T0 // 60 + 100).map(lambda n: n * 60)
    ),
    st.dictionaries(post_ids, st.integers(1, 500), min_size=1, max_size=40).map(Counter),
    max_size=20,
)


@given(window_maps)
def test_count_deltas_property(windows: dict[tuple[Territory, int], Counter[str]]) -> None:
    deltas = count_deltas(windows)
    codes = [d.territory.code for d in deltas]
    assert len(codes) == len(set(codes))  # one delta per territory
    assert {d.territory for d in deltas} == {t for t, _ in windows}
    for delta in deltas:
        starts = [w.start for w in delta.windows]
        assert starts == sorted(starts)
        assert set(starts) == {s for t, s in windows if t == delta.territory}
        for window in delta.windows:
            posts = windows[(delta.territory, window.start)]
            assert window.count == sum(posts.values())
            assert len(window.posts) == min(len(posts), MAX_DELTA_POSTS)
            counts = [n for _, n in window.posts]
            assert counts == sorted(counts, reverse=True)
            assert all(posts[p] == n for p, n in window.posts)
            listed = {p for p, _ in window.posts}
            if listed:
                assert all(n <= counts[-1] for p, n in posts.items() if p not in listed)
    expected: Counter[int] = Counter()
    for (_, start), posts in windows.items():
        expected[start] += sum(posts.values())
    assert window_totals(windows) == expected


# --- schema agreement: the counts topic and the bursts topic ----------------------------------------------

SCHEMAS = {name: load_schema(name) for name in ("enriched_comment", "territory_counts", "burst")}
REGISTRY: Registry[Any] = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMAS[name], registry=REGISTRY, format_checker=FormatChecker())


COUNTS, BURST = validator("territory_counts"), validator("burst")
FAST = settings(max_examples=200, deadline=None)


def test_schemas_are_well_formed_and_refs_resolve() -> None:
    for name in ("territory_counts", "burst"):
        Draft202012Validator.check_schema(SCHEMAS[name])
    # The $ref into enriched_comment resolves: a territory that breaks it is refused.
    bad = {"kind": "delta", "schema_version": 1, "territory": {"code": "X"}, "windows": [[T0, 1, []]]}
    assert not COUNTS.is_valid({"kind": "batch", "schema_version": 1, "deltas": [bad], "ticks": []})


ticks = st.builds(
    Tick,
    source=st.integers(0, 10_000),
    watermark=st.floats(0, 4e9, allow_nan=False, allow_infinity=False),
    idle=st.booleans(),
    totals=window_maps.map(lambda w: sorted(window_totals(w).items())),
)


@settings(max_examples=50, deadline=None)
@given(window_maps, st.lists(ticks, max_size=4))
def test_every_count_batch_encoded_is_valid(
    windows: dict[tuple[Territory, int], Counter[str]], tick_list: list[Tick]
) -> None:
    message = CountBatch(deltas=count_deltas(windows), ticks=tick_list)
    raw = encode_count_message(message)
    COUNTS.validate(json.loads(raw))
    assert decode_count_message(raw) == message


@pytest.mark.parametrize("index", range(len(SCHEMAS["territory_counts"]["examples"])))
def test_counts_schema_examples_decode(index: int) -> None:
    example = SCHEMAS["territory_counts"]["examples"][index]
    COUNTS.validate(example)
    message = decode_count_message(json.dumps(example, ensure_ascii=False).encode())
    assert json.loads(encode_count_message(message)) == example


def test_a_lone_delta_or_tick_is_not_a_count_message() -> None:
    """Production sends only batches; a delta or a tick on its own is refused by both the schema and the
    decoder (the counting agent counts it as invalid and skips it)."""
    (example,) = SCHEMAS["territory_counts"]["examples"]
    for lone in (example["deltas"][0], example["ticks"][0]):
        assert not COUNTS.is_valid(lone)
        with pytest.raises(msgspec.ValidationError):
            decode_count_message(json.dumps(lone, ensure_ascii=False).encode())


def test_counting_partition_is_kafkas_default_partitioner_on_the_code() -> None:
    """Territories were sent keyed by their code; the explicit partition must be the one the producer's
    default partitioner chose, so a territory's counts and state stay where they were."""
    partitioner = DefaultPartitioner()
    for n in (1, 3, 4, 12):
        partitions = list(range(n))
        for code in ("CN-GD", "CN-BJ", "HK", "US", "ZZ", "CN-NM", "TW", "JP"):
            assert counting_partition(code, n) == partitioner(code.encode(), partitions, partitions)


utc_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def burst_events(draw: st.DrawFn) -> BurstEvent:
    """Burst events as Detection._announce builds them: a regional one has a territory and may have a
    share score, a global one neither; burst_start is always set (from the state or the last burst)."""
    regional = draw(st.booleans())
    start = draw(utc_datetimes)
    return BurstEvent(
        kind=draw(st.sampled_from(["started", "updated", "ended"])),
        type="regional" if regional else "global",
        burst_id=draw(st.text(min_size=1, max_size=128)),
        territory=draw(st.sampled_from(TERRITORIES)) if regional else None,
        window_start=start,
        window_end=draw(utc_datetimes),
        burst_start=draw(utc_datetimes),
        count=draw(st.integers(0, 2**40)),
        baseline=draw(st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
        score=draw(st.none() | finite),
        share_score=draw(st.none() | finite) if regional else None,
        top_posts=draw(
            st.lists(
                st.builds(TopPost, post_id=st.text(max_size=20), count=st.integers(1, 10**6)), max_size=5
            )
        ),
        emitted_at=draw(utc_datetimes),
    )


@FAST
@given(burst_events())
def test_every_burst_event_encoded_is_valid(event: BurstEvent) -> None:
    raw = encode_burst(event)
    BURST.validate(json.loads(raw))
    assert msgspec.json.decode(raw, type=BurstEvent) == event


def test_burst_event_without_burst_start_is_valid() -> None:
    event = BurstEvent(
        kind="updated",
        type="global",
        burst_id="__global__@1767225600",
        territory=None,
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_end=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
        count=1,
        baseline=1.0,
        score=None,
        share_score=None,
        top_posts=[],
        emitted_at=datetime(2026, 1, 1, 0, 2, tzinfo=UTC),
    )
    BURST.validate(json.loads(encode_burst(event)))


@pytest.mark.parametrize("index", range(len(SCHEMAS["burst"]["examples"])))
def test_burst_schema_examples_decode(index: int) -> None:
    example = SCHEMAS["burst"]["examples"][index]
    BURST.validate(example)
    event = msgspec.json.decode(json.dumps(example, ensure_ascii=False).encode(), type=BurstEvent)
    assert event.kind == example["kind"]
    assert event.type == example["type"]
    assert event.burst_id == example["burst_id"]
    assert event.count == example["count"]
    assert (event.territory is None) == (example["territory"] is None)
    assert [{"post_id": p.post_id, "count": p.count} for p in event.top_posts] == example["top_posts"]
    assert event.window_start.tzinfo is not None
    assert event.window_start == datetime.fromisoformat(example["window_start"])


def test_silence_is_judged_on_when_ticks_were_sent_not_when_they_are_read() -> None:
    """``heard_until``: the time the partition's ticks have reached (capped by the wall clock); a replayed,
    older tick does not move a source's last word back."""
    clock = PartitionClock()
    clock.apply_tick(0, 500.0, [], NOW, idle=False)
    clock.apply_tick(1, 1000.0, [], NOW + 2, idle=False)
    read_at = NOW + 100  # a backlog read long after it was sent
    assert clock.heard_until(read_at) == NOW + 2
    assert clock.watermark(clock.heard_until(read_at), SOURCE_SILENT_S) == 500.0  # source 0 still holds it
    assert clock.watermark(read_at, SOURCE_SILENT_S) == 1000.0  # what judging by the reading time gave
    assert clock.heard_until(NOW + 1) == NOW + 1  # a sender's clock ahead of ours counts as now
    clock.apply_tick(1, 900.0, [], NOW, idle=False)  # replayed
    assert clock.sources[1].heard_at == NOW + 2
