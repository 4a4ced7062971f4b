"""streams.pipeline.windows: event-time window arithmetic and the Space-Saving top-posts sketch (pure)."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.pipeline.windows import PostCount, TopPosts, WindowAgg, WindowSpec, decode_agg, encode_agg

event_times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
hops = st.integers(min_value=1, max_value=3600)


# --- WindowSpec -------------------------------------------------------------------------------------------


@given(event_times, hops, st.integers(min_value=0, max_value=600))
def test_tumbling_gives_one_aligned_window_holding_the_event(t: float, size: int, lateness: int) -> None:
    spec = WindowSpec(size_s=size, hop_s=size, lateness_s=lateness)
    starts = list(spec.starts(t))
    assert len(starts) == 1
    (start,) = starts
    assert start % size == 0
    assert start <= t < start + size


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0.0, 0), (59.999, 0), (60.0, 60), (119.5, 60), (1_767_225_600.0, 1_767_225_600)],
)
def test_tumbling_boundaries(t: float, expected: int) -> None:
    assert list(WindowSpec(60, 60, 0).starts(t)) == [expected]


@given(event_times, hops, st.integers(min_value=1, max_value=12))
def test_hopping_gives_size_over_hop_windows_all_holding_the_event(t: float, hop: int, k: int) -> None:
    size = hop * k
    spec = WindowSpec(size_s=size, hop_s=hop, lateness_s=0)
    starts = list(spec.starts(t))
    assert len(starts) == size // hop
    assert starts == sorted(starts)
    assert all(b - a == hop for a, b in itertools.pairwise(starts))
    for start in starts:
        assert start % hop == 0
        assert start <= t < start + size
    # ... and they are all of them: the hop-aligned windows just outside do not hold the event.
    assert starts[0] - hop + size <= t  # the window before ends at or before t
    assert starts[-1] + hop > t  # the window after starts after t


def test_hopping_example() -> None:
    spec = WindowSpec(size_s=300, hop_s=60, lateness_s=30)
    assert list(spec.starts(1000.0)) == [720, 780, 840, 900, 960]


@pytest.mark.parametrize(
    ("size", "hop", "lateness"),
    [
        (0, 0, 0),
        (60, 0, 0),
        (0, 60, 0),
        (-60, 60, 0),
        (60, -60, 0),
        (60, 45, 0),  # size not a multiple of the hop
        (60, 120, 0),  # hop larger than the size
        (60, 60, -1),  # negative lateness
    ],
)
def test_invalid_specs_raise(size: int, hop: int, lateness: int) -> None:
    with pytest.raises(ValueError, match=r"window size|lateness"):
        WindowSpec(size_s=size, hop_s=hop, lateness_s=lateness)


@given(st.integers(min_value=0, max_value=4_000_000_000), hops, st.integers(min_value=0, max_value=600))
def test_closes_at_is_end_plus_lateness(start: int, size: int, lateness: int) -> None:
    assert WindowSpec(size, size, lateness).closes_at(start) == start + size + lateness


def test_closes_at_example() -> None:
    assert WindowSpec(60, 60, 30).closes_at(1_767_225_600) == 1_767_225_690


# --- TopPosts ---------------------------------------------------------------------------------------------


def test_exact_while_under_capacity() -> None:
    sketch = TopPosts(capacity=4)
    stream = ["a", "b", "a", "c", "a", "b", "d"]
    for post in stream:
        sketch.add(post)
    assert sketch.counters == {"a": [3, 0], "b": [2, 0], "c": [1, 0], "d": [1, 0]}
    assert sketch.top(2) == [PostCount("a", 3, 0), PostCount("b", 2, 0)]
    # Ties rank by post id; top(k) beyond what is held returns everything.
    assert [p.post_id for p in sketch.top(10)] == ["a", "b", "c", "d"]


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 50)), max_size=60))
def test_exact_under_capacity_with_weights(adds: list[tuple[str, int]]) -> None:
    sketch = TopPosts(capacity=8)
    truth: Counter[str] = Counter()
    for post, n in adds:
        sketch.add(post, n)
        truth[post] += n
    assert sketch.counters == {post: [n, 0] for post, n in truth.items()}


def test_weighted_replacement() -> None:
    sketch = TopPosts(capacity=2)
    sketch.add("a", 5)
    sketch.add("b", 3)
    sketch.add("c", 2)  # evicts b (the minimum, 3): c counts 3 + 2 with error 3
    assert sketch.counters == {"a": [5, 0], "c": [5, 3]}
    assert sketch.top(2) == [PostCount("a", 5, 0), PostCount("c", 5, 3)]
    sketch.add("a", 4)
    assert sketch.counters["a"] == [9, 0]


def test_merge_adds_post_counts() -> None:
    sketch = TopPosts(capacity=8)
    sketch.add("a", 2)
    sketch.merge([PostCount("a", 3), PostCount("b", 4)])
    assert sketch.counters == {"a": [5, 0], "b": [4, 0]}


def zipf_stream(
    rnd: random.Random, distinct: int, exponent: float, length: int, weighted: bool
) -> list[tuple[str, int]]:
    weights = [1.0 / (rank**exponent) for rank in range(1, distinct + 1)]
    posts = [f"p{i}" for i in range(distinct)]
    rnd.shuffle(posts)  # the busiest posts are not the first seen
    chosen = rnd.choices(posts, weights=weights, k=length)
    return [(post, rnd.randint(1, 5) if weighted else 1) for post in chosen]


@settings(max_examples=60, deadline=None)
@given(
    rnd=st.randoms(use_true_random=False),
    distinct=st.integers(min_value=20, max_value=400),
    exponent=st.floats(min_value=0.6, max_value=1.6),
    length=st.integers(min_value=200, max_value=3000),
    capacity=st.integers(min_value=4, max_value=32),
    weighted=st.booleans(),
)
def test_space_saving_guarantees_on_zipf_streams(
    rnd: random.Random, distinct: int, exponent: float, length: int, capacity: int, weighted: bool
) -> None:
    stream = zipf_stream(rnd, distinct, exponent, length, weighted)
    sketch = TopPosts(capacity=capacity)
    truth: Counter[str] = Counter()
    for post, n in stream:
        sketch.add(post, n)
        truth[post] += n
        assert len(sketch.counters) <= capacity  # memory bounded whatever the stream
    total = sum(truth.values())
    held = sketch.counters
    assert sum(count for count, _ in held.values()) == total  # Space-Saving's invariant
    for post, (count, error) in held.items():
        assert truth[post] <= count <= truth[post] + error
        assert error >= 0
    for post, n in truth.most_common(5):
        if n > total / capacity:
            assert post in held, (post, n, total, capacity)
    for post, n in truth.items():
        if n > total / capacity:
            assert post in held
    top = sketch.top(5)
    assert len(top) == min(5, len(held))
    assert [p.count for p in top] == sorted((p.count for p in top), reverse=True)


def reference_space_saving(capacity: int, adds: list[tuple[str, int]]) -> dict[str, list[int]]:
    """Space-Saving as the paper states it, one scan for the minimum per replacement."""
    counters: dict[str, list[int]] = {}
    for post, n in adds:
        if post in counters:
            counters[post][0] += n
        elif len(counters) < capacity:
            counters[post] = [n, 0]
        else:
            victim = min(counters, key=lambda p: (counters[p][0], p))
            floor = counters.pop(victim)[0]
            counters[post] = [floor + n, floor]
    return counters


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=8),
    start=st.lists(st.tuples(st.sampled_from("abcdefghijkl"), st.integers(1, 9)), max_size=40),
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abcdefghijklmnop"), st.integers(1, 9)), max_size=30), max_size=5
    ),
)
def test_add_many_is_sequential_space_saving(
    capacity: int, start: list[tuple[str, int]], batches: list[list[tuple[str, int]]]
) -> None:
    # The heap is rebuilt per call and goes stale as counts grow, posts are evicted and come back: every
    # call must still pick the same victims as the plain scan.
    sketch = TopPosts(capacity=capacity)
    for post, n in start:
        sketch.add(post, n)
    seen = list(start)
    for batch in batches:
        sketch.add_many(batch)
        seen += batch
        assert sketch.counters == reference_space_saving(capacity, seen)


def test_memory_bounded_by_capacity() -> None:
    sketch = TopPosts(capacity=16)
    for i in range(10_000):
        sketch.add(f"post-{i}")
    assert len(sketch.counters) == 16
    assert sum(count for count, _ in sketch.counters.values()) == 10_000
    # Encoded, the window table's value stays within capacity x (id + a [count, error] pair of at most
    # 9-byte msgpack ints) plus a small header, however many distinct posts went through it.
    large = TopPosts(capacity=16)
    for i in range(50_000):
        large.add(f"post-{i:05d}")
    per_counter = 1 + len("post-00000") + 1 + 2 * 9
    assert len(encode_agg(WindowAgg(50_000, large))) <= 64 + 16 * per_counter


# --- WindowAgg --------------------------------------------------------------------------------------------


@given(
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=1, max_value=64),
    st.lists(st.tuples(st.text(max_size=20), st.integers(1, 1000)), max_size=100),
)
def test_window_agg_round_trip(count: int, capacity: int, adds: list[tuple[str, int]]) -> None:
    agg = WindowAgg(count=count, posts=TopPosts(capacity=capacity))
    for post, n in adds:
        agg.posts.add(post, n)
    back = decode_agg(encode_agg(agg))
    assert back == agg
    assert back.count == count
    assert back.posts.capacity == capacity
    assert back.posts.counters == agg.posts.counters
    # The decoded sketch keeps working the same way.
    agg.posts.add("next", 3)
    back.posts.add("next", 3)
    assert back.posts.counters == agg.posts.counters


def test_window_agg_defaults_round_trip() -> None:
    agg = WindowAgg()
    assert agg.count == 0
    assert agg.posts.capacity == 64
    assert decode_agg(encode_agg(agg)) == WindowAgg()
