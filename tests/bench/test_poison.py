"""bench.poison: the hostile messages of the poison-pills row, and how their outcomes are checked."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench.poison import (
    DEAD,
    ENRICHED,
    MAX_RECORD_BYTES,
    Hostile,
    Sent,
    check_poison,
    fingerprint,
    hostile_messages,
)
from streams.devtools.mmdbbuild import build_demo_db, sample_ips
from streams.pipeline.enrich import Enricher, InRecord
from streams.pipeline.geodb.labeller import Labeller, compile_files


@pytest.fixture(scope="module")
def ips(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    db = build_demo_db(tmp_path_factory.mktemp("poison") / "demo.mmdb")
    return sample_ips(db, None, n=50, seed=1)


@pytest.fixture(scope="module")
def enricher(tmp_path_factory: pytest.TempPathFactory) -> Enricher:
    db = build_demo_db(tmp_path_factory.mktemp("poison-db") / "demo.mmdb")
    return Enricher(Labeller(compile_files([db])), max_message_bytes=65_536)


def test_same_seed_same_messages(ips: list[str]) -> None:
    a = list(hostile_messages(ips, 300, seed=7))
    assert fingerprint(a) == fingerprint(list(hostile_messages(ips, 300, seed=7)))
    assert fingerprint(a) != fingerprint(list(hostile_messages(ips, 300, seed=8)))


def test_a_short_run_meets_every_kind_and_fits_the_broker(ips: list[str]) -> None:
    messages = list(hostile_messages(ips, 200, seed=1))
    kinds = {m.kind.split("-")[0] for m in messages}
    for expected in ("valid", "random", "truncated", "mutated", "deep", "huge", "1MB", "odd", "bom", "utf"):
        assert expected in kinds
    assert any(m.value is None for m in messages) or any(m.value == b"" for m in messages)
    many = [m for seed in (1, 2) for m in hostile_messages(ips, 3000, seed=seed)]
    assert max(m.size for m in many) <= MAX_RECORD_BYTES
    assert all(m.key is not None or m.value is not None for m in messages)  # what a client can send
    assert any(m.size > 900_000 for m in messages)  # the 1 MB value is there
    assert any(len(m.headers) >= 100 for m in messages)
    assert any(len(v) >= 100_000 for m in messages for _, v in m.headers)
    assert all(m.event_id is not None for m in messages if m.expect == {ENRICHED})
    assert all("internal_error" not in m.expect for m in messages)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_enricher_gives_every_message_an_acceptable_outcome(
    ips: list[str], enricher: Enricher, seed: int
) -> None:
    # The pipeline itself, without Kafka: what the live row checks through a broker and a worker.
    messages = list(hostile_messages(ips, 3000, seed=seed))
    result = enricher.process_batch(
        [InRecord("comments", 0, i, m.key, m.value) for i, m in enumerate(messages)]
    )
    dead_at = {
        (0, json.loads(r.value)["source"]["offset"]): [json.loads(r.value)["reason"]]
        for r in result.dead_letters
    }
    enriched = Counter(json.loads(r.value)["event_id"] for r in result.enriched)
    sent = [Sent(m, 0, i) for i, m in enumerate(messages)]
    report = check_poison(sent, dead_at, enriched)
    assert report.problems == []
    assert report.lost == 0
    assert report.enriched + report.dead_reasons.total() == len(messages)
    assert report.enriched >= sum(1 for m in messages if m.expect == {ENRICHED})
    assert not dead_at  # every dead letter was matched to a hostile message
    assert set(report.dead_reasons) <= DEAD


def _msg(kind: str, expect: set[str], event_id: str | None = None) -> Hostile:
    return Hostile(kind, b"x", None, (), frozenset(expect), event_id, None)


def test_check_poison_finds_lost_wrong_and_repeated_outcomes() -> None:
    sent = [
        Sent(_msg("a", {"invalid_json"}), 0, 0),  # dead-lettered right
        Sent(_msg("b", {"invalid_json"}), 0, 1),  # dead-lettered with a wrong reason
        Sent(_msg("c", {"schema"}), 1, 0),  # lost
        Sent(_msg("d", {ENRICHED}, "e1"), 1, 1),  # enriched twice
        Sent(_msg("e", {"schema"}, "e2"), 1, 2),  # enriched although it must not be
        Sent(_msg("f", {"empty"}), 2, 0),  # dead-lettered twice
    ]
    dead_at = {
        (0, 0): ["invalid_json"],
        (0, 1): ["internal_error"],
        (2, 0): ["empty", "empty"],
        (9, 9): ["x"],
    }
    enriched = Counter({"e1": 2, "e2": 1, "other": 1})
    report = check_poison(sent, dead_at, enriched)
    assert report.lost == 1
    assert report.wrong == Counter({"b: internal_error": 1, "e: enriched": 1})
    assert report.duplicates == 2
    assert report.enriched == 2
    assert report.dead_reasons == Counter({"invalid_json": 1, "internal_error": 1, "empty": 1})
    assert dead_at == {(9, 9): ["x"]}  # what is not poison stays for the rest of the run
    assert enriched == Counter({"e2": 1, "other": 1})
    assert len(report.problems) >= 2
