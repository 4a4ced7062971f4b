"""``shudi simulate`` on the real broker: exactly the requested records, keyed by post_id; truth holds."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli.simulate import simulate
from streams.devtools.mmdbbuild import build_demo_db
from streams.pipeline.events import InvalidEvent, decode_comment
from streams.pipeline.geodb.labeller import Labeller
from streams.pipeline.territory import InvalidIP
from streams.runtime.admin import create_topics
from streams.testing import read_topics

pytestmark = pytest.mark.integration

N_EVENTS = 2000


def test_simulate_produces_exactly_the_requested_events(
    kafka_bootstrap: str, uid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.upper().startswith("SHUDI_")]:
        monkeypatch.delenv(name)
    db = build_demo_db(tmp_path / "demo.mmdb")
    topic = f"simulate-{uid}"
    asyncio.run(create_topics(kafka_bootstrap, {topic: 3}))
    bursts = tmp_path / "bursts.jsonl"
    bursts.write_text(
        '{"territory": "CN-GD", "start": 0, "duration": 60, "multiplier": 4, "post_ids": ["p-hot"]}\n',
        encoding="utf-8",
    )
    truth_path = tmp_path / "truth.jsonl"
    args = [
        "--db", str(db), "--events", str(N_EVENTS), "--rate", "5000", "--topic", topic,
        "--broker", kafka_bootstrap, "--seed", "7", "--start", "2026-11-25T21:00:00+08:00",
        "--bad-fraction", "0.02", "--bursts", str(bursts), "--truth", str(truth_path), "--no-progress",
    ]  # fmt: skip
    result = CliRunner().invoke(simulate, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"sent {N_EVENTS:,} events" in result.output

    records = asyncio.run(read_topics(kafka_bootstrap, [topic], until=N_EVENTS, timeout=60, settle=2))
    assert len(records) == N_EVENTS
    labeller = Labeller.open(db, 4096)
    valid = bad = 0
    on_hot = 0
    territories: Counter[str] = Counter()
    for rec in records:
        assert rec.value is not None
        try:
            comment = decode_comment(rec.value)
            label = labeller.label(comment.ip)
        except (InvalidEvent, InvalidIP):
            bad += 1
            continue
        valid += 1
        assert rec.key == comment.post_id.encode()
        territories[label.territory.code] += 1
        on_hot += comment.post_id == "p-hot"
    assert valid + bad == N_EVENTS
    assert 0 < bad < 0.06 * N_EVENTS
    assert territories.most_common(1)[0][0] == "CN-GD"  # the largest province, in a burst besides
    assert "ZZ" not in territories

    truth = [json.loads(line) for line in truth_path.read_text(encoding="utf-8").splitlines()]
    assert len(truth) == 1
    assert truth[0]["territory"] == "CN-GD"
    assert truth[0]["start"] == "2026-11-25T21:00:00.000+08:00"
    assert truth[0]["emitted_on_posts"] == on_hot > 0
