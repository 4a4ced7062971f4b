"""Benchmark (not a test): precision, recall and delay of the detector on simulated traffic.

    python -m bench.detection [--seeds 1,2,3,4,5] [--rate 20000] [--r 20] [--hard] [--no-nab] [--json PATH]

Simulated figures first, then (unless ``--no-nab``) the same parameters on real data: NAB's realTweets dev
set (``bench.nab``, five series copied into ``bench/data/nab-tweets``), scored with NAB's standard profile.

Traffic: 43 territories (31 provinces, HK/MO/TW, CN without province, ZZ, 8 countries) with mean rates
proportional to their internet users (Guangdong largest), ``--rate`` comments per 60-s window in all at the
daily mean, a daily cycle (peak/trough ≈ 4, peak 21:30 Beijing time; overseas on their own clocks), and
over-dispersed noise: count ~ Poisson(mean × C × G) with G ~ Gamma(r, 1/r) per territory and window
(variance = mean + mean²/r) and a site-wide C ~ Gamma(r_common, 1/r_common) per window.

Scenarios, each 24 h of 60-s windows (plus a 2-hour warm-up that is not scored) per seed:

* ``null``: no injections. Every regional ``started`` is a false burst.
* ``injected``: bursts of 2×, 3×, 5×, 10× the territory's current mean, lasting 1, 2, 3, 5, 10 windows,
  ``--per-cell`` of each (size, duration) at random territories and times (≥ 90 windows apart in a
  territory). An injection is **detected** if a ``started`` of its territory falls in its windows or
  within 1 window after its last one; the delay is that window minus its first window. A ``started``
  that falls in no injection's windows (+1) is a **false positive**. Precision for a subset of
  injections = detected starts of the subset / (those + every false positive of the run). An injection
  is **eligible** when size × mean ≥ 20 comments a window (``ELIGIBLE_COUNT``).
* ``global``: every territory ×3 (and separately ×10) for 10 windows at once: any regional ``started``
  during it or within 10 windows after is a failure; the ``__global__`` series (with the breadth test)
  should start.

``--hard`` runs every scenario on traffic that looks more like real volume (``hard_effects``): two days a
run, heavier noise, unlabelled one-window spikes, level shifts, trends, a weekend day and a site-wide gap.
Its unlabelled spikes and shifts are not injections: a ``started`` on one counts as a false positive.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import nab
from streams.devtools.simulate import poisson
from streams.pipeline.detector import GLOBAL_KEY, DetectorParams, TerritoryState, step

# Internet users (millions, rough CNNIC-era orders of magnitude) and the UTC offset of the local day.
TERRITORIES: dict[str, tuple[float, float]] = {
    "CN-GD": (127, 8), "CN-SD": (85, 8), "CN-HA": (83, 8), "CN-JS": (79, 8), "CN-SC": (68, 8),
    "CN-HE": (64, 8), "CN-ZJ": (60, 8), "CN-HN": (56, 8), "CN-HB": (50, 8), "CN-AH": (50, 8),
    "CN-GX": (40, 8), "CN-FJ": (37, 8), "CN-LN": (35, 8), "CN-YN": (34, 8), "CN-JX": (34, 8),
    "CN-SN": (33, 8), "CN-GZ": (29, 8), "CN-SX": (28, 8), "CN-CQ": (25, 8), "CN-HL": (24, 8),
    "CN-SH": (22, 8), "CN-BJ": (20, 8), "CN-NM": (19, 8), "CN-XJ": (19, 6), "CN-JL": (18, 8),
    "CN-GS": (18, 8), "CN-TJ": (12, 8), "CN-HI": (8, 8), "CN-NX": (5.5, 8), "CN-QH": (4.5, 8),
    "CN-XZ": (2.7, 6), "HK": (6, 8), "MO": (0.8, 8), "TW": (3, 8), "CN": (4, 8), "ZZ": (2, 8),
    "US": (5, -6), "JP": (2, 9), "SG": (1, 8), "CA": (1.5, -6), "AU": (1.5, 10), "GB": (1, 0),
    "KR": (0.8, 9),
}  # fmt: skip

WINDOW_S = 60
DAY = 86400 // WINDOW_S
WARM = 120  # windows of warm-up before the scored day
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
SIZES = (2.0, 3.0, 5.0, 10.0)
DURATIONS = (1, 2, 3, 5, 10)
ELIGIBLE_COUNT = 20  # a burst of fewer comments a window is below what anyone would page on
DEFINITIONS = (
    "detected: a 'started' of the injected territory in the injected windows or within 1 window after; "
    "delay = that window - first injected window; false positive: a regional 'started' in no injection's "
    "windows (+1); precision(subset) = detected(subset) / (detected(subset) + all false positives); "
    "eligible: size x mean >= 20 comments a window"
)


# ----------------------------------------------------------------------------------------------------------
# Traffic
# ----------------------------------------------------------------------------------------------------------


def daily(offset_h: float, minute: int) -> float:
    """Daily profile, mean ≈ 1: peak at 21:30 local time, trough at 09:30, peak/trough ≈ 4."""
    h = (minute / 60.0 + offset_h) % 24.0
    return math.exp(0.7 * math.cos(2 * math.pi * (h - 21.5) / 24.0)) / 1.1323


@dataclass(frozen=True)
class Traffic:
    rate: float  # comments per window in all, at the daily mean
    r: float  # per-territory dispersion
    r_common: float  # site-wide dispersion
    hard: bool = False  # the hard mode: see hard_effects()

    @property
    def windows(self) -> int:
        return WARM + (HARD_DAYS if self.hard else 1) * DAY

    def means(self) -> dict[str, list[float]]:
        users = sum(u for u, _ in TERRITORIES.values())
        return {
            t: [self.rate * u / users * daily(off, (i - WARM) % DAY) for i in range(self.windows)]
            for t, (u, off) in TERRITORIES.items()
        }


HARD_DAYS = 2
HARD_R = 8.0  # per-territory dispersion in the hard mode (the normal mode's default is 20)
GAP_WINDOWS = 20  # a site-wide ingestion gap in the hard mode
HARD_DESCRIPTION = (
    f"{HARD_DAYS} days a run, r={HARD_R:g}, unlabelled one-window spikes x1.5-x3 in 0.3 % of windows, "
    "a level shift x0.5-x2 in a third of the territories, trends up to +-35 %/day, a weekend day at x0.7, "
    f"a {GAP_WINDOWS}-window site-wide gap"
)


def hard_effects(traffic: Traffic, seed: int) -> tuple[dict[str, list[float]], range]:
    """The hard mode's multipliers per territory and window, and its site-wide gap (windows with no data).

    Closer to real volume (NAB's realTweets) than the normal mode: heavier noise (``HARD_R``) with a
    Pareto tail of unlabelled one-window spikes (×1.5 to ×3, 0.3 % of windows: news nobody pages on), a
    level shift in a third of the territories (×0.5 to ×2 from a random time on, for good), a trend (up to
    ±35 % a day), a weekly cycle (the second day is a weekend: ×0.7 everywhere) and a gap of
    ``GAP_WINDOWS`` windows with no comments at all (an outage upstream) on the first day.
    """
    rng = random.Random(seed * 104729 + 7)
    n = traffic.windows
    out: dict[str, list[float]] = {}
    for t in sorted(TERRITORIES):
        shift_at = rng.randrange(WARM + 60, n - 60) if rng.random() < 1 / 3 else n
        shift = math.exp(rng.uniform(-math.log(2), math.log(2)))
        slope = rng.uniform(-0.3, 0.3) / DAY
        row = []
        for i in range(n):
            m = math.exp(slope * (i - WARM)) * (shift if i >= shift_at else 1.0)
            m *= 0.7 if i >= WARM + DAY else 1.0
            if rng.random() < 0.003:
                m *= min(1.0 + 0.5 * rng.paretovariate(2.0), 3.0)
            row.append(m)
        out[t] = row
    gap_start = WARM + rng.randrange(DAY // 4, 3 * DAY // 4)
    return out, range(gap_start, gap_start + GAP_WINDOWS)


@dataclass(frozen=True)
class Injection:
    territory: str
    start: int  # window index
    duration: int
    size: float
    mean: float  # the territory's mean at the start (before the multiplier)

    @property
    def end(self) -> int:
        return self.start + self.duration - 1


def simulate(
    traffic: Traffic, seed: int, injections: Sequence[Injection], surge: tuple[int, int, float] | None = None
) -> dict[str, list[int]]:
    rng = random.Random(seed)
    means = traffic.means()
    n = traffic.windows
    mult = {t: [1.0] * n for t in TERRITORIES}
    gap = range(0)
    r = traffic.r
    if traffic.hard:
        effects, gap = hard_effects(traffic, seed)
        mult = {t: list(effects[t]) for t in TERRITORIES}
        r = HARD_R
    for inj in injections:
        for i in range(inj.start, inj.end + 1):
            mult[inj.territory][i] *= inj.size
    if surge is not None:
        s0, s_len, s_size = surge
        for t in TERRITORIES:
            for i in range(s0, s0 + s_len):
                mult[t][i] *= s_size
    common = [rng.gammavariate(traffic.r_common, 1 / traffic.r_common) for _ in range(n)]
    return {
        t: [
            0 if i in gap else poisson(rng, means[t][i] * mult[t][i] * common[i] * rng.gammavariate(r, 1 / r))
            for i in range(n)
        ]
        for t in TERRITORIES
    }


def plan_injections(
    traffic: Traffic, seed: int, per_cell: int, sim_seed: int | None = None
) -> list[Injection]:
    """Injections at random territories and times; in the hard mode (effects of ``simulate(..., sim_seed)``)
    never in or next to the gap, and with the mean the territory has there after its shift and trend."""
    rng = random.Random(seed * 7919 + 1)
    means = traffic.means()
    gap = range(0)
    if traffic.hard:
        effects, gap = hard_effects(traffic, seed if sim_seed is None else sim_seed)
        means = {t: [m * e for m, e in zip(means[t], effects[t], strict=True)] for t in TERRITORIES}
    taken: dict[str, list[int]] = {t: [] for t in TERRITORIES}
    out: list[Injection] = []
    names = sorted(TERRITORIES)
    for size in SIZES:
        for duration in DURATIONS:
            for _ in range(per_cell):
                while True:
                    t = rng.choice(names)
                    start = rng.randrange(WARM + 30, traffic.windows - 20)
                    near_gap = gap and gap.start - 40 <= start <= gap.stop + 40
                    if not near_gap and all(abs(start - s) >= 90 for s in taken[t]):
                        break
                taken[t].append(start)
                out.append(Injection(t, start, duration, size, means[t][start]))
    return out


# ----------------------------------------------------------------------------------------------------------
# Running the detector
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    starts: dict[str, list[int]] = field(default_factory=dict)  # territory -> window indexes of "started"
    global_starts: list[int] = field(default_factory=list)


def run_detector(series: dict[str, list[int]], params: DetectorParams) -> Run:
    n = len(next(iter(series.values())))
    totals = [sum(series[t][i] for t in series) for i in range(n)]
    run = Run(starts={t: [] for t in series})
    states: dict[str, TerritoryState | None] = dict.fromkeys(series)
    g: TerritoryState | None = None
    for i in range(n):
        ws = T0 + i * WINDOW_S
        for t, counts in series.items():
            states[t], v = step(
                states[t], key=t, window_start=ws, count=counts[i], total=totals[i], params=params
            )
            if v.transition == "started" and i >= WARM:
                run.starts[t].append(i)
        g, gv = step(
            g,
            key=GLOBAL_KEY,
            window_start=ws,
            count=totals[i],
            total=None,
            params=params,
            territories={t: counts[i] for t, counts in series.items()},
        )
        if gv.transition == "started" and i >= WARM:
            run.global_starts.append(i)
    return run


@dataclass
class Cell:
    injected: int = 0
    eligible: int = 0
    detected: int = 0
    detected_eligible: int = 0
    delays: list[int] = field(default_factory=list)  # eligible detections


def evaluate(
    run: Run, injections: Sequence[Injection], min_count: int
) -> tuple[dict[tuple[float, int], Cell], int]:
    cells = {(s, d): Cell() for s in SIZES for d in DURATIONS}
    matched: set[tuple[str, int]] = set()
    for inj in injections:
        cell = cells[(inj.size, inj.duration)]
        eligible = inj.size * inj.mean >= min_count
        cell.injected += 1
        cell.eligible += eligible
        hits = [w for w in run.starts[inj.territory] if inj.start <= w <= inj.end + 1]
        for w in hits:
            matched.add((inj.territory, w))
        if hits:
            cell.detected += 1
            if eligible:
                cell.detected_eligible += 1
                cell.delays.append(hits[0] - inj.start)
    false_pos = sum(1 for t, ws in run.starts.items() for w in ws if (t, w) not in matched)
    return cells, false_pos


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3,4,5,6,7,8", help="comma-separated seeds")
    ap.add_argument("--rate", type=float, default=20000.0, help="comments per 60-s window, all territories")
    ap.add_argument("--r", type=float, default=20.0, help="per-territory dispersion (variance = m + m²/r)")
    ap.add_argument("--r-common", type=float, default=100.0, help="site-wide dispersion")
    ap.add_argument("--per-cell", type=int, default=3, help="injections per (size, duration) per seed")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--hard", action="store_true", help="the hard mode (see hard_effects): 2 days per seed")
    ap.add_argument("--no-nab", action="store_true", help="skip the NAB realTweets score (bench.nab)")
    ap.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="override a DetectorParams field"
    )
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    params = DetectorParams()
    for p in args.param:
        name, _, value = p.partition("=")
        kind: Callable[[str], Any] = type(getattr(params, name))
        params = replace(params, **{name: (value.lower() in ("1", "true")) if kind is bool else kind(value)})
    traffic = Traffic(args.rate, args.r, args.r_common, hard=args.hard)
    t_start = time.perf_counter()

    null_fp: list[int] = []
    null_global: list[int] = []
    all_cells = {(s, d): Cell() for s in SIZES for d in DURATIONS}
    inj_fp: list[int] = []
    surge_results: list[dict[str, Any]] = []
    for seed in seeds:
        run = run_detector(simulate(traffic, seed, []), params)
        null_fp.append(sum(len(v) for v in run.starts.values()))
        null_global.append(len(run.global_starts))

        injections = plan_injections(traffic, seed, args.per_cell, sim_seed=seed + 1000)
        run = run_detector(simulate(traffic, seed + 1000, injections), params)
        cells, fp = evaluate(run, injections, ELIGIBLE_COUNT)
        inj_fp.append(fp)
        for k, c in cells.items():
            a = all_cells[k]
            a.injected += c.injected
            a.eligible += c.eligible
            a.detected += c.detected
            a.detected_eligible += c.detected_eligible
            a.delays += c.delays

        for size in (3.0, 10.0):
            s0 = WARM + random.Random(seed).randrange(120, DAY - 120)
            run = run_detector(simulate(traffic, seed + 2000, [], (s0, 10, size)), params)
            regional = sum(1 for ws in run.starts.values() for w in ws if s0 <= w <= s0 + 20)
            anywhere = sum(len(ws) for ws in run.starts.values())
            fired = any(s0 <= w <= s0 + 10 for w in run.global_starts)
            surge_results.append(
                {"seed": seed, "size": size, "regional_starts": regional, "regional_starts_all_day": anywhere,
                 "global_fired": fired}
            )  # fmt: skip

    def pct(a: int, b: int) -> str:
        return f"{a / b:6.3f}" if b else "     -"

    out: dict[str, Any] = {
        "params": asdict(params),
        "traffic": asdict(traffic),
        "seeds": seeds,
        "definitions": DEFINITIONS,
    }
    print(
        f"shudi detector bench: {len(seeds)} seeds, {len(TERRITORIES)} territories, "
        f"rate {args.rate:g}/window,"
    )
    print(f"  r={args.r:g} per territory, r_common={args.r_common:g}; params: {asdict(params)}")
    if traffic.hard:
        print(f"  HARD mode: {HARD_DESCRIPTION}")
    print(f"definitions: {DEFINITIONS}\n")

    total_fp = sum(inj_fp)
    print("injected run, by size and duration (eligible injections; all injections in brackets)")
    print(f"{'size':>5} {'dur':>4} {'n':>5} {'recall':>7} {'(all)':>7} {'delay med':>9} {'delay p90':>9}")
    rows: list[dict[str, Any]] = []
    for (size, dur), c in sorted(all_cells.items()):
        med = statistics.median(c.delays) if c.delays else None
        p90 = sorted(c.delays)[int(0.9 * (len(c.delays) - 1))] if c.delays else None
        print(
            f"{size:>4g}x {dur:>4} {c.eligible:>5} {pct(c.detected_eligible, c.eligible):>7} "
            f"{pct(c.detected, c.injected):>7} {_fmt(med):>9} {_fmt(p90):>9}"
        )
        rows.append(
            {"size": size, "duration": dur, "injected": c.injected, "eligible": c.eligible,
             "detected": c.detected, "detected_eligible": c.detected_eligible, "median_delay": med,
             "p90_delay": p90}
        )  # fmt: skip
    out["cells"] = rows

    print("\nby size (durations >= 3 windows, eligible):")
    print(f"{'size':>5} {'n':>5} {'recall':>7} {'precision':>9} {'delay med':>9}")
    by_size: list[dict[str, Any]] = []
    for size in SIZES:
        cs = [c for (s, d), c in all_cells.items() if s == size and d >= 3]
        n = sum(c.eligible for c in cs)
        det = sum(c.detected_eligible for c in cs)
        delays = [x for c in cs for x in c.delays]
        med = statistics.median(delays) if delays else None
        print(f"{size:>4g}x {n:>5} {pct(det, n):>7} {pct(det, det + total_fp):>9} {_fmt(med):>9}")
        by_size.append({"size": size, "eligible": n, "detected": det, "median_delay": med})
    out["by_size_dur3plus"] = by_size

    goal = [c for (s, d), c in all_cells.items() if s >= 3 and d >= 3]
    g_n = sum(c.eligible for c in goal)
    g_det = sum(c.detected_eligible for c in goal)
    g_delays = [x for c in goal for x in c.delays]
    g_med = statistics.median(g_delays) if g_delays else None
    all_det = sum(c.detected for c in all_cells.values())
    recall = g_det / g_n if g_n else 0.0
    precision = g_det / (g_det + total_fp) if g_det + total_fp else 0.0
    print(
        f"\ngoal subset (>=3x, >=3 windows, eligible): n={g_n} recall={recall:.3f} precision={precision:.3f} "
        f"median delay={g_med}"
    )
    print(
        f"injected run: false positives per seed {inj_fp}; "
        f"overall precision {pct(all_det, all_det + total_fp)}"
    )
    span = f"{HARD_DAYS * 24} h" if traffic.hard else "24 h"
    print(f"null {span}: regional false bursts per seed {null_fp}; global starts per seed {null_global}")
    for s in surge_results:
        print(
            f"global surge x{s['size']:g} (seed {s['seed']}): regional starts {s['regional_starts']} "
            f"(all day {s['regional_starts_all_day']}), global fired {s['global_fired']}"
        )
    out["goal"] = {"eligible": g_n, "detected": g_det, "recall": recall, "precision": precision,
                   "median_delay": g_med}  # fmt: skip
    out["injected_false_positives"] = inj_fp
    out["null_false_bursts"] = null_fp
    out["null_global_starts"] = null_global
    out["global_surge"] = surge_results
    if not args.no_nab:
        # Real data beside the simulator: the same parameters on NAB's realTweets (5-minute windows).
        scores = nab.evaluate(replace(params, window_s=300))
        print("\n" + nab.report(scores))
        out["nab"] = {"score": nab.normalised(scores), "files": [asdict(f) for f in scores]}
    print(f"\n({time.perf_counter() - t_start:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    ok = (
        recall >= 0.95
        and precision >= 0.95
        and g_med is not None
        and g_med <= 1
        and sum(null_fp) == 0
        and sum(null_global) == 0
        and all(s["regional_starts"] == 0 and s["global_fired"] for s in surge_results)
    )
    print("goals met" if ok else "goals NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
