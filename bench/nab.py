"""The detector on real social-media volume, scored the way NAB scores it (not a test; prints figures).

Data: five series of NAB's realTweets (Twitter mentions of AAPL, CRM, FB, IBM, PFE per 5 minutes, Feb-Apr
2015) with NAB's labelled anomaly windows, copied into ``bench/data/nab-tweets/`` with NAB's licence (MIT,
``LICENSE-NAB.txt``). Scoring: NAB's standard profile (a detection inside a labelled window earns up to 1,
the earlier the more; a window without one costs 1; a detection outside costs up to 0.11; the first 15 %
of each file, at most 750 rows, is probationary and not scored), normalised as NAB does,
``100 * (raw + windows) / (2 * windows)``: the null detector (never fires) scores 0, a perfect one 100.
This module re-implements the part of NAB's ``nab/sweeper.py`` (Numenta, MIT) that scores one threshold of
a detector whose output is 0 or 1; ``tests/bench/test_nab.py`` pins it to NAB's own numbers.

    python -m bench.nab [--param NAME=VALUE ...]

Detections are ``started`` transitions of ``streams.pipeline.detector.step`` run with the default
parameters (``window_s`` = 300, the data's step), exactly as ``shudi detect-bursts`` runs it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from streams.pipeline.detector import DetectorParams, TerritoryState, step

DATA = Path(__file__).resolve().parent / "data" / "nab-tweets"
TP_WEIGHT, FN_WEIGHT, FP_WEIGHT = 1.0, 1.0, 0.11  # NAB's "standard" profile
PROBATION = 0.15

# Published scores of NAB's detectors on these five series (NAB's results, standard profile), for the table.
PUBLISHED: dict[str, tuple[float, int, int]] = {
    "CAD OSE": (86.1, 14, 5),
    "ARTime": (82.0, 15, 37),
    "earthgecko Skyline": (72.0, 15, 68),
    "Numenta HTM": (71.7, 13, 30),
    "Twitter ADVec": (62.7, 14, 73),
    "Windowed Gaussian (rolling z-score)": (56.2, 13, 76),
}


@dataclass(frozen=True)
class Series:
    name: str
    timestamps: list[datetime]
    values: list[int]
    windows: list[tuple[datetime, datetime]]


@dataclass(frozen=True)
class FileScore:
    name: str
    raw: float
    windows: int
    hits: int  # windows with a detection
    false_positives: int  # detections outside every window (after probation)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.strip()[:19])


def load(data: Path = DATA) -> list[Series]:
    """The series and their labelled windows, in file-name order."""
    windows = json.loads((data / "windows.json").read_text(encoding="utf-8"))
    out = []
    for name in sorted(windows):
        with (data / name).open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        out.append(
            Series(
                name=name,
                timestamps=[_ts(t) for t, _ in rows],
                values=[int(v) for _, v in rows],
                windows=[(_ts(a), _ts(b)) for a, b in windows[name]],
            )
        )
    return out


def scaled_sigmoid(position: float) -> float:
    """NAB's reward for a detection at ``position`` relative to a window's right edge (-1: left edge)."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def score_file(
    name: str,
    timestamps: Sequence[datetime],
    detections: Sequence[bool],
    windows: Sequence[tuple[datetime, datetime]],
) -> FileScore:
    """NAB's score of one file for a 0/1 detector (``Sweeper.scoreDataSet`` at threshold 0.5)."""
    index = {t: i for i, t in enumerate(timestamps)}
    bounds = [(index[a], index[b]) for a, b in windows]
    probation = min(math.floor(PROBATION * len(timestamps)), PROBATION * 5000)
    max_tp = scaled_sigmoid(-1.0)
    best: dict[int, float] = {}  # window -> best detection score, for windows that reach past probation
    fp_total, fps = 0.0, 0
    prev: tuple[int, int] | None = None  # the last window passed: (right index, width)
    w = 0
    for i, hit in enumerate(detections):
        while w < len(bounds) and i > bounds[w][1]:
            prev = (bounds[w][1], bounds[w][1] - bounds[w][0] + 1)
            w += 1
        inside = w < len(bounds) and bounds[w][0] <= i
        if i < probation:
            continue
        if inside:
            best.setdefault(w, -FN_WEIGHT)
            if hit:
                left, right = bounds[w]
                position = -(right - i + 1) / (right - left + 1)
                best[w] = max(best[w], scaled_sigmoid(position) * TP_WEIGHT / max_tp)
        elif hit:
            unweighted = -1.0 if prev is None else scaled_sigmoid(abs(prev[0] - i) / (prev[1] - 1))
            fp_total += unweighted * FP_WEIGHT
            fps += 1
    hits = sum(1 for s in best.values() if s > -FN_WEIGHT)
    return FileScore(name, sum(best.values()) + fp_total, len(windows), hits, fps)


def normalised(scores: Sequence[FileScore]) -> float:
    """NAB's normalised score of a corpus: 0 for the null detector, 100 for a perfect one."""
    windows = sum(s.windows for s in scores)
    return 100.0 * (sum(s.raw for s in scores) + windows) / (2 * windows)


def detections(series: Series, params: DetectorParams) -> list[bool]:
    """Where the detector starts a burst on one series (as ``shudi detect-bursts`` runs it)."""
    state: TerritoryState | None = None
    out = []
    for t, value in zip(series.timestamps, series.values, strict=True):
        start = int(t.replace(tzinfo=UTC).timestamp())
        state, verdict = step(state, key="series", window_start=start, count=value, total=None, params=params)
        out.append(verdict.transition == "started")
    return out


def evaluate(params: DetectorParams | None = None, data: Path = DATA) -> list[FileScore]:
    params = params or DetectorParams(window_s=300)
    return [score_file(s.name, s.timestamps, detections(s, params), s.windows) for s in load(data)]


def report(scores: Sequence[FileScore]) -> str:
    total = normalised(scores)
    hits = sum(s.hits for s in scores)
    windows = sum(s.windows for s in scores)
    fps = sum(s.false_positives for s in scores)
    lines = ["NAB realTweets dev set (5 series, real data), standard profile:"]
    lines += [
        f"  {s.name}: {s.hits}/{s.windows} windows, {s.false_positives} outside, raw {s.raw:.2f}"
        for s in scores
    ]
    lines.append(
        f"  shudi (defaults): NAB score {total:.1f} ({hits}/{windows} windows, {fps} outside windows)"
    )
    lines.append("  published on the same series: " + ", ".join(f"{k} {v[0]}" for k, v in PUBLISHED.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a DetectorParams field"
    )
    args = ap.parse_args(argv)
    params = DetectorParams(window_s=300)
    for p in args.param:
        name, _, value = p.partition("=")
        params = replace(params, **{name: type(getattr(params, name))(value)})
    print(report(evaluate(params)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
