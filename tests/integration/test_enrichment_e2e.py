"""End to end on the real broker: a real ``shudi worker`` process enriches 10,000 comments.

Every valid event must come out exactly once, labelled and without its address; every bad one must land in
the dead-letter topic with the right reason; no address may appear in the enriched topic or the worker's log.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from aiokafka.structs import ConsumerRecord

from streams.cli.send import produce_lines
from streams.devtools.mmdbbuild import build_demo_db, sample_ips
from streams.devtools.sample import SampleEvent, sample_events
from streams.pipeline.events import load_schema
from streams.pipeline.geodb.labeller import Labeller
from streams.runtime.admin import create_topics
from streams.runtime.kafka import KafkaConnection
from streams.testing import WorkerProcess, metric_value, read_topics

pytestmark = pytest.mark.integration

N_EVENTS = 10_000


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_db(tmp_path_factory.mktemp("geoip") / "demo.mmdb")


def topic_settings(uid: str, db: Path | str) -> dict[str, str]:
    return {
        "SHUDI_APP_ID": f"shudi-{uid}",
        "SHUDI_INPUT_TOPIC": f"comments-{uid}",
        "SHUDI_ENRICHED_TOPIC": f"comments.enriched-{uid}",
        "SHUDI_DLQ_TOPIC": f"comments.dlq-{uid}",
        "SHUDI_PARTITIONS": "4",
        "SHUDI_GEOIP_DB": str(db),
    }


def run_worker(
    tmp_path: Path,
    settings: dict[str, str],
    events: list[SampleEvent],
    topics: list[str],
    until: int,
    *,
    kafka: KafkaConnection | None = None,
    while_running: Callable[[WorkerProcess], None] | None = None,
) -> tuple[WorkerProcess, list[ConsumerRecord[bytes, bytes]], str]:
    """Start a worker, send ``events`` to its input, read ``topics`` until ``until`` records came, then
    stop it (exit code 0 asserted). Returns the worker (for its log), the records and its metrics page.

    The test's own producer and reader use ``kafka`` (default: PLAINTEXT to the worker's SHUDI_BROKER);
    ``while_running`` is called with the worker before it is stopped."""
    kafka = kafka or KafkaConnection.plaintext(settings["SHUDI_BROKER"])
    worker = WorkerProcess.configure(tmp_path, "worker", settings)
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(produce_lines(kafka, settings["SHUDI_INPUT_TOPIC"], (e.value for e in events)))
        records = asyncio.run(read_topics(kafka, topics, until=until))
        exposition = worker.metrics()
        if while_running is not None:
            while_running(worker)
    finally:
        exit_code = worker.stop()
    assert exit_code == 0, worker.log()[-4000:]
    return worker, records, exposition


def test_ten_thousand_comments_end_to_end(
    kafka_bootstrap: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    settings = {"SHUDI_BROKER": kafka_bootstrap, **topic_settings(uid, demo_db)}
    check_ten_thousand_comments(tmp_path, settings, demo_db)


def check_ten_thousand_comments(
    tmp_path: Path,
    settings: dict[str, str],
    demo_db: Path,
    *,
    kafka: KafkaConnection | None = None,
    while_running: Callable[[WorkerProcess], None] | None = None,
) -> tuple[WorkerProcess, str]:
    """The whole end-to-end check with a worker of these ``settings`` (the secured-broker tests run it
    too, with ``kafka`` for the test's own clients). Returns the stopped worker and its metrics page."""
    ips = sample_ips(demo_db, None, n=400, seed=3)
    events = list(sample_events(ips, N_EVENTS, bad_fraction=0.01, seed=11))
    valid = [e for e in events if e.bad_reason is None]
    bad = [e for e in events if e.bad_reason is not None]
    assert len(bad) >= 50, "the sample should hold about 1 % bad events"
    assert len({e.bad_reason for e in bad}) >= 6, "bad events of several kinds"

    topics = [settings["SHUDI_INPUT_TOPIC"], settings["SHUDI_ENRICHED_TOPIC"], settings["SHUDI_DLQ_TOPIC"]]
    worker, records, exposition = run_worker(
        tmp_path, settings, events, topics, until=2 * N_EVENTS, kafka=kafka, while_running=while_running
    )

    enriched = [r for r in records if r.topic == settings["SHUDI_ENRICHED_TOPIC"]]
    dead = [r for r in records if r.topic == settings["SHUDI_DLQ_TOPIC"]]
    input_partition = {
        event_id: r.partition
        for r in records
        if r.topic == settings["SHUDI_INPUT_TOPIC"] and (event_id := _event_id(r.value)) is not None
    }

    # Every valid event exactly once, labelled as the database says.
    seen = Counter(json.loads(r.value)["event_id"] for r in enriched if r.value is not None)
    assert seen == Counter(e.event_id for e in valid)
    expected_label = _expected_labels(demo_db, valid)
    schema = load_schema("enriched_comment")
    for record in enriched:
        assert record.value is not None
        body = json.loads(record.value)
        assert "ip" not in body
        assert body["territory"] == expected_label[body["event_id"]]
        assert record.key == body["post_id"].encode()
        # Co-partitioned: an enriched record goes to the partition number its comment came from.
        assert record.partition == input_partition[body["event_id"]]
    for record in enriched[:: max(1, len(enriched) // 200)]:
        assert record.value is not None
        jsonschema.validate(json.loads(record.value), schema, format_checker=jsonschema.FormatChecker())

    # Every bad event in the dead-letter topic, once, with its reason and its original bytes.
    got_dead = Counter(_original_and_reason(r.value) for r in dead if r.value is not None)
    assert got_dead == Counter((e.value, e.bad_reason) for e in bad)

    # No address in the enriched topic or in the worker's log.
    enriched_blob = b"\n".join(r.value or b"" for r in enriched)
    log_text = worker.log()
    addresses = {e.ip for e in events if e.ip}
    assert addresses
    leaked = sorted(ip for ip in addresses if ip.encode() in enriched_blob or ip in log_text)
    assert leaked == []

    # The worker's own count agrees with what came out.
    assert metric_value(exposition, "shudi_events_total", {"outcome": "enriched"}) == len(valid)
    assert metric_value(exposition, "shudi_events_total", {"outcome": "dead_lettered"}) == len(bad)
    return worker, exposition


def test_end_to_end_on_ip2region_xdb_files(
    kafka_bootstrap: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    """The worker on ip2region files (IPv4 and IPv6, the newer layout) holding the demo database's content."""
    from streams.devtools.geodbwrite import region_string, write_xdb
    from streams.pipeline.geodb import open_database

    src = open_database(demo_db)
    files = []
    for family in (4, 6):
        segments = [(s, e, region_string(label)) for s, e, label in src.ranges(family)]
        files.append(
            write_xdb(tmp_path / f"demo_v{family}.xdb", segments, family=family, created_at=1_767_225_600)
        )
    src.close()
    settings = {"SHUDI_BROKER": kafka_bootstrap, **topic_settings(uid, ",".join(str(f) for f in files))}
    ips = sample_ips(demo_db, None, n=200, seed=5)
    events = [e for e in sample_events(ips, 2_000, bad_fraction=0.0, seed=13) if e.bad_reason is None]
    topics = [settings["SHUDI_ENRICHED_TOPIC"]]
    _worker, records, exposition = run_worker(tmp_path, settings, events, topics, until=len(events))
    expected = _expected_labels(files, events)
    assert expected == _expected_labels(demo_db, events)  # the same content in the other format
    bodies = [json.loads(r.value) for r in records if r.value is not None]
    assert Counter(b["event_id"] for b in bodies) == Counter(e.event_id for e in events)
    for body in bodies:
        assert body["territory"] == expected[body["event_id"]]
        assert body["db_build"].startswith(
            "ip2region-xdb-v3-IPv4 2026-01-01T00:00:00Z + ip2region-xdb-v3-IPv6"
        )
    assert (
        metric_value(exposition, "shudi_geoip_database_build_timestamp_seconds", {"db": "demo_v4.xdb"})
        == 1_767_225_600
    )


def _event_id(value: bytes | None) -> str | None:
    """The event_id of an input record, if it is a JSON object with one (bad events may not be)."""
    try:
        body = json.loads(value or b"")
    except ValueError:
        return None
    event_id = body.get("event_id") if isinstance(body, dict) else None
    return event_id if isinstance(event_id, str) else None


def test_enriched_topic_with_other_partition_count_is_partitioned_by_key(
    kafka_bootstrap: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    """Input and enriched topics with different partition counts: the worker warns and lets the producer
    partition by key, one record at a time; nothing is lost or duplicated."""
    settings = {"SHUDI_BROKER": kafka_bootstrap, **topic_settings(uid, demo_db)}
    asyncio.run(create_topics(kafka_bootstrap, {settings["SHUDI_ENRICHED_TOPIC"]: 2}))
    ips = sample_ips(demo_db, None, n=100, seed=4)
    events = list(sample_events(ips, 2000, bad_fraction=0.0, seed=12))
    worker, records, _ = run_worker(
        tmp_path, settings, events, [settings["SHUDI_ENRICHED_TOPIC"]], until=len(events)
    )
    assert Counter(json.loads(r.value)["event_id"] for r in records if r.value) == Counter(
        e.event_id for e in events
    )
    assert {r.partition for r in records} == {0, 1}
    assert "partitioned by key" in worker.log()


def _original_and_reason(value: bytes) -> tuple[bytes, str]:
    body = json.loads(value)
    original = base64.b64decode(body["original_b64"]) if body["original_b64"] is not None else b""
    return original, body["reason"]


def _expected_labels(
    db_path: Path | list[Path], events: list[SampleEvent]
) -> dict[str | None, dict[str, object]]:
    """The label of each event's address, computed here from the database with a fresh labeller."""
    labeller = Labeller.open(db_path, cache_size=1024)
    out: dict[str | None, dict[str, object]] = {}
    for e in events:
        assert e.ip is not None
        t = labeller.label(e.ip).territory
        out[e.event_id] = {
            "code": t.code,
            "name_zh": t.name_zh,
            "name_en": t.name_en,
            "scope": t.scope,
            "country_code": t.country_code,
        }
    return out
