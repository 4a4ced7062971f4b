"""Regional burst detection on per-territory comment counts: pure, deterministic, no Faust, no Kafka.

One call of :func:`step` consumes one window (``count`` comments of territory ``key`` in the window that
starts at ``window_start``, and ``total`` comments of all territories in that window) and returns the new
state and a :class:`Verdict`. The state is a small :class:`TerritoryState` that :func:`encode_state` /
:func:`decode_state` turn into bytes for a Faust table.

The model
---------
*Own baseline.* Counts are over-dispersed (variance ≫ mean) and follow a daily cycle, so they are scored on
the log scale, ``y = ln(count + 1)``, where a multiplicative rise is a shift of the same size at any volume.
The expected value is an EWMA ``level`` (plus, with ``seasonal``, a per-slot-of-day profile); the variance
is ``1 / (baseline + 1) + disp``: the first term is the Poisson variance on the log scale (the floor, so
that small counts are judged by counting noise alone), ``disp`` the extra, over-dispersion variance, an EWMA
of squared residuals minus that floor, never below 0. ``score = (y - expected) / sqrt(variance)``. Because
the Poisson term follows the current baseline, the variance follows the daily cycle too.

*Share of all comments.* With ``total`` given, the territory's log odds against every other territory,
``x = ln((count + 0.5) / (total - count + 0.5))``, is scored the same way against its own EWMA, with the
binomial variance on that scale, ``1/(p·total + 1) + 1/((1 - p)·total + 1)``, as floor: ``share_score``.
A rise of the whole site (a national news story) moves ``score`` of every territory but leaves every
``x`` where it was.

*How the two combine.* A window is a **candidate** for territory ``key`` when all of these hold:
``windows seen ≥ warmup_windows`` (and as many windows with a ``total``, when ``total`` is given),
``count ≥ min_count``, ``count ≥ min_ratio · baseline``, ``score ≥ off_threshold`` and (unless ``total``
is None) ``share_score ≥ off_threshold``. A burst **starts** on the ``on_windows``-th consecutive
candidate window if, over those ``on_windows`` windows, the mean ``score ≥ on_threshold`` **and** the mean
``share_score ≥ share_threshold``: averaging two windows' evidence is a short CUSUM, it detects a 3× step
far more reliably at the same false-alarm rate than requiring each window to pass. Its ``burst_id`` is
``"{key}@{first of those windows}"``. A window is **cool** when ``score < off_threshold`` or
``share_score < off_threshold``; an active burst **ends** after ``off_windows`` consecutive cool windows.
So a regional burst needs the territory to be far above its own history *and* to have taken a clearly
larger share of all comments; it stays on while both remain raised. Under a global surge every ``score``
is high but no ``share_score`` is, so no territory fires. The global-surge detector is the same code with
``key="__global__"``, ``count=total``, ``total=None``: the share test is then skipped.

*Robustness.* The baseline never learns from the burst it measures: while a burst is active the level
and variance are frozen (unless the burst has lasted ``adapt_after`` windows: then it is taken for a new
normal, the baseline follows again and the burst ends when it has caught up). Outside bursts, every
residual used to update the level is clipped to ``±huber_k`` standard deviations (a Huber update), and
windows scoring ``≥ on_threshold`` do not update the variance; the same holds for the share baseline.
During warm-up the level is a plain running mean and nothing fires.

*Order and gaps.* Windows must be fed in increasing ``window_start`` order. A window at or before the last
one seen (a replay after a restart) changes nothing and returns a verdict with ``stale=True``; a burst is
therefore never fired twice, and a worker restarted from an older saved state that replays the same
windows reaches the same states, verdicts and burst ids. Missing windows are the caller's to feed, as
count 0 (and total 0, which skips the share update): :func:`missing_windows` lists them and
:func:`fill_gaps` inserts them into a series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

Transition = Literal["none", "started", "ongoing", "ended"]
GLOBAL_KEY: Final = "__global__"
STATE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """Every tunable of :func:`step`. The defaults were tuned with ``python -m bench.detection``."""

    window_s: int = 60
    """Length of a window in seconds (60). Needed for ``seasonal`` slots and :func:`missing_windows`."""
    warmup_windows: int = 30
    """Windows of a territory (30) before it may fire; during warm-up the level is a running mean."""
    alpha: float = 0.05
    """EWMA weight of a new window in the level (0.05: a time constant of ~20 windows)."""
    var_alpha: float = 0.02
    """EWMA weight of a new squared residual in the over-dispersion estimate (0.02: ~50 windows)."""
    huber_k: float = 2.5
    """Residuals are clipped to ±huber_k sd before they update the level (2.5; ±off_threshold in a candidate
    window, so that a burst's first windows barely move the baseline)."""
    min_count: int = 20
    """A window with fewer comments than this never starts a burst (20): 3 → 9 comments is not a burst."""
    min_ratio: float = 1.5
    """A candidate window has count ≥ min_ratio × the expected count (1.5)."""
    on_threshold: float = 3.2
    """Mean own score (sd, log scale) over the on_windows candidate windows that starts a burst (3.2)."""
    share_threshold: float = 3.2
    """Mean share score over those windows that starts a burst, when ``total`` is given (3.2)."""
    off_threshold: float = 1.5
    """Below this own or share score a window is cool, and not a candidate (1.5)."""
    on_windows: int = 2
    """Consecutive candidate windows that start a burst (2): reported on the 2nd, a delay of 1 window."""
    off_windows: int = 2
    """Consecutive cool windows that end a burst (2)."""
    adapt_after: int = 60
    """After this many windows active, a burst is taken for a new normal and the baseline follows (60)."""
    seasonal: bool = False
    """Add a per-slot-of-day profile to the expected log count (off: the EWMA follows a daily cycle)."""
    seasonal_slots: int = 24
    """Slots per day of the seasonal profile (24: hourly); must divide 86400 / window_s evenly."""
    seasonal_alpha: float = 0.02
    """EWMA weight of a window in its slot's seasonal offset (0.02)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.window_s <= 0:
            problems.append("window_s must be > 0")
        if self.warmup_windows < 1:
            problems.append("warmup_windows must be ≥ 1")
        for name in ("alpha", "var_alpha", "seasonal_alpha"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                problems.append(f"{name} must be in (0, 1]")
        if self.huber_k <= 0:
            problems.append("huber_k must be > 0")
        if self.min_count < 0:
            problems.append("min_count must be ≥ 0")
        if self.min_ratio < 0:
            problems.append("min_ratio must be ≥ 0")
        if self.off_threshold > self.on_threshold:
            problems.append("off_threshold must be ≤ on_threshold")
        if self.on_windows < 1 or self.off_windows < 1:
            problems.append("on_windows and off_windows must be ≥ 1")
        if self.adapt_after < 1:
            problems.append("adapt_after must be ≥ 1")
        if self.seasonal_slots < 1 or 86400 % self.seasonal_slots:
            problems.append("seasonal_slots must divide 86400")
        if problems:
            raise ValueError("; ".join(problems))


class Recent(msgspec.Struct, frozen=True, array_like=True):
    """One candidate window remembered while a burst may be starting."""

    window_start: int
    score: float
    share_score: float | None


class TerritoryState(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`step` remembers of one territory (about 200 bytes encoded)."""

    key: str
    last_window: int  # window_start of the last window consumed
    seen: int = 0  # windows consumed
    level: float = 0.0  # EWMA of ln(count + 1), without the seasonal offset
    disp: float = 0.0  # over-dispersion: variance of ln(count + 1) above the Poisson floor
    share_seen: int = 0  # windows consumed with a total > 0
    share_level: float = 0.0  # EWMA of ln((count + .5) / (total - count + .5))
    share_disp: float = 0.0
    season: tuple[float, ...] = ()  # per-slot offsets of the log level (empty unless seasonal)
    recent: tuple[
        Recent, ...
    ] = ()  # the last (up to on_windows) consecutive candidate windows, while inactive
    cool_run: int = 0  # consecutive cool windows while active
    active: bool = False
    burst_id: str | None = None
    burst_start: int | None = None  # first window of the active burst
    burst_windows: int = 0  # windows of the active burst so far
    v: int = STATE_VERSION


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`step` says about one window."""

    score: float  # own-baseline score (standard deviations on the log scale); nan when stale
    share_score: float | None  # share-of-all-comments score; None without a total or when stale
    baseline: float  # expected count of the window, in comments
    transition: Transition
    active: bool  # a burst is active after this window (True on "started" and "ongoing")
    burst_id: str | None  # the burst's id on "started", "ongoing" and "ended"
    stale: bool = False  # the window was at or before the last one consumed: nothing changed


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(TerritoryState)


def encode_state(state: TerritoryState) -> bytes:
    """The state as msgpack bytes (for a Faust table with a raw value serializer)."""
    return _ENCODER.encode(state)


def decode_state(data: bytes) -> TerritoryState:
    """The inverse of :func:`encode_state`; raises ``msgspec.DecodeError`` (a ValueError) on bad data."""
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


def _clip(x: float, k: float) -> float:
    return k if x > k else -k if x < -k else x


# E[min(Z², k²)] for a standard normal Z: clipping squared residuals at k sd biases the variance down by it.
def _clipped_second_moment(k: float) -> float:
    tail = math.erfc(k / math.sqrt(2.0))  # P(|Z| > k)
    pdf = math.exp(-k * k / 2.0) / math.sqrt(2.0 * math.pi)
    return (1.0 - tail) - 2.0 * k * pdf + k * k * tail


def _hot(recent: tuple[Recent, ...], params: DetectorParams) -> bool:
    """The mean own score, and the mean share score, of the candidate windows reach their thresholds."""
    n = len(recent)
    if sum(r.score for r in recent) < params.on_threshold * n:
        return False
    shares = [r.share_score for r in recent if r.share_score is not None]
    return len(shares) < n or sum(shares) >= params.share_threshold * n


def _slot(window_start: int, params: DetectorParams) -> int:
    return (window_start % 86400) // (86400 // params.seasonal_slots)


def step(
    state: TerritoryState | None,
    *,
    key: str,
    window_start: int,
    count: int,
    total: int | None,
    params: DetectorParams,
) -> tuple[TerritoryState, Verdict]:
    """Consume one window of ``key`` and return the new state and the verdict on the window.

    ``state`` is None for a territory never seen. ``total`` is the count of all territories in the window
    (None: no share test, e.g. for the global series). Raises ValueError if ``count < 0``, ``total <
    count`` or ``state`` belongs to another key.
    """
    if count < 0:
        raise ValueError(f"count must be ≥ 0, got {count}")
    if total is not None and total < count:
        raise ValueError(f"total ({total}) must be ≥ count ({count})")
    if state is None:
        season = (0.0,) * params.seasonal_slots if params.seasonal else ()
        state = TerritoryState(key=key, last_window=window_start - params.window_s, season=season)
    elif state.key != key:
        raise ValueError(f"state of {state.key!r} given for {key!r}")
    elif params.seasonal and len(state.season) != params.seasonal_slots:
        state = msgspec.structs.replace(state, season=(0.0,) * params.seasonal_slots)

    slot = _slot(window_start, params) if state.season else -1
    offset = state.season[slot] if slot >= 0 else 0.0
    expected = state.level + offset
    baseline = max(math.expm1(expected), 0.0)

    if window_start <= state.last_window:
        verdict = Verdict(
            score=math.nan,
            share_score=None,
            baseline=baseline,
            transition="none",
            active=state.active,
            burst_id=state.burst_id,
            stale=True,
        )
        return state, verdict

    warm = state.seen >= params.warmup_windows
    k = params.huber_k

    # --- own baseline --------------------------------------------------------------------------------------
    y = math.log1p(count)
    floor = 1.0 / (baseline + 1.0)
    sd = math.sqrt(floor + state.disp)
    resid = y - expected
    score = resid / sd if state.seen else 0.0

    # --- share of all comments ---------------------------------------------------------------------------
    share_score: float | None = None
    share_resid = 0.0
    share_sd = 1.0
    share_floor = 0.0
    has_share = total is not None and total > 0
    if total is not None and total > 0:
        x = math.log((count + 0.5) / (total - count + 0.5))
        share_resid = x - state.share_level
        if state.share_seen:
            p = 1.0 / (1.0 + math.exp(-state.share_level))
            share_floor = 1.0 / (p * total + 1.0) + 1.0 / ((1.0 - p) * total + 1.0)
            share_sd = math.sqrt(share_floor + state.share_disp)
            share_score = share_resid / share_sd
        else:
            share_score = 0.0
    share_warm = total is None or state.share_seen >= params.warmup_windows

    # --- hysteresis ----------------------------------------------------------------------------------------
    candidate = (
        warm
        and share_warm
        and count >= params.min_count
        and count >= params.min_ratio * baseline
        and score >= params.off_threshold
        and (share_score is None or share_score >= params.off_threshold)
    )
    cool = score < params.off_threshold or (share_score is not None and share_score < params.off_threshold)

    active = state.active
    burst_id = state.burst_id
    burst_start = state.burst_start
    burst_windows = state.burst_windows
    recent, cool_run = state.recent, state.cool_run
    transition: Transition = "none"
    verdict_id: str | None = None
    if not active:
        recent = (
            (*recent, Recent(window_start, score, share_score))[-params.on_windows :] if candidate else ()
        )
        if len(recent) == params.on_windows and _hot(recent, params):
            active, transition = True, "started"
            burst_start, burst_windows = recent[0].window_start, 1
            burst_id = verdict_id = burst_id_for(key, burst_start)
            recent, cool_run = (), 0
    else:
        burst_windows += 1
        cool_run = cool_run + 1 if cool else 0
        verdict_id = burst_id
        if cool_run >= params.off_windows:
            active, transition = False, "ended"
            burst_id, burst_start, burst_windows, cool_run = None, None, 0, 0
        else:
            transition = "ongoing"

    # --- baseline updates (after scoring, so a window is never judged against itself) ---------------------
    frozen = active and burst_windows <= params.adapt_after
    level, disp = state.level, state.disp
    season = state.season
    if not warm:
        n = state.seen + 1
        level += (y - expected) / n
        if state.seen:
            disp += (resid * resid - floor - disp) / state.seen
    elif not frozen:
        step_resid = _clip(resid / sd, min(k, params.off_threshold) if candidate else k) * sd
        level += params.alpha * step_resid
        if slot >= 0:
            season = (
                *season[:slot],
                season[slot] + params.seasonal_alpha * step_resid,
                *season[slot + 1 :],
            )
        if score < params.on_threshold:
            sq = step_resid * step_resid / _clipped_second_moment(k)
            disp += params.var_alpha * (sq - floor - disp)
    disp = max(disp, 0.0)

    share_level, share_disp, share_seen = state.share_level, state.share_disp, state.share_seen
    if has_share:
        if state.share_seen < params.warmup_windows:
            share_level += share_resid / (state.share_seen + 1)
            if state.share_seen:
                share_disp += (share_resid * share_resid - share_floor - share_disp) / state.share_seen
        elif not frozen:
            step_resid = _clip(share_resid / share_sd, k) * share_sd
            share_level += params.alpha * step_resid
            if share_score is not None and share_score < params.share_threshold:
                sq = step_resid * step_resid / _clipped_second_moment(k)
                share_disp += params.var_alpha * (sq - share_floor - share_disp)
        share_disp = max(share_disp, 0.0)
        share_seen += 1

    new_state = TerritoryState(
        key=key,
        last_window=window_start,
        seen=state.seen + 1,
        level=level,
        disp=disp,
        share_seen=share_seen,
        share_level=share_level,
        share_disp=share_disp,
        season=season,
        recent=recent,
        cool_run=cool_run,
        active=active,
        burst_id=burst_id,
        burst_start=burst_start,
        burst_windows=burst_windows,
    )
    verdict = Verdict(
        score=score,
        share_score=share_score,
        baseline=baseline,
        transition=transition,
        active=active,
        burst_id=verdict_id,
    )
    return new_state, verdict
