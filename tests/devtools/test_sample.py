"""streams.devtools.sample: deterministic sample traffic whose bad events get exactly their stated reason."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import timedelta
from itertools import islice
from pathlib import Path

import pytest

from streams.devtools.sample import comment_text, sample_events, zipf_like
from streams.pipeline.enrich import Enricher, InRecord
from streams.pipeline.events import DEAD_LETTER_REASONS, InvalidEvent, decode_comment
from streams.pipeline.geodb.labeller import Labeller
from streams.pipeline.territory import parse_ip

IPS = ["1.0.1.7", "36.0.1.7", "2400:da00::1", "9.9.9.9", "10.0.0.1", "1.0.8.7", "36.1.1.7"]


def test_deterministic_for_a_seed() -> None:
    a = list(sample_events(IPS, 300, bad_fraction=0.1, seed=42))
    b = list(sample_events(IPS, 300, bad_fraction=0.1, seed=42))
    c = list(sample_events(IPS, 300, bad_fraction=0.1, seed=43))
    assert a == b
    assert [e.value for e in a] != [e.value for e in c]


@pytest.mark.parametrize("n", [0, 1, 17, 1000])
def test_yields_n_events_with_unique_ids(n: int) -> None:
    events = list(sample_events(IPS, n, bad_fraction=0.2, seed=1, prefix="x"))
    assert len(events) == n
    assert len({e.event_id for e in events}) == n
    assert all(e.event_id is not None and e.event_id.startswith("x1-") for e in events)


def test_is_lazy() -> None:
    assert len(list(islice(sample_events(IPS, 10**9, seed=3), 5))) == 5


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.25])
def test_roughly_the_requested_bad_fraction(fraction: float) -> None:
    n = 5000
    bad = sum(e.bad_reason is not None for e in sample_events(IPS, n, bad_fraction=fraction, seed=5))
    if fraction == 0:
        assert bad == 0
    else:
        assert 0.5 * fraction * n <= bad <= 2 * fraction * n


def test_all_bad_with_fraction_one() -> None:
    events = list(sample_events(IPS, 40, bad_fraction=1.0, seed=2))
    assert all(e.bad_reason is not None for e in events)
    # bad kinds come in turn, so 40 bad events show every input reason
    assert {e.bad_reason for e in events} == set(DEAD_LETTER_REASONS) - {"internal_error"}


def test_good_events_decode_and_keep_their_address() -> None:
    good = [e for e in sample_events(IPS, 2000, bad_fraction=0.05, seed=9) if e.bad_reason is None]
    assert len(good) > 1000
    for e in good:
        c = decode_comment(e.value)
        assert c.event_id == e.event_id
        assert c.ip == e.ip
        assert e.ip in IPS
        parse_ip(c.ip)  # a usable address: never an invalid_ip in disguise


def test_bad_events_fail_decoding_unless_their_reason_is_the_address() -> None:
    for e in sample_events(IPS, 400, bad_fraction=0.5, seed=4):
        if e.bad_reason is None or e.bad_reason == "invalid_ip":
            continue
        with pytest.raises(InvalidEvent) as excinfo:
            decode_comment(e.value)
        assert excinfo.value.reason == e.bad_reason


def test_every_event_gets_exactly_its_reason_from_the_enricher(fixture_db_path: Path) -> None:
    events = list(sample_events(IPS, 3000, bad_fraction=0.2, seed=11))
    enricher = Enricher(Labeller.open(fixture_db_path, 1024), max_message_bytes=65_536)
    records = [InRecord("comments", 0, i, None, e.value) for i, e in enumerate(events)]
    result = enricher.process_batch(records)

    got = {
        json.loads(d.value)["source"]["offset"]: json.loads(d.value)["reason"] for d in result.dead_letters
    }
    want = {i: e.bad_reason for i, e in enumerate(events) if e.bad_reason is not None}
    assert got == want
    assert len(result.enriched) == sum(e.bad_reason is None for e in events)
    assert [json.loads(o.value)["event_id"] for o in result.enriched] == [
        e.event_id for e in events if e.bad_reason is None
    ]
    assert Counter(result.stats.dead_reasons) == Counter(want.values())
    assert set(want.values()) == set(DEAD_LETTER_REASONS) - {"internal_error"}


def test_text_of_at_least_min_bytes() -> None:
    rng = random.Random(1)
    for n in (0, 100, 330, 1000):
        text = comment_text(rng, min_bytes=n)
        assert len(text.encode()) >= n
        assert len(text.encode()) < n + 200 or n == 0


def test_options_the_throughput_benchmark_uses() -> None:
    ips = [f"1.0.{i // 256}.{i % 256}" for i in range(1000)]
    events = list(
        sample_events(
            ips,
            2000,
            bad_fraction=0.2,
            seed=3,
            interval=timedelta(0),
            pick_ip=zipf_like,
            min_text_bytes=330,
            bad_reasons=("invalid_json", "invalid_ip"),
        )
    )
    assert {e.bad_reason for e in events} == {None, "invalid_json", "invalid_ip"}
    good = [json.loads(e.value) for e in events if e.bad_reason is None]
    assert len({c["created_at"] for c in good}) == 1
    assert all(len(c["text"].encode()) >= 330 for c in good)
    hits = Counter(c["ip"] for c in good)
    assert hits[ips[0]] > 10 * (len(good) / len(ips))  # a few addresses are hot
