"""The local broker script against a real broker: topics, produce/consume/commit, start/stop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.devtools import localkafka
from streams.runtime.admin import create_topics
from streams.testing import free_port

pytestmark = pytest.mark.integration

N_RECORDS = 300
PARTITIONS = 3


def _local_port(bootstrap: str) -> int | None:
    host, _, port = bootstrap.rpartition(":")
    return int(port) if host in {"127.0.0.1", "localhost"} else None


async def _round_trip(bootstrap: str, topic: str, group: str) -> tuple[Counter[int], dict[int, int]]:
    await create_topics(bootstrap, {topic: PARTITIONS})
    await create_topics(bootstrap, {topic: PARTITIONS})  # second call must be a no-op

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sends = [
            await producer.send(topic, value=str(i).encode(), partition=i % PARTITIONS)
            for i in range(N_RECORDS)
        ]
        produced = Counter(meta.partition for meta in await asyncio.gather(*sends))
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[int] = []
    try:
        async with asyncio.timeout(60):
            while len(values) < N_RECORDS:
                batches = await consumer.getmany(timeout_ms=1000)
                values.extend(int(m.value) for msgs in batches.values() for m in msgs)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(values) == list(range(N_RECORDS))

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return produced, {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topic}


def test_produce_consume_commit(kafka_bootstrap: str, uid: str) -> None:
    produced, committed = asyncio.run(_round_trip(kafka_bootstrap, f"t-{uid}", f"g-{uid}"))
    assert produced == dict.fromkeys(range(PARTITIONS), N_RECORDS // PARTITIONS)
    # A fresh topic starts at offset 0, so each committed offset equals that partition's count.
    assert committed == dict(produced)


def test_create_topics_applies_config(kafka_bootstrap: str, uid: str) -> None:
    topic = f"c-{uid}"

    async def run() -> list[object]:
        await create_topics(kafka_bootstrap, {topic: 1}, {topic: {"cleanup.policy": "compact"}})
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            resp = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        return list(resp[0].resources[0][4])

    entries = asyncio.run(run())
    assert any(e[0] == "cleanup.policy" and e[1] == "compact" for e in entries)  # type: ignore[index]


def test_status(kafka_bootstrap: str) -> None:
    port = _local_port(kafka_bootstrap)
    if port is None:
        pytest.skip("status() only probes 127.0.0.1 and TEST_KAFKA_BOOTSTRAP points elsewhere")
    assert localkafka.status(port)
    assert not localkafka.status(free_port())


def test_cli_start_stop_via_state_file() -> None:
    """`start` in one process, `status`/`stop --port` in another, as a developer would use it."""
    port = free_port()
    started = subprocess.run(
        [sys.executable, "-m", "streams.devtools.localkafka", "start", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = localkafka._load_state(port)
        assert state is not None
        assert state.throwaway
        assert state.data_dir.is_dir()
        assert localkafka.status(port)

        t0 = time.monotonic()
        assert localkafka.stop(port)
        assert time.monotonic() - t0 < 35
        assert not localkafka.status(port)
        assert localkafka._load_state(port) is None
        assert not state.data_dir.exists()
        assert not localkafka.stop(port)  # stopping twice is harmless
    finally:
        localkafka.stop(port, timeout=5)
