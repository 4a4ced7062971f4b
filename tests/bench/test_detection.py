"""bench.detection: the simulator bench still runs (not timed here); its hard mode has what it says."""

from __future__ import annotations

import json
from pathlib import Path

from bench import detection
from bench.detection import DAY, GAP_WINDOWS, WARM, Traffic, hard_effects, plan_injections, simulate


def test_hard_mode_has_gap_weekend_shifts_and_spikes() -> None:
    traffic = Traffic(20000, 20, 100, hard=True)
    effects, gap = hard_effects(traffic, 5)
    assert len(gap) == GAP_WINDOWS
    assert gap.start >= WARM  # on the first day
    assert gap.stop <= WARM + DAY
    series = simulate(traffic, 5, [])
    assert all(len(s) == traffic.windows == WARM + 2 * DAY for s in series.values())
    assert all(s[i] == 0 for s in series.values() for i in gap)
    gd = effects["CN-GD"]
    assert gd[WARM + DAY] / gd[WARM + DAY - 1] < 0.8  # the weekend starts (0.7, times a tiny trend)
    ratios = [row[i + 1] / row[i] for row in effects.values() for i in range(len(row) - 1)]
    spikes = sum(r > 1.4 for r in ratios)
    assert 0.001 < spikes / len(ratios) < 0.01  # one-window spikes (and shifts up), a few per thousand
    injections = plan_injections(traffic, 5, 1, sim_seed=5)
    assert all(not (gap.start - 40 <= inj.start <= gap.stop + 40) for inj in injections)


def test_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    detection.main(["--seeds", "1", "--per-cell", "1", "--no-nab", "--json", str(out)])
    figures = json.loads(out.read_text())
    assert {"goal", "null_false_bursts", "null_global_starts", "global_surge"} <= figures.keys()
    assert figures["null_false_bursts"] == [0]
