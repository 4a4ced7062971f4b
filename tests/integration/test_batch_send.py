"""streams.runtime.batch_send on a real broker: record batches per partition, nothing lost or reordered."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.runtime.admin import create_topics
from streams.runtime.batch_send import send_batches

pytestmark = pytest.mark.integration

PARTITIONS = 3
MAX_BATCH = 16_384  # aiokafka's default max_batch_size: a few dozen of these records per batch


async def read_back(bootstrap: str, topic: str, n: int) -> dict[int, list[tuple[bytes | None, bytes]]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: dict[int, list[tuple[bytes | None, bytes]]] = {}
    try:
        async with asyncio.timeout(30):
            while sum(map(len, got.values())) < n:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    got.setdefault(tp.partition, []).extend((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return got


def test_records_land_in_their_partition_in_order_with_their_keys(kafka_bootstrap: str, uid: str) -> None:
    topic = f"batched-{uid}"
    big = b"x" * (3 * MAX_BATCH)  # larger than any batch: must go through send() on its own
    records: list[tuple[int, bytes | None, bytes]] = []
    for i in range(2000):
        value = big if i == 700 else b"value-%d-" % i + b"." * (i % 300)
        records.append((i % PARTITIONS, None if i % 5 == 0 else b"key-%d" % i, value))

    async def scenario() -> dict[int, list[tuple[bytes | None, bytes]]]:
        await create_topics(kafka_bootstrap, {topic: PARTITIONS})
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", max_batch_size=MAX_BATCH, linger_ms=5
        )
        await producer.start()
        try:
            futures = await send_batches(producer, topic, records)
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        # Batches, not records: far fewer delivery futures than records.
        assert len(futures) < len(records) / 10, len(futures)
        return await read_back(kafka_bootstrap, topic, len(records))

    got = asyncio.run(scenario())
    for partition in range(PARTITIONS):
        want = [(key, value) for p, key, value in records if p == partition]
        assert got.get(partition) == want, f"partition {partition}: not the records sent there, in order"
