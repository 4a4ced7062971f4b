"""bench.faultrows's checks on made-up observations (no Kafka): counts per window, burst ids, the stall
seen from the outside, /healthz's truthfulness."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.faultrows import (
    BURST_TERRITORY,
    HEALTHZ_MARGIN_S,
    Sample,
    Timeline,
    burst_starts,
    burst_window_s,
    check_bursts,
    check_counts,
    check_healthz,
    expected_counts,
    scripted_burst_problem,
    with_scripted_burst,
)
from bench.faults import RowResult
from streams.devtools.mmdbbuild import build_demo_db, sample_ips
from streams.devtools.sample import SampleEvent, sample_events
from streams.pipeline.windows import WindowSpec

SPEC = WindowSpec(size_s=60, hop_s=60, lateness_s=30)


def _result() -> RowResult:
    return RowResult("none", "test", 0, 0, 0)


def _events(tmp_path: Path, n: int = 900) -> list[SampleEvent]:
    db = build_demo_db(tmp_path / "demo.mmdb")
    # 100 ms apart: 90 s of event time, so two windows.
    return list(
        sample_events(sample_ips(db, None, n=50, seed=1), n, seed=1, interval=timedelta(milliseconds=100))
    )


def test_counts_equal_to_the_events_sent_pass(tmp_path: Path) -> None:
    events = _events(tmp_path)
    want = expected_counts(events, SPEC)
    assert len(want) == 2
    assert want.total() == sum(1 for e in events if e.bad_reason is None)
    result = _result()
    check_counts(events, Counter(want), SPEC, result)
    assert result.problems == []
    assert result.count_windows == 2


def test_a_window_counted_short_fails(tmp_path: Path) -> None:
    events = _events(tmp_path)
    counts = Counter(expected_counts(events, SPEC))
    first = min(counts)
    counts[first] -= 1
    result = _result()
    check_counts(events, counts, SPEC, result)
    assert any("counted short" in p for p in result.problems)


def test_over_counting_fails_only_without_duplicates(tmp_path: Path) -> None:
    events = _events(tmp_path)
    counts = Counter(expected_counts(events, SPEC))
    counts[min(counts)] += 5
    result = _result()
    check_counts(events, counts, SPEC, result)
    assert any("over-counted" in p for p in result.problems)
    replayed = _result()
    replayed.duplicates = 5
    check_counts(events, counts, SPEC, replayed)
    assert replayed.problems == []


def test_bursts_started_twice_or_ended_without_start_fail() -> None:
    ok = _result()
    check_bursts(
        [
            {"kind": "started", "burst_id": "CN-GD@60", "window_start": "w1"},
            {"kind": "started", "burst_id": "CN-GD@60", "window_start": "w1"},  # a replay: the same event
            {"kind": "updated", "burst_id": "CN-GD@60", "window_start": "w2"},
            {"kind": "ended", "burst_id": "CN-GD@60", "window_start": "w3"},
        ],
        ok,
    )
    assert ok.problems == []
    assert ok.bursts == 1
    bad = _result()
    check_bursts(
        [
            {"kind": "started", "burst_id": "CN-GD@60", "window_start": "w1"},
            {"kind": "started", "burst_id": "CN-GD@60", "window_start": "w4"},
            {"kind": "ended", "burst_id": "CN-BJ@120", "window_start": "w3"},
        ],
        bad,
    )
    assert any("more than once" in p for p in bad.problems)
    assert any("without a start" in p for p in bad.problems)


def _timeline(stuck_s: float, answers: list[str], first_answer_at: float = 0.0) -> Timeline:
    """Progress once a second: 5 s flowing, ``stuck_s`` with input waiting and nothing out, 5 s flowing;
    ``answers`` one a second from ``first_answer_at``."""
    t, n, progress = 0.0, 0, []
    for _ in range(5):
        n += 100
        progress.append(Sample(t, n, 50))
        t += 1
    for _ in range(int(stuck_s) + 1):
        progress.append(Sample(t, n, 500))
        t += 1
    for _ in range(5):
        n += 100
        progress.append(Sample(t, n, 0))
        t += 1
    return Timeline(progress, {"worker-1": [(first_answer_at + i, a) for i, a in enumerate(answers)]})


def test_longest_stall_counts_an_unanswered_probe_as_no_progress() -> None:
    timeline = _timeline(10, ["200"])
    assert timeline.longest_stall() == 10
    assert timeline.stall() == (5.0, 15.0)
    timeline.progress.insert(8, Sample(7.5, -1, None))
    assert timeline.longest_stall() == 10


def test_healthz_must_fail_during_a_long_stall_and_pass_at_the_end() -> None:
    stall_timeout = 3.0
    long = stall_timeout + HEALTHZ_MARGIN_S + 2
    truthful = _result()
    answers = ["200"] * 8 + ["503 consumer"] * 5 + ["200"] * 5  # the 503s inside the stall (5 s to 15 s)
    check_healthz(_timeline(long, answers), stall_timeout, {"worker-1"}, truthful)
    assert truthful.problems == []
    # A 503 long before the stall does not count for it.
    early = _result()
    check_healthz(_timeline(long, ["503 consumer"] + ["200"] * 20), stall_timeout, {"worker-1"}, early)
    assert any("never failed" in p for p in early.problems)
    # A worker that started during the stall (a replacement) answers 200 while it starts: nothing asked.
    replaced = _result()
    check_healthz(_timeline(long, ["200"] * 5, first_answer_at=8.0), stall_timeout, {"worker-1"}, replaced)
    assert replaced.problems == []
    silent = _result()
    check_healthz(_timeline(long, ["200", "200"]), stall_timeout, {"worker-1"}, silent)
    assert any("never failed" in p for p in silent.problems)
    # A stall within the timeout and its margin asks nothing of /healthz.
    short = _result()
    check_healthz(_timeline(stall_timeout, ["200", "200"]), stall_timeout, {"worker-1"}, short)
    assert short.problems == []
    still_failing = _result()
    check_healthz(_timeline(long, ["200"] * 8 + ["503 consumer"]), stall_timeout, {"worker-1"}, still_failing)
    assert any("at the end" in p for p in still_failing.problems)
    # A worker stopped before the end is not asked to pass.
    gone = _result()
    check_healthz(_timeline(long, ["200"] * 8 + ["503 consumer", "down"]), stall_timeout, set(), gone)
    assert gone.problems == []


def test_scripted_burst_is_merged_in_time_order_and_found_only_in_its_windows(tmp_path: Path) -> None:
    db = build_demo_db(tmp_path / "demo.mmdb")
    events = list(sample_events(sample_ips(db, None, n=50, seed=1), 6000, seed=1))
    merged = with_scripted_burst(db, events, seed=1)
    spec = WindowSpec(size_s=burst_window_s(6000), hop_s=burst_window_s(6000), lateness_s=0)
    before, after = expected_counts(events, spec), expected_counts(merged, spec)
    starts = burst_starts(6000)
    assert {w for w in after if after[w] != before[w]} == set(starts)
    assert all(after[w] >= before[w] + 40 for w in starts)
    times = [
        datetime.fromisoformat(json.loads(e.value)["created_at"]) for e in merged if e.bad_reason is None
    ]
    assert times == sorted(times)

    def started(window: int, code: str = BURST_TERRITORY) -> dict[str, object]:
        return {
            "kind": "started",
            "type": "regional",
            "territory": {"code": code},
            "window_start": datetime.fromtimestamp(window, tz=UTC).isoformat(),
            "burst_id": f"{code}@{window}",
        }

    assert scripted_burst_problem([started(starts[1])], 6000) is None
    assert scripted_burst_problem([started(starts[0] - 10 * spec.size_s)], 6000) is not None
    assert scripted_burst_problem([], 6000) is not None
    assert scripted_burst_problem([started(starts[1], "CN-LN")], 6000) is not None
