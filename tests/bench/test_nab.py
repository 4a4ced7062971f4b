"""bench.nab: the NAB scorer for 0/1 detectors, and the detector's figure on the copied data."""

from __future__ import annotations

import random

import pytest

from bench import nab
from streams.pipeline.detector import DetectorParams

SERIES = {s.name: s for s in nab.load()}
FB = SERIES["Twitter_volume_FB.csv"]


def test_the_data_and_its_licence_are_in_the_project() -> None:
    assert sorted(SERIES) == [f"Twitter_volume_{t}.csv" for t in ("AAPL", "CRM", "FB", "IBM", "PFE")]
    assert sum(len(s.windows) for s in SERIES.values()) == 15
    assert "Numenta" in (nab.DATA / "LICENSE-NAB.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("seed", "raw", "false_positives"),
    # NAB's own nab/sweeper.py (Sweeper.scoreDataSet, standard profile, threshold 0.5) on the same input.
    [(1, -0.6207880371682225, 17), (2, 0.30931513122529475, 13)],
)
def test_scores_equal_nabs_sweeper(seed: int, raw: float, false_positives: int) -> None:
    rng = random.Random(seed)
    detections = [rng.random() < 0.001 for _ in FB.values]
    score = nab.score_file(FB.name, FB.timestamps, detections, FB.windows)
    assert score.raw == pytest.approx(raw, abs=1e-12)
    assert score.false_positives == false_positives


def test_null_detector_scores_0_and_a_perfect_one_100() -> None:
    null = [nab.score_file(s.name, s.timestamps, [False] * len(s.values), s.windows) for s in SERIES.values()]
    assert nab.normalised(null) == pytest.approx(0.0)
    perfect = []
    for s in SERIES.values():
        starts = {a for a, _ in s.windows}
        perfect.append(nab.score_file(s.name, s.timestamps, [t in starts for t in s.timestamps], s.windows))
    assert nab.normalised(perfect) == pytest.approx(100.0)
    assert all(p.hits == p.windows and p.false_positives == 0 for p in perfect)


def test_default_detector_on_real_volume() -> None:
    # The README's figure: the defaults, not tuned per series, find every labelled window.
    scores = nab.evaluate(DetectorParams(window_s=300))
    assert sum(s.hits for s in scores) == 15
    assert nab.normalised(scores) >= 85.5
