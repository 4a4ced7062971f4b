"""streams.pipeline.detector: the burst detector (pure; no broker)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.pipeline.detector import (
    GLOBAL_KEY,
    DetectorParams,
    TerritoryState,
    Verdict,
    burst_id_for,
    decode_state,
    encode_state,
    fill_gaps,
    missing_windows,
    step,
)

P = DetectorParams()
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a multiple of 60
DAY = 1440


def poisson(rng: random.Random, lam: float) -> int:
    """Exact Poisson variate: a sum of Knuth's multiplication method over chunks of mean ≤ 25."""
    n = 0
    while lam > 0:
        part = min(lam, 25.0)
        lam -= part
        limit, p = math.exp(-part), rng.random()
        while p > limit:
            n += 1
            p *= rng.random()
    return n


def daily(minute: int) -> float:
    """Daily cycle, mean ≈ 1, peak/trough ≈ 4."""
    return math.exp(0.7 * math.cos(2 * math.pi * (minute / 60 - 13.5) / 24)) / 1.1323


Sampler = Callable[[random.Random, float], int]


def nb(r: float) -> Sampler:
    """Negative binomial with the given mean: variance = mean + mean² / r."""
    return lambda rng, mean: poisson(rng, mean * rng.gammavariate(r, 1 / r))


def run(
    counts: Sequence[int],
    totals: Sequence[int | None] | None = None,
    *,
    key: str = "CN-GD",
    params: DetectorParams = P,
) -> list[Verdict]:
    state: TerritoryState | None = None
    out = []
    for i, c in enumerate(counts):
        total = totals[i] if totals is not None else None
        state, v = step(state, key=key, window_start=T0 + 60 * i, count=c, total=total, params=params)
        out.append(v)
    return out


def starts(verdicts: Sequence[Verdict]) -> list[int]:
    return [i for i, v in enumerate(verdicts) if v.transition == "started"]


# ------------------------------------------------------------------------------------------------------------
# Quiet traffic stays quiet
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mean", [20, 100, 1000])
@pytest.mark.parametrize(("name", "sampler"), [("poisson", poisson), ("nb5", nb(5)), ("nb20", nb(20))])
def test_stationary_daily_traffic_is_quiet_for_24h(mean: int, name: str, sampler: Sampler) -> None:
    rng = random.Random(f"{name}-{mean}")
    counts = [sampler(rng, mean * daily(i)) for i in range(60 + DAY)]
    verdicts = run(counts)
    assert starts(verdicts) == []
    assert not any(v.active for v in verdicts)


def test_quiet_territories_with_totals_stay_quiet() -> None:
    rng = random.Random(5)
    rates = [1000 / (k + 1) for k in range(34)]
    series = [[nb(20)(rng, r * daily(i)) for i in range(DAY)] for r in rates]
    totals = [sum(s[i] for s in series) for i in range(DAY)]
    for k, s in enumerate(series):
        assert starts(run(s, totals, key=f"T{k}")) == []
    assert starts(run(totals, key=GLOBAL_KEY)) == []


# ------------------------------------------------------------------------------------------------------------
# Regional versus global
# ------------------------------------------------------------------------------------------------------------


def _territories(
    rng: random.Random, n: int, windows: int, boost: Callable[[int, int], float]
) -> list[list[int]]:
    rates = [2000 * 0.85**k + 20 for k in range(n)]  # Guangdong-sized down to Macau-sized
    return [[nb(20)(rng, r * boost(k, i)) for i in range(windows)] for k, r in enumerate(rates)]


def test_global_surge_is_one_global_burst_not_34_regional_ones() -> None:
    rng = random.Random(11)
    surge = range(150, 160)
    series = _territories(rng, 34, 200, lambda _k, i: 3.0 if i in surge else 1.0)
    totals = [sum(s[i] for s in series) for i in range(200)]
    seen_rising = 0
    for k, s in enumerate(series):
        verdicts = run(s, totals, key=f"T{k}")
        assert starts(verdicts) == [], f"territory {k}"
        own = [verdicts[i].score for i in surge]
        seen_rising += sum(own) / len(own) > P.on_threshold  # its own baseline does see the surge
    assert seen_rising >= 30
    g = starts(run(totals, key=GLOBAL_KEY))
    assert len(g) == 1
    assert surge.start <= g[0] <= surge.start + P.on_windows


def test_step_to_5x_in_one_territory_fires_promptly_and_ends_after() -> None:
    rng = random.Random(3)
    burst = range(120, 135)
    series = _territories(rng, 34, 200, lambda k, i: 5.0 if k == 7 and i in burst else 1.0)
    totals = [sum(s[i] for s in series) for i in range(200)]
    verdicts = run(series[7], totals, key="T7")
    [s0] = starts(verdicts)
    assert (
        burst.start + P.on_windows - 1 <= s0 <= burst.start + P.on_windows
    )  # delay on_windows - 1, +1 slack
    assert verdicts[s0].burst_id == burst_id_for("T7", T0 + 60 * (s0 - P.on_windows + 1))
    [e0] = [i for i, v in enumerate(verdicts) if v.transition == "ended"]
    assert burst.stop - 1 + P.off_windows <= e0 <= burst.stop - 1 + P.off_windows + 2
    assert all(v.active for v in verdicts[s0:e0])
    assert {v.burst_id for v in verdicts[s0 : e0 + 1]} == {verdicts[s0].burst_id}
    # the burst does not drag its own baseline up
    assert verdicts[e0].baseline < 1.1 * verdicts[burst.start].baseline
    for k, s in enumerate(series):
        if k != 7:
            assert starts(run(s, totals, key=f"T{k}")) == []


def test_a_new_normal_ends_the_burst_after_adapt_after() -> None:
    params = DetectorParams(adapt_after=20)
    verdicts = run([100] * 100 + [500] * 300, params=params)
    assert len(starts(verdicts)) == 1
    ended = [i for i, v in enumerate(verdicts) if v.transition == "ended"]
    assert len(ended) == 1
    assert ended[0] > 100 + 20
    assert not verdicts[-1].active
    assert verdicts[-1].baseline > 400


# ------------------------------------------------------------------------------------------------------------
# Small counts, warm-up
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(3, 9), (5, 15), (1, 19)])
def test_small_counts_never_fire(before: int, after: int) -> None:
    verdicts = run([before] * 100 + [after] * 50)
    assert starts(verdicts) == []
    assert verdicts[100].score > P.off_threshold  # the rise is seen, it is just too small to matter


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, P.min_count - 1), min_size=1, max_size=200))
def test_counts_below_min_count_never_fire(counts: list[int]) -> None:
    assert starts(run(counts)) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=80), st.integers(1, 40))
def test_never_fires_during_warmup(counts: list[int], warmup: int) -> None:
    params = DetectorParams(warmup_windows=warmup)
    for i in starts(run(counts, params=params)):
        assert i >= warmup + params.on_windows - 1


def test_warmup_then_fires() -> None:
    params = DetectorParams(warmup_windows=30)
    # window 29 is the 30th: still warm-up; window 30 is the first candidate, 31 the second
    assert starts(run([100] * 29 + [1000] * 10, params=params)) == [30 + params.on_windows - 1]
    assert starts(run([100] * 10 + [1000] * 30, params=params)) == []  # warm-up learnt the new level


# ------------------------------------------------------------------------------------------------------------
# State, replay, determinism
# ------------------------------------------------------------------------------------------------------------


def _burst_series(seed: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    counts = [nb(20)(rng, 200.0 * (4 if 80 <= i < 90 else 1)) for i in range(150)]
    totals = [c + poisson(rng, 5000.0) for c in counts]
    return counts, totals


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3), st.integers(1, 149))
def test_state_round_trips_and_replay_gives_identical_verdicts(seed: int, cut: int) -> None:
    counts, totals = _burst_series(seed)
    state: TerritoryState | None = None
    reference: list[Verdict] = []
    saved: bytes | None = None
    for i, (c, t) in enumerate(zip(counts, totals, strict=True)):
        if i == cut:
            assert state is not None
            saved = encode_state(state)
            assert decode_state(saved) == state
        state, v = step(state, key="CN-SC", window_start=T0 + 60 * i, count=c, total=t, params=P)
        reference.append(v)
    assert saved is not None
    state = decode_state(saved)
    for i in range(cut, len(counts)):
        state, v = step(
            state, key="CN-SC", window_start=T0 + 60 * i, count=counts[i], total=totals[i], params=P
        )
        assert v == reference[i]
    assert len(starts(reference)) == 1


def test_replayed_windows_are_stale_and_never_refire() -> None:
    counts, totals = _burst_series(0)
    state: TerritoryState | None = None
    history: list[TerritoryState] = []
    ids: set[str] = set()
    for i, (c, t) in enumerate(zip(counts, totals, strict=True)):
        state, v = step(state, key="CN-SC", window_start=T0 + 60 * i, count=c, total=t, params=P)
        history.append(state)
        if v.burst_id:
            ids.add(v.burst_id)
    assert state is not None
    assert len(ids) == 1
    # a worker whose table is ahead of the source offsets sees old windows again: nothing changes
    for i in range(75, 100):
        again, v = step(
            state, key="CN-SC", window_start=T0 + 60 * i, count=counts[i], total=totals[i], params=P
        )
        assert again is state
        assert v.stale
        assert v.transition == "none"
    # a worker restarted from an older saved state reaches the same burst id
    old = decode_state(encode_state(history[70]))
    replay_ids = set()
    for i in range(71, len(counts)):
        old, v = step(old, key="CN-SC", window_start=T0 + 60 * i, count=counts[i], total=totals[i], params=P)
        if v.burst_id:
            replay_ids.add(v.burst_id)
    assert replay_ids == ids
    assert old == state


def test_deterministic() -> None:
    counts, totals = _burst_series(2)
    assert run(counts, totals) == run(counts, totals)


def test_state_is_small_and_versioned() -> None:
    counts, totals = _burst_series(1)
    state: TerritoryState | None = None
    for i in range(85):
        state, _ = step(
            state, key="CN-NM", window_start=T0 + 60 * i, count=counts[i], total=totals[i], params=P
        )
    assert state is not None
    data = encode_state(state)
    assert len(data) < 400
    assert decode_state(data).v == 1
    with pytest.raises(msgspec.DecodeError):
        decode_state(b"\x93garbage")


def test_seasonal_state_round_trips_and_stays_quiet() -> None:
    params = DetectorParams(seasonal=True, alpha=0.02)
    rng = random.Random(9)
    counts = [nb(20)(rng, 300 * daily(i % DAY)) for i in range(2 * DAY)]
    verdicts = run(counts, params=params)
    assert starts(verdicts) == []
    state: TerritoryState | None = None
    for i, c in enumerate(counts[:100]):
        state, _ = step(state, key="X", window_start=T0 + 60 * i, count=c, total=None, params=params)
    assert state is not None
    assert len(state.season) == 24
    assert decode_state(encode_state(state)) == state


# ------------------------------------------------------------------------------------------------------------
# The API's edges
# ------------------------------------------------------------------------------------------------------------


def test_global_usage_has_no_share_score() -> None:
    _, v = step(None, key=GLOBAL_KEY, window_start=T0, count=100, total=None, params=P)
    assert v.share_score is None
    _, v = step(None, key="HK", window_start=T0, count=100, total=1000, params=P)
    assert v.share_score is not None


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="count"):
        step(None, key="HK", window_start=T0, count=-1, total=None, params=P)
    with pytest.raises(ValueError, match="total"):
        step(None, key="HK", window_start=T0, count=10, total=5, params=P)
    state, _ = step(None, key="HK", window_start=T0, count=1, total=None, params=P)
    with pytest.raises(ValueError, match="HK"):
        step(state, key="MO", window_start=T0 + 60, count=1, total=None, params=P)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": 0},
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"off_threshold": 5.0},
        {"on_windows": 0},
        {"seasonal_slots": 7},
    ],
)
def test_params_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        DetectorParams(**kwargs)  # type: ignore[arg-type]


def test_gaps() -> None:
    state, _ = step(None, key="HK", window_start=T0, count=1, total=None, params=P)
    assert list(missing_windows(state, T0 + 240, 60)) == [T0 + 60, T0 + 120, T0 + 180]
    assert list(missing_windows(state, T0 + 60, 60)) == []
    assert list(missing_windows(None, T0, 60)) == []
    rows = [(0, 5, 10), (60, 6, 12), (240, 7, 14), (250, 1, 1)]
    assert list(fill_gaps(rows, 60)) == [
        (0, 5, 10, False),
        (60, 6, 12, False),
        (120, 0, 0, True),
        (180, 0, 0, True),
        (240, 7, 14, False),
        (250, 1, 1, False),
    ]
    assert list(fill_gaps([(0, 1, None), (120, 2, None)], 60)) == [
        (0, 1, None, False),
        (60, 0, None, True),
        (120, 2, None, False),
    ]
