"""Burst detection on per-territory comment counts: pure, deterministic, no Faust, no Kafka.

One call of :func:`step` consumes one window (``count`` comments of territory ``key`` in the window that
starts at ``window_start``, and ``total`` comments of all territories in that window) and returns the new
state and a :class:`Verdict`. The state is a small :class:`TerritoryState` that :func:`encode_state` /
:func:`decode_state` turn into bytes for a Faust table. Every step is O(1) in time and state (the global
detector's breadth map is bounded by the territory vocabulary).

The model
---------
Real comment volume is heavy-tailed: news spikes of ×20 that nobody pages on, level shifts, daily and weekly
cycles, quiet nights and gaps. The detector therefore asks one question, "is the current rate far outside
this series' own recent range?", and lets each series calibrate what "far" means.

*Current rate.* ``rate`` is an EWMA of the counts (weight ``rate_alpha``, 0.5: about two windows), so a
burst's evidence adds up over its first windows and a lone window's noise is halved. It is scored on the
log scale, ``x = ln(rate + pseudo_count)``: a ×3 rise is the same shift at any volume, and the pseudo-count
(8) flattens the scale where counts are so small that one comment more or less is a large ratio.

*Own baseline.* ``level`` is a slow robust mean of ``x`` (weight ``alpha`` = 0.005, a time constant of 200
windows, i.e. most of a day of 5-minute windows): each update is clipped at ``huber_k`` (1) standard
deviations, so spikes barely move it, and the daily cycle stays in the residual rather than being chased.
``var`` is an EWMA (weight ``var_alpha``, 2000 windows) of the squared residual, clipped at ``var_clip``
(4) sd. Both start as running means (weight ``1/n`` until that is below the EWMA weight), so the first
days are learnt at full speed instead of being dominated by the first windows. The **score** is
``(x - level) / sd``: how many of this series' own standard deviations the current rate stands above its
usual level. A noisy series (large ``var``) needs a much larger rise than a calm one. ``sd`` never goes below
counting noise, the Poisson variance of ``x`` at the expected count: a variance learnt from a short or
lucky history can come out smaller than that.

*Share of all comments.* With a ``total``, the territory's log odds against every other territory,
``ln((rate + c) / (total_rate - rate + c))``, is scored the same way against its own baseline, which follows
faster (``share_alpha`` = 0.05): a share has no site-wide daily cycle to ignore, but overseas territories
keep their own clock. A window below the share baseline enters its variance clipped at ``huber_k`` sd:
another territory's burst pushes every other share down for as long as it lasts, and must not hide the
next burst. A rise of the whole site moves every ``score`` but no ``share_score``. A regional
burst is judged on ``share_score`` and also needs ``score ≥ own_threshold`` (1): the territory itself rose,
it did not merely keep its count while the rest of the site fell silent.

*Threshold from the series' own tail.* The detection statistic (``share_score`` with a total, else
``score``) is compared with ``max(on_threshold, z_q)``. ``z_q`` is a peaks-over-threshold estimate (SPOT,
Siffer et al., KDD 2017, with an exponential tail, i.e. a GPD with shape 0, fitted by streaming moments
instead of stored peaks): the rate ``p_u`` at which the statistic exceeds ``tail_u`` (3) and the mean
excess ``m`` above it are EWMAs (weight ``tail_alpha``), and ``z_q = tail_u + m · ln(p_u / false_alarm)``
is the level exceeded with probability ``false_alarm`` per window. As in SPOT, windows of a burst
(including the one that starts it) never enter these estimates: a burst would raise its own bar. On
Gaussian-like traffic ``z_q`` stays below the floor ``on_threshold`` (5); on a series whose ordinary days
hold ×20 spikes it rises above it.

*Bursts.* A burst **starts** when the statistic reaches the threshold in a warm window (``warmup_windows``
seen) with at least ``min_count`` comments, and not within ``cooldown_windows`` of the end of the previous
burst (one alert per event: a decaying news spike crosses the threshold again and again). It **ends**
after ``off_windows`` consecutive windows below ``off_threshold``. While it is active nothing is learnt.
A burst still active after ``adapt_after`` windows is a **new normal**: the baselines jump to the burst's
mean level and the burst ends, instead of alerting for hours.

*Global surge.* The same code with ``key=GLOBAL_KEY``, ``count`` the total and ``total=None`` scores the
series of all comments. Given ``territories`` (each territory's count in the window), a surge is judged on
**breadth** instead: each territory's expected count is kept (an EWMA with weight ``share_alpha``, which
follows the daily cycle), a territory is up when its count is at least ``breadth_ratio`` × expected, and a
surge starts when the territories that are up carry at least ``breadth`` of the expected traffic and the
total's own score is at least ``own_threshold``. One province ×8 moves the total but not the breadth;
every territory ×3 moves both. (The total's own score alone would be a poor judge: with a slow baseline
its residuals hold the whole daily cycle.) It ends like any burst, on the total's own score.

*Order, gaps and replays.* Windows must be fed in increasing ``window_start`` order. A window at or before
the last one seen (a replay after a restart) changes nothing and returns a verdict with ``stale=True``; a
burst is therefore never fired twice. Missing windows are the caller's to feed as count 0:
:func:`missing_windows` lists them and :func:`fill_gaps` inserts them into a series. A gap or a quiet night
barely moves the clipped, slow baseline, and the current rate restarts from the zeros, so the first busy
window after it is scored against the usual level, not against the night.

*Versions.* ``STATE_VERSION`` is 2. A state of another version (version 1 was an EWMA with a Gaussian
threshold) decodes, and :func:`step` restarts its model from scratch, keeping only the key and the last
window (so a replay is still recognised). A burst active in an old state is not continued.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

Transition = Literal["none", "started", "ongoing", "ended"]
GLOBAL_KEY: Final = "__global__"
STATE_VERSION: Final = 2

# Numerical floors, not tunables: a series that never varies would otherwise score any change as infinite.
_MIN_VAR: Final = 1e-3
_WARMUP_VAR_FLOOR: Final = 0.01
# The tail estimates start from a standard normal's (P(Z > 3) and E[Z - 3 | Z > 3]) worth this many windows,
# so that the first hundreds of windows do not set a threshold from a handful of exceedances.
_TAIL_PRIOR_WINDOWS: Final = 200
_EXPECTED_FLOOR: Final = 1e-3  # breadth: a territory expected below this many comments is forgotten


def _normal_tail(u: float) -> tuple[float, float]:
    tail = 0.5 * math.erfc(u / math.sqrt(2.0))
    pdf = math.exp(-u * u / 2.0) / math.sqrt(2.0 * math.pi)
    return tail, pdf / tail - u


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """Every tunable of :func:`step`. The defaults were chosen by measurement (``python -m bench.detection``:
    NAB realTweets and the simulator) and are the same for every series."""

    window_s: int = 60
    """Length of a window in seconds (60); used by :func:`missing_windows`."""
    warmup_windows: int = 30
    """Windows of a territory (30) before it may fire; the baselines are running means meanwhile."""
    pseudo_count: float = 8.0
    """Added to the rate before the log (8): below a few comments a window, ratios are counting noise."""
    rate_alpha: float = 0.5
    """EWMA weight of a window's count in the current rate (0.5: about two windows)."""
    alpha: float = 0.005
    """EWMA weight of a window in the own baseline level (0.005: a time constant of 200 windows)."""
    share_alpha: float = 0.05
    """EWMA weight of a window in the share baseline and in the global detector's expected counts (0.05)."""
    var_alpha: float = 0.0005
    """EWMA weight of a window in the variance of the baselines (0.0005: 2000 windows)."""
    huber_k: float = 1.0
    """Residuals are clipped to ±huber_k sd before they move a baseline level (1)."""
    var_clip: float = 4.0
    """Residuals are clipped to ±var_clip sd before they enter a variance (4)."""
    on_threshold: float = 5.0
    """Floor of the threshold (sd of the series' own residuals) that starts a burst (5)."""
    false_alarm: float = 1e-3
    """Target probability per window of the tail threshold: the series' own (1 - false_alarm) quantile."""
    tail_u: float = 3.0
    """Level (sd) above which the statistic's tail is modelled (3)."""
    tail_alpha: float = 0.0005
    """EWMA weight of a window in the tail estimates (0.0005)."""
    own_threshold: float = 1.0
    """Own score a regional burst also needs, with a total (1): the territory itself rose."""
    off_threshold: float = 1.5
    """A window whose statistic is below this is cool (1.5)."""
    off_windows: int = 2
    """Consecutive cool windows that end a burst (2)."""
    min_count: int = 10
    """A window with fewer comments than this never starts a burst (10)."""
    adapt_after: int = 60
    """A burst still active after this many windows is a new normal: the baseline jumps to it (60)."""
    cooldown_windows: int = 72
    """Windows after a burst ends before the same series may start another (72: six hours of 5-minute
    windows, over an hour of 1-minute ones)."""
    breadth: float = 0.5
    """Global surge: share of the expected traffic whose territories must be up together (0.5)."""
    breadth_ratio: float = 2.0
    """Global surge: a territory is up when its count is at least this × its expected count (2)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.window_s <= 0:
            problems.append("window_s must be > 0")
        if self.warmup_windows < 1:
            problems.append("warmup_windows must be ≥ 1")
        for name in ("rate_alpha", "alpha", "share_alpha", "var_alpha", "tail_alpha"):
            if not 0.0 < getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in (0, 1]")
        if self.pseudo_count <= 0:
            problems.append("pseudo_count must be > 0")
        if self.huber_k <= 0 or self.var_clip <= 0:
            problems.append("huber_k and var_clip must be > 0")
        if not 0.0 < self.false_alarm < 1.0:
            problems.append("false_alarm must be in (0, 1)")
        if self.tail_u <= 0:
            problems.append("tail_u must be > 0")
        if self.off_threshold > self.on_threshold:
            problems.append("off_threshold must be ≤ on_threshold")
        if self.off_windows < 1:
            problems.append("off_windows must be ≥ 1")
        if self.min_count < 0:
            problems.append("min_count must be ≥ 0")
        if self.adapt_after < 1:
            problems.append("adapt_after must be ≥ 1")
        if self.cooldown_windows < 0:
            problems.append("cooldown_windows must be ≥ 0")
        if not 0.0 <= self.breadth <= 1.0:
            problems.append("breadth must be in [0, 1]")
        if self.breadth_ratio <= 0:
            problems.append("breadth_ratio must be > 0")
        if problems:
            raise ValueError("; ".join(problems))


_PRIOR_RATE, _PRIOR_EXCESS = _normal_tail(3.0)  # placeholders: step() starts from params.tail_u


class TerritoryState(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`step` remembers of one territory (about 400 bytes encoded).

    Encoded as a map with every field defaulted except ``key`` and ``last_window``, so that a state of an
    older version (whose fields differ) still decodes: :func:`step` then restarts it (see ``v``)."""

    key: str
    last_window: int  # window_start of the last window consumed
    seen: int = 0  # windows consumed since the model (re)started
    rate: float = 0.0  # EWMA of the counts: the current rate
    level: float = 0.0  # slow robust mean of ln(rate + pseudo_count)
    var: float = 0.0  # variance of the residuals around level
    total_rate: float = 0.0  # EWMA of the totals
    share_seen: int = 0  # windows consumed with a total
    share_level: float = 0.0  # baseline of the log odds of rate in total_rate
    share_var: float = 0.0
    tail_seen: int = 0  # windows in the tail estimates
    tail_rate: float = _PRIOR_RATE  # P(statistic > tail_u)
    tail_excess: float = _PRIOR_EXCESS  # mean of statistic - tail_u over exceedances
    active: bool = False
    burst_id: str | None = None
    burst_start: int | None = None  # first window of the active burst
    burst_windows: int = 0  # windows of the active burst so far
    burst_sum: float = 0.0  # sum of ln(rate + pseudo_count) over the burst: its level if it becomes normal
    burst_share_sum: float = 0.0
    cool_run: int = 0  # consecutive cool windows while active
    cooldown: int = 0  # windows left before another burst may start
    expected: dict[str, float] = msgspec.field(default_factory=dict)  # global detector: per territory
    v: int = STATE_VERSION


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`step` says about one window."""

    score: float  # own score (sd of the series' own residuals, log scale); nan when stale
    share_score: float | None  # share-of-all-comments score; None without a total or when stale
    threshold: float  # what the statistic had to reach to start a burst in this window
    baseline: float  # expected rate of the window, in comments
    transition: Transition
    active: bool  # a burst is active after this window (True on "started" and "ongoing")
    burst_id: str | None  # the burst's id on "started", "ongoing" and "ended"
    breadth: float | None = None  # global detector with territories: share of traffic that is up
    stale: bool = False  # the window was at or before the last one consumed: nothing changed


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(TerritoryState)


def encode_state(state: TerritoryState) -> bytes:
    """The state as msgpack bytes (for a Faust table with a raw value serializer)."""
    return _ENCODER.encode(state)


def decode_state(data: bytes) -> TerritoryState:
    """The inverse of :func:`encode_state`, also for older versions (``v`` tells); raises
    ``msgspec.DecodeError`` (a ValueError) on bad data."""
    return _DECODER.decode(data)


def burst_id_for(key: str, first_window: int) -> str:
    """The id of the burst of ``key`` whose first window starts at ``first_window``."""
    return f"{key}@{first_window}"


def missing_windows(state: TerritoryState | None, window_start: int, window_s: int) -> range:
    """Window starts strictly between the state's last window and ``window_start``: feed them as count 0."""
    if state is None or window_start <= state.last_window:
        return range(0)
    return range(state.last_window + window_s, window_start, window_s)


def fill_gaps(
    rows: Iterable[tuple[int, int, int | None]], window_s: int
) -> Iterator[tuple[int, int, int | None, bool]]:
    """``(window_start, count, total, filled)`` for ordered rows, with ``(w, 0, 0 or None, True)`` inserted
    for every missing window that is a whole number of ``window_s`` after the previous row."""
    prev: int | None = None
    for ws, count, total in rows:
        if prev is not None and ws > prev + window_s and (ws - prev) % window_s == 0:
            for gap in range(prev + window_s, ws, window_s):
                yield gap, 0, (None if total is None else 0), True
        yield ws, count, total, False
        prev = ws


def threshold(state: TerritoryState, params: DetectorParams) -> float:
    """The statistic a burst needs in the next window: the floor, or the series' own tail quantile."""
    p = max(state.tail_rate, params.false_alarm)
    return max(params.on_threshold, params.tail_u + state.tail_excess * math.log(p / params.false_alarm))


@functools.cache
def _half_clipped_second_moment(k: float) -> float:
    """E[Z²] for a standard normal Z whose negative half is clipped at -k: 1/2 + E[min(Z², k²)]/2."""
    tail = math.erfc(k / math.sqrt(2.0))  # P(|Z| > k)
    pdf = math.exp(-k * k / 2.0) / math.sqrt(2.0 * math.pi)
    return 0.5 + 0.5 * ((1.0 - tail) - 2.0 * k * pdf + k * k * tail)


def _learn(
    level: float, var: float, resid: float, n: int, alpha: float, p: DetectorParams, *, upper: bool = False
) -> tuple[float, float]:
    """One robust update of a baseline (level, var) by a residual; ``n`` windows were learnt before.

    ``upper``: a window below the level enters the variance clipped at ``huber_k`` sd (and the estimate is
    rescaled to stay unbiased for Gaussian noise), so that windows pushed down by something else, for
    minutes on end, widen it only a little."""
    # Conditional expressions instead of max()/min(): this runs twice per territory and window.
    if n == 0:
        return level + resid, 0.0
    sq = resid * resid
    if upper:
        if resid < 0:
            low = p.huber_k * p.huber_k * (var if var > _MIN_VAR else _MIN_VAR)
            sq = sq if sq < low else low
        sq /= _half_clipped_second_moment(p.huber_k)
    if n < p.warmup_windows:
        # Running means: the first windows are all there is, so each counts fully.
        cap = p.var_clip * p.var_clip * (var if var > _WARMUP_VAR_FLOOR else _WARMUP_VAR_FLOOR)
        return level + resid / (n + 1), var + ((sq if sq < cap else cap) - var) / (n + 1)
    floor_var = var if var > _MIN_VAR else _MIN_VAR
    k = p.huber_k * math.sqrt(floor_var)
    cap = p.var_clip * p.var_clip * floor_var
    warm = 1.0 / (n + 1)
    w_level = alpha if alpha > warm else warm
    w_var = p.var_alpha if p.var_alpha > warm else warm
    step_resid = k if resid > k else -k if resid < -k else resid
    return level + w_level * step_resid, var + w_var * ((sq if sq < cap else cap) - var)


def _breadth(expected: Mapping[str, float], counts: Mapping[str, int], ratio: float) -> float:
    weight = sum(expected.values())
    if weight <= 0:
        return 0.0
    up = sum(e for code, e in expected.items() if counts.get(code, 0) >= ratio * e)
    return up / weight


def _follow(
    expected: Mapping[str, float], counts: Mapping[str, int], alpha: float, ratio: float
) -> dict[str, float]:
    out: dict[str, float] = {}
    for code in sorted(expected.keys() | counts.keys()):
        old = expected.get(code)
        count = counts.get(code, 0)
        # A count is clipped at "up" before it is learnt: one province's burst must not grow its own
        # weight in the breadth until it reads as half of the traffic.
        new = float(count) if old is None else old + alpha * (min(count, ratio * old) - old)
        if new >= _EXPECTED_FLOOR:
            out[code] = new
    return out


def _fresh(key: str, last_window: int, p: DetectorParams) -> TerritoryState:
    rate, excess = _normal_tail(p.tail_u)
    return TerritoryState(key=key, last_window=last_window, tail_rate=rate, tail_excess=excess)


def step(
    state: TerritoryState | None,
    *,
    key: str,
    window_start: int,
    count: int,
    total: int | None,
    params: DetectorParams,
    territories: Mapping[str, int] | None = None,
) -> tuple[TerritoryState, Verdict]:
    """Consume one window of ``key`` and return the new state and the verdict on the window.

    ``state`` is None for a territory never seen. ``total`` is the count of all territories in the window
    (None or 0: no share test, e.g. for the global series). ``territories`` (the global detector only) maps
    each territory to its count in the window and turns on the breadth test. Raises ValueError if ``count <
    0``, ``total < count`` or ``state`` belongs to another key.
    """
    if count < 0:
        raise ValueError(f"count must be ≥ 0, got {count}")
    if total is not None and total < count:
        raise ValueError(f"total ({total}) must be ≥ count ({count})")
    p = params
    if state is None:
        state = _fresh(key, window_start - p.window_s, p)
    elif state.key != key:
        raise ValueError(f"state of {state.key!r} given for {key!r}")
    elif state.v != STATE_VERSION:
        state = _fresh(key, state.last_window, p)

    c0 = p.pseudo_count
    baseline = max(math.exp(state.level) - c0, 0.0) if state.seen else float(count)
    thr = threshold(state, p)
    if window_start <= state.last_window:
        verdict = Verdict(
            score=math.nan,
            share_score=None,
            threshold=thr,
            baseline=baseline,
            transition="none",
            active=state.active,
            burst_id=state.burst_id,
            stale=True,
        )
        return state, verdict

    # --- scores --------------------------------------------------------------------------------------------
    rate = state.rate + p.rate_alpha * (count - state.rate) if state.seen else float(count)
    x = math.log(rate + c0)
    resid = x - state.level
    # Counting noise is a floor under any learnt variance (a short or lucky history may learn less):
    # the Poisson variance of ln(rate + c0) at the expected count, for an EWMA of weight rate_alpha.
    smooth = p.rate_alpha / (2.0 - p.rate_alpha)
    floor = smooth * baseline / ((baseline + c0) * (baseline + c0))
    var = state.var if state.var > floor else floor
    score = resid / math.sqrt(var if var > _MIN_VAR else _MIN_VAR) if state.seen else 0.0

    has_total = total is not None and total > 0
    share_score: float | None = None
    total_rate, xs, share_resid = state.total_rate, 0.0, 0.0
    if total is not None and total > 0:
        total_rate = (
            state.total_rate + p.rate_alpha * (total - state.total_rate) if state.share_seen else float(total)
        )
        xs = math.log((rate + c0) / (max(total_rate - rate, 0.0) + c0))
        share_resid = xs - state.share_level
        rest = max(total_rate - rate, 0.0)
        share_floor = smooth * (baseline / ((baseline + c0) ** 2) + rest / ((rest + c0) ** 2))
        share_var = state.share_var if state.share_var > share_floor else share_floor
        share_var = share_var if share_var > _MIN_VAR else _MIN_VAR
        share_score = share_resid / math.sqrt(share_var) if state.share_seen else 0.0
    stat = share_score if share_score is not None else score

    breadth: float | None = None
    if territories is not None:
        breadth = _breadth(state.expected, territories, p.breadth_ratio) if state.expected else 0.0

    # --- bursts --------------------------------------------------------------------------------------------
    warm = state.seen >= p.warmup_windows and (not has_total or state.share_seen >= p.warmup_windows)
    active, burst_id, burst_start = state.active, state.burst_id, state.burst_start
    burst_windows, burst_sum, burst_share_sum = state.burst_windows, state.burst_sum, state.burst_share_sum
    cool_run, cooldown = state.cool_run, max(state.cooldown - 1, 0)
    level, share_level = state.level, state.share_level
    transition: Transition = "none"
    verdict_id: str | None = None
    was_active = active
    if not active and (
        warm
        and cooldown == 0
        and count >= p.min_count
        and (
            # A global surge is judged on breadth; the total only has to have risen too.
            breadth >= p.breadth and score >= p.own_threshold
            if breadth is not None
            else stat >= thr and (share_score is None or score >= p.own_threshold)
        )
    ):
        active, transition = True, "started"
        burst_start, burst_windows, cool_run = window_start, 0, 0
        burst_sum = burst_share_sum = 0.0
        burst_id = verdict_id = burst_id_for(key, window_start)
    ended = False
    if active:
        burst_windows += 1
        burst_sum += x
        burst_share_sum += xs
        verdict_id = burst_id
        if transition != "started":
            cool_run = cool_run + 1 if stat < p.off_threshold else 0
            if cool_run >= p.off_windows or burst_windows >= p.adapt_after:
                if cool_run < p.off_windows:
                    # Still raised after adapt_after windows: a new normal, not a burst.
                    level = burst_sum / burst_windows
                    if has_total:
                        share_level = burst_share_sum / burst_windows
                active, transition, ended = False, "ended", True
                burst_id, burst_start, burst_windows, cool_run = None, None, 0, 0
                burst_sum = burst_share_sum = 0.0
                cooldown = p.cooldown_windows
            else:
                transition = "ongoing"

    # --- learning (after scoring: a window is never judged against itself; never during a burst) -----------
    var, share_var = state.var, state.share_var
    tail_seen, tail_rate = state.tail_seen, state.tail_rate
    tail_excess = state.tail_excess
    expected = state.expected
    learning = not was_active and not active and not ended
    if learning:
        level, var = _learn(level, var, resid, state.seen, p.alpha, p)
        if has_total:
            # Another territory's burst (or a site-wide rise elsewhere) pushes this share down: that is
            # no measure of how much it may rise by chance.
            share_level, share_var = _learn(
                share_level, share_var, share_resid, state.share_seen, p.share_alpha, p, upper=True
            )
    if learning and warm:
        # As in SPOT, an alarm never enters the tail it was judged by: bursts would raise their own bar.
        w = max(p.tail_alpha, 1.0 / (_TAIL_PRIOR_WINDOWS + tail_seen))
        above = stat > p.tail_u
        tail_rate += w * (above - tail_rate)
        if above:
            we = min(1.0, w / max(tail_rate, 1e-3))
            tail_excess += we * (stat - p.tail_u - tail_excess)
        tail_seen += 1
    if territories is not None and count > 0 and (learning or not expected):
        # A window with no comments at all is a gap in the data, not a quiet site: learning it would make
        # every territory look "up" on the first busy window after it.
        expected = _follow(expected, territories, p.share_alpha, p.breadth_ratio)

    new_state = TerritoryState(
        key=key,
        last_window=window_start,
        seen=state.seen + 1,
        rate=rate,
        level=level,
        var=var,
        total_rate=total_rate,
        share_seen=state.share_seen + has_total,
        share_level=share_level,
        share_var=share_var,
        tail_seen=tail_seen,
        tail_rate=tail_rate,
        tail_excess=tail_excess,
        active=active,
        burst_id=burst_id,
        burst_start=burst_start,
        burst_windows=burst_windows,
        burst_sum=burst_sum,
        burst_share_sum=burst_share_sum,
        cool_run=cool_run,
        cooldown=cooldown,
        expected=expected,
    )
    verdict = Verdict(
        score=score,
        share_score=share_score,
        threshold=thr,
        baseline=baseline,
        transition=transition,
        active=active,
        burst_id=verdict_id,
        breadth=breadth,
    )
    return new_state, verdict
