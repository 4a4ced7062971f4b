"""streams.pipeline.detector: the burst detector (pure; no broker)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.pipeline.detector import (
    GLOBAL_KEY,
    STATE_VERSION,
    DetectorParams,
    TerritoryState,
    Verdict,
    burst_id_for,
    decode_state,
    encode_state,
    fill_gaps,
    missing_windows,
    step,
    threshold,
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
    window_s: int = 60,
) -> list[Verdict]:
    state: TerritoryState | None = None
    out = []
    for i, c in enumerate(counts):
        total = totals[i] if totals is not None else None
        state, v = step(state, key=key, window_start=T0 + window_s * i, count=c, total=total, params=params)
        out.append(v)
    return out


def run_global(series: Sequence[Mapping[str, int]], params: DetectorParams = P) -> list[Verdict]:
    """The global detector over windows given as {territory: count}, with the breadth test."""
    state: TerritoryState | None = None
    out = []
    for i, counts in enumerate(series):
        state, v = step(
            state,
            key=GLOBAL_KEY,
            window_start=T0 + 60 * i,
            count=sum(counts.values()),
            total=None,
            params=params,
            territories=counts,
        )
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


def test_daily_and_weekly_cycles_of_five_minute_windows_are_quiet() -> None:
    # Three weeks of 5-minute windows: weekdays twice as busy as weekends, a daily cycle, NB noise.
    rng = random.Random(17)
    per_day = 288
    counts = []
    for i in range(21 * per_day):
        weekday = (i // per_day) % 7 < 5
        counts.append(nb(5)(rng, 60 * (2.0 if weekday else 1.0) * daily(i * 5 % DAY)))
    assert starts(run(counts, window_s=300, params=DetectorParams(window_s=300))) == []


def test_quiet_territories_with_totals_stay_quiet() -> None:
    rng = random.Random(5)
    rates = [1000 / (k + 1) for k in range(34)]
    series = [[nb(20)(rng, r * daily(i)) for i in range(DAY)] for r in rates]
    totals = [sum(s[i] for s in series) for i in range(DAY)]
    for k, s in enumerate(series):
        assert starts(run(s, totals, key=f"T{k}")) == []
    assert starts(run(totals, key=GLOBAL_KEY)) == []


def test_gap_of_zeros_does_not_fire_on_the_first_busy_window() -> None:
    rng = random.Random(23)
    counts = [nb(20)(rng, 200) for _ in range(400)] + [0] * 180 + [nb(20)(rng, 200) for _ in range(200)]
    assert starts(run(counts)) == []


def test_quiet_night_does_not_fire_in_the_morning() -> None:
    rng = random.Random(29)
    day = [nb(10)(rng, 300) for _ in range(600)]
    night = [nb(10)(rng, 15) for _ in range(360)]  # a twentieth of the day's rate for six hours
    morning = [nb(10)(rng, 300) for _ in range(200)]
    assert starts(run(day + night + morning)) == []


# ------------------------------------------------------------------------------------------------------------
# The threshold follows each series' own tail
# ------------------------------------------------------------------------------------------------------------


def _spiky(rng: random.Random, n: int, spike_every: int, spike: float) -> list[int]:
    """NB traffic with a ``spike`` × spike every ``spike_every`` windows (news nobody pages on)."""
    return [nb(10)(rng, 100 * (spike if i % spike_every == spike_every // 2 else 1.0)) for i in range(n)]


def test_threshold_rises_above_the_floor_on_a_heavy_tailed_series_only() -> None:
    rng = random.Random(31)
    calm = [nb(20)(rng, 100) for _ in range(3000)]
    state: TerritoryState | None = None
    for i, c in enumerate(calm):
        state, _ = step(state, key="calm", window_start=T0 + 60 * i, count=c, total=None, params=P)
    assert state is not None
    assert threshold(state, P) == P.on_threshold
    state = None
    for i, c in enumerate(_spiky(rng, 3000, 40, 6.0)):
        state, _ = step(state, key="spiky", window_start=T0 + 60 * i, count=c, total=None, params=P)
    assert state is not None
    assert threshold(state, P) > P.on_threshold + 1


def test_usual_spikes_stop_firing_once_the_tail_is_learnt() -> None:
    rng = random.Random(37)
    counts = _spiky(rng, 6000, 40, 6.0)
    late = [i for i in starts(run(counts)) if i >= 3000]
    untailed = [i for i in starts(run(counts, params=DetectorParams(false_alarm=0.5))) if i >= 3000]
    assert len(late) <= 2  # the tail now says a ×6 spike is ordinary here
    assert len(untailed) > 20  # the floor alone would page on every one of them


def test_a_burst_never_enters_the_tail_or_the_baseline() -> None:
    rng = random.Random(41)
    counts = [nb(20)(rng, 100) for _ in range(300)] + [900] * 30 + [nb(20)(rng, 100) for _ in range(50)]
    state: TerritoryState | None = None
    during: list[TerritoryState] = []
    for i, c in enumerate(counts):
        state, v = step(state, key="X", window_start=T0 + 60 * i, count=c, total=None, params=P)
        if v.active:
            during.append(state)
    assert len(during) >= 30
    learnt = {(s.tail_rate, s.tail_excess, s.tail_seen, s.level, s.var) for s in during}
    assert len(learnt) == 1


# ------------------------------------------------------------------------------------------------------------
# Bursts: start, end, one alert per event, new normal
# ------------------------------------------------------------------------------------------------------------


def _territories(
    rng: random.Random, n: int, windows: int, boost: Callable[[int, int], float]
) -> list[list[int]]:
    rates = [2000 * 0.85**k + 20 for k in range(n)]  # Guangdong-sized down to Macau-sized
    return [[nb(20)(rng, r * boost(k, i)) for i in range(windows)] for k, r in enumerate(rates)]


def test_step_to_5x_in_one_territory_fires_promptly_and_ends_after() -> None:
    rng = random.Random(3)
    burst = range(150, 165)
    series = _territories(rng, 34, 230, lambda k, i: 5.0 if k == 7 and i in burst else 1.0)
    totals = [sum(s[i] for s in series) for i in range(230)]
    verdicts = run(series[7], totals, key="T7")
    [s0] = starts(verdicts)
    assert burst.start <= s0 <= burst.start + 1
    assert verdicts[s0].burst_id == burst_id_for("T7", T0 + 60 * s0)
    [e0] = [i for i, v in enumerate(verdicts) if v.transition == "ended"]
    assert (
        burst.stop - 1 + P.off_windows <= e0 <= burst.stop + 12
    )  # the current rate takes a few windows to fall
    assert all(v.active for v in verdicts[s0:e0])
    assert {v.burst_id for v in verdicts[s0 : e0 + 1]} == {verdicts[s0].burst_id}
    assert verdicts[e0].baseline < 1.1 * verdicts[burst.start].baseline  # not dragged up by the burst
    for k, s in enumerate(series):
        if k != 7:
            assert starts(run(s, totals, key=f"T{k}")) == []


def test_a_decaying_spike_is_one_alert_within_the_cooldown() -> None:
    rng = random.Random(43)
    base = [nb(20)(rng, 100) for _ in range(300)]
    # a news spike, a lull that ends the burst, and the story's second wind soon after
    counts = base + [2000, 1500] + [100] * 12 + [1800, 1200] + [nb(20)(rng, 100) for _ in range(100)]
    assert len(starts(run(counts))) == 1
    assert len(starts(run(counts, params=DetectorParams(cooldown_windows=0)))) == 2


def test_a_new_normal_ends_the_burst_after_adapt_after() -> None:
    params = DetectorParams(adapt_after=20)
    rng = random.Random(47)
    counts = [nb(20)(rng, 100) for _ in range(200)] + [nb(20)(rng, 500) for _ in range(400)]
    verdicts = run(counts, params=params)
    assert starts(verdicts) == [200]
    ended = [i for i, v in enumerate(verdicts) if v.transition == "ended"]
    assert ended == [200 + params.adapt_after - 1]
    assert not verdicts[-1].active
    assert 400 < verdicts[-1].baseline < 600


# ------------------------------------------------------------------------------------------------------------
# Regional versus global
# ------------------------------------------------------------------------------------------------------------


def _windows(series: Sequence[Sequence[int]]) -> list[dict[str, int]]:
    return [{f"T{k}": s[i] for k, s in enumerate(series)} for i in range(len(series[0]))]


def test_largest_province_x8_is_one_regional_burst_and_no_global_surge() -> None:
    rng = random.Random(53)
    burst = range(150, 160)
    series = _territories(rng, 34, 230, lambda k, i: 8.0 if k == 0 and i in burst else 1.0)
    totals = [sum(s[i] for s in series) for i in range(230)]
    regional = [len(starts(run(s, totals, key=f"T{k}"))) for k, s in enumerate(series)]
    assert regional == [1] + [0] * 33
    assert starts(run_global(_windows(series))) == []
    # without the breadth test the total alone would call it a surge: the test is what tells them apart
    assert starts(run(totals, key=GLOBAL_KEY)) != []


def test_every_territory_x3_is_one_global_surge_and_no_regional_burst() -> None:
    rng = random.Random(11)
    surge = range(150, 160)
    series = _territories(rng, 34, 230, lambda _k, i: 3.0 if i in surge else 1.0)
    totals = [sum(s[i] for s in series) for i in range(230)]
    for k, s in enumerate(series):
        assert starts(run(s, totals, key=f"T{k}")) == [], f"territory {k}"
    verdicts = run_global(_windows(series))
    [g] = starts(verdicts)
    assert surge.start <= g <= surge.start + 1
    breadth = verdicts[g].breadth
    assert breadth is not None
    assert breadth > 0.8


NB50 = nb(50)


def _demo_like(boost: Callable[[int, int], float], seed: int, sampler: Sampler = NB50) -> list[list[int]]:
    """The demo's regime: short windows, a short history (12 windows of warm-up), Poisson-like noise."""
    rng = random.Random(seed)
    rates = [600 * 0.8**k + 5 for k in range(34)]
    return [[sampler(rng, r * boost(k, i)) for i in range(80)] for k, r in enumerate(rates)]


DEMO = DetectorParams(warmup_windows=12)


def test_a_short_history_does_not_make_ordinary_windows_bursts() -> None:
    # Variances learnt from a dozen windows can come out small by luck; counting noise is their floor.
    for seed in range(20):
        series = _demo_like(lambda _k, _i: 1.0, seed, poisson)
        totals = [sum(s[i] for s in series) for i in range(80)]
        for k, s in enumerate(series):
            assert starts(run(s, totals, key=f"T{k}", params=DEMO)) == [], (seed, k)


def test_a_burst_elsewhere_does_not_hide_the_next_one() -> None:
    # The largest territory ×8 for 12 windows pushes every other share down; a small territory's ×10
    # right after must still be seen (the demo's 广东 then 中国香港).
    series = _demo_like(
        lambda k, i: 8.0 if k == 0 and 20 <= i < 32 else 10.0 if k == 12 and 33 <= i < 45 else 1.0, 7
    )
    totals = [sum(s[i] for s in series) for i in range(80)]
    assert starts(run(series[0], totals, key="T0", params=DEMO)) == [20]
    assert starts(run(series[12], totals, key="T12", params=DEMO)) == [33]


def test_a_site_wide_gap_is_no_global_surge_when_traffic_returns() -> None:
    rng = random.Random(71)
    series = _territories(rng, 34, 1000, lambda _k, i: daily(i))
    for s in series:
        s[700:760] = [0] * 60  # nothing at all for an hour (an outage upstream), then the usual evening
    assert starts(run_global(_windows(series))) == []


def test_global_breadth_map_is_bounded_by_the_territories_seen() -> None:
    series = [{f"T{k}": 50 for k in range(40)} for _ in range(100)] + [{"T0": 50} for _ in range(3000)]
    state: TerritoryState | None = None
    for i, counts in enumerate(series):
        state, _ = step(
            state,
            key=GLOBAL_KEY,
            window_start=T0 + 60 * i,
            count=sum(counts.values()),
            total=None,
            params=P,
            territories=counts,
        )
    assert state is not None
    assert set(state.expected) == {"T0"}  # territories silent for long are forgotten


# ------------------------------------------------------------------------------------------------------------
# Small counts, warm-up
# ------------------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, P.min_count - 1), min_size=1, max_size=200))
def test_counts_below_min_count_never_fire(counts: list[int]) -> None:
    assert starts(run(counts)) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=80), st.integers(1, 40))
def test_never_fires_during_warmup(counts: list[int], warmup: int) -> None:
    params = DetectorParams(warmup_windows=warmup)
    for i in starts(run(counts, params=params)):
        assert i >= warmup


def test_warmup_then_fires() -> None:
    params = DetectorParams(warmup_windows=30)
    rng = random.Random(59)
    quiet = [nb(20)(rng, 100) for _ in range(29)]
    assert starts(run(quiet + [1000] * 10, params=params)) == [30]  # window 29 is the 30th: still warm-up
    assert starts(run(quiet[:10] + [1000] * 30, params=params)) == []  # warm-up learnt the new level


# ------------------------------------------------------------------------------------------------------------
# State, versions, replay, determinism
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
    assert len(data) < 500
    assert decode_state(data).v == STATE_VERSION == 2
    with pytest.raises(msgspec.DecodeError):
        decode_state(b"\x93garbage")


# A version-1 state as a worker of the previous release wrote it into the detectors table (mid-burst).
_V1_STATE = msgspec.msgpack.encode(
    {
        "key": "CN-GD",
        "last_window": T0 + 60 * 99,
        "seen": 100,
        "level": 5.3,
        "disp": 0.01,
        "share_seen": 100,
        "share_level": -2.1,
        "share_disp": 0.002,
        "season": [],
        "recent": [[T0 + 60 * 98, 3.5, 3.4]],
        "cool_run": 0,
        "active": True,
        "burst_id": f"CN-GD@{T0 + 60 * 97}",
        "burst_start": T0 + 60 * 97,
        "burst_windows": 3,
        "v": 1,
    }
)


def test_a_version_1_state_decodes_and_restarts_without_losing_its_place() -> None:
    old = decode_state(_V1_STATE)
    assert old.v == 1
    # its last window is still known: a replay of it is stale, not a fresh start
    same, v = step(old, key="CN-GD", window_start=T0 + 60 * 99, count=200, total=2000, params=P)
    assert v.stale
    assert v.transition == "none"
    assert same.last_window == old.last_window
    state, v = step(old, key="CN-GD", window_start=T0 + 60 * 100, count=200, total=2000, params=P)
    assert state.v == STATE_VERSION
    assert state.seen == 1
    assert not state.active
    assert v.transition == "none"
    rng = random.Random(61)
    for i in range(101, 400):
        state, v = step(
            state, key="CN-GD", window_start=T0 + 60 * i, count=nb(20)(rng, 200), total=2000, params=P
        )
        assert v.transition == "none"


def test_encoded_state_is_bounded_over_a_million_windows() -> None:
    rng = random.Random(67)
    state: TerritoryState | None = None
    largest = 0
    for i in range(1_000_000):
        count = int(rng.paretovariate(1.5) * 20) if i % 97 else rng.randrange(0, 5000)
        state, _ = step(
            state, key="CN-XZ", window_start=T0 + 60 * i, count=count, total=count + 1000, params=P
        )
        if i % 1000 == 0:
            largest = max(largest, len(encode_state(state)))
    assert state is not None
    assert largest < 500
    assert len(encode_state(state)) < 500


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
        {"off_threshold": 6.0},
        {"off_windows": 0},
        {"false_alarm": 0.0},
        {"pseudo_count": 0.0},
        {"breadth": 1.5},
        {"cooldown_windows": -1},
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
