"""streams.devtools.demo_view: what the demo shows, from metrics samples and burst events (no processes)."""

from __future__ import annotations

import json

import pytest

from streams.devtools.demo_view import Bursts, Snapshot, name_zh, print_summary, render, summary_line


def _burst(kind: str, code: str, **extra: object) -> bytes:
    event = {
        "kind": kind,
        "type": "regional",
        "burst_id": f"{code}@1",
        "territory": {"code": code, "name_zh": name_zh(code)},
        "burst_start": "2026-11-25T20:03:20+08:00",
        "count": 100,
        "baseline": 16.6,
        "top_posts": [{"post_id": "demo-hot-us", "count": 70}, {"post_id": "p2", "count": 3}],
        **extra,
    }
    return json.dumps(event).encode()


def test_snapshot_sums_the_workers_scrapes() -> None:
    a = [
        ("shudi_events_total", {"outcome": "enriched"}, 10.0),
        ("shudi_events_total", {"outcome": "dead_lettered"}, 1.0),
        ("shudi_window_events", {"territory": "US"}, 100.0),
        ("shudi_burst_active", {"territory": "US"}, 1.0),
    ]
    b = [
        ("shudi_events_total", {"outcome": "enriched"}, 5.0),
        ("shudi_window_events", {"territory": "CN-GD"}, 7.0),
    ]
    snap = Snapshot.of([a, b, None])
    assert (snap.enriched, snap.dead, snap.answered) == (15.0, 1.0, 2)
    assert [r.code for r in snap.top()] == ["US", "CN-GD"]
    assert snap.rows["US"].active
    assert not snap.rows["CN-GD"].active


def test_bursts_fold_started_and_ended_and_ignore_junk() -> None:
    bursts = Bursts()
    bursts.add(b"not json")
    bursts.add(None)
    bursts.add(_burst("started", "US"))
    assert [b.code for b in bursts.active()] == ["US"]
    bursts.add(_burst("ended", "US", window_end="2026-11-25T20:05:40+08:00"))
    assert bursts.active() == []
    assert bursts.seen() == {"US"}
    assert bursts.news[0].startswith("burst started: 美国 US at 20:03:20: 100 comments")
    assert bursts.news[1] == "burst ended:   美国 US (since 20:03:20, ended 20:05:40)"


def test_render_and_summary_line() -> None:
    snap = Snapshot.of([[("shudi_window_events", {"territory": "US"}, 100.0)]])
    bursts = Bursts()
    bursts.add(_burst("started", "US"))
    lines = render(snap, bursts, "2026-11-25 20:09:52", 60, 90, 10)
    assert lines[0].startswith("shudi demo — simulated 2026-11-25 20:09:52 +08:00")
    assert "last closed 10-s window" in lines[2]
    assert any(line.strip().startswith("美国") and "US" in line for line in lines)
    assert any("demo-hot-us (70)" in line for line in lines)
    assert "top: 美国 US 100" in summary_line(snap, bursts, "t", 5)
    empty = render(Snapshot(), Bursts(), "t", 0, 90, 10)
    assert "  (no window closed yet: the workers are warming up)" in empty
    assert "  (none)" in empty


def test_summary_counts_the_scripted_bursts_seen(capsys: pytest.CaptureFixture[str]) -> None:
    bursts = Bursts()
    bursts.add(_burst("started", "US"))
    print_summary(Snapshot(enriched=1234), bursts, [{"territory": "CN-GD"}, {"territory": "US"}])
    out = capsys.readouterr().out
    assert "1,234 comments labelled" in out
    assert "bursts: 1 of 2 scripted seen (广东 CN-GD missed, 美国 US seen)" in out
