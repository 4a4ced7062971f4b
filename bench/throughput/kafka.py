"""The harness's own Kafka traffic: its topics, the input it produces and the topics it reads back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.runtime import admin
from streams.runtime.kafka import connection_from_env

# No retention limit on the bench's own topics: the project's dev broker keeps 64 MB per partition, and a
# --long run's input (6 GB) would be deleted under the worker reading it.
_UNLIMITED = {"retention.bytes": "-1", "retention.ms": "-1"}

OnRecord = Callable[[bytes | None, bytes, int], None]  # (key, value, timestamp in ms)


async def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    """``{name: partitions}``, kept forever (see above); returns once every partition has a leader."""
    await admin.create_topics(
        connection_from_env(bootstrap), topics, config=dict.fromkeys(topics, _UNLIMITED)
    )


async def delete_run_topics(bootstrap: str, run_tag: str) -> None:
    """Every topic whose name holds ``run_tag``: one harness run's inputs, outputs and workers' topics."""
    client = connection_from_env(bootstrap).admin()
    await client.start()
    try:
        ours = [t for t in await client.list_topics() if run_tag in t]
        if ours:
            await client.delete_topics(ours)
    finally:
        await client.close()


async def group_is_stable(bootstrap: str, group: str) -> bool:
    client = connection_from_env(bootstrap).admin()
    await client.start()
    try:
        for resp in await client.describe_consumer_groups([group]):
            for g in resp.groups:
                # (error_code, group_id, state, protocol_type, protocol, members, ...)
                if g[1] == group and g[2] == "Stable" and g[5]:
                    return True
        return False
    finally:
        await client.close()


async def produce(
    bootstrap: str, topic: str, events: Iterable[tuple[bytes, bytes]], rate: float | None = None
) -> int:
    """Produce (key, value) ``events``; at ``rate`` events/s if given (in 10 ms slices, smooth enough)."""
    producer = connection_from_env(bootstrap).producer(
        linger_ms=5,
        max_batch_size=512 * 1024,
        acks=1,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    n = 0
    try:
        start = time.monotonic()
        futs: list[asyncio.Future[Any]] = []
        for key, value in events:
            futs.append(await producer.send(topic, value, key=key))
            n += 1
            if rate is not None and n % max(1, int(rate / 100)) == 0:
                ahead = n / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(futs) >= 20_000:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """consumer.stop(), minus an aiokafka quirk: without a group, stop() can re-raise the CancelledError of
    its own never-started ``_reset_committed_routine`` task. Swallow it only if *we* are not being cancelled.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def track(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> None:
    """Make a group-less consumer fetch metadata for ``topics`` (partitions_for_topic is None until then)."""
    for t in topics:
        await consumer._client.add_topic(t)  # no public API for this in aiokafka 0.14


async def end_offsets(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> int:
    """The sum of the end offsets of ``topics``: how many records they hold."""
    tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
    if not tps:
        return 0
    offs = await consumer.end_offsets(tps)
    return int(sum(offs.values()))


async def read_all(bootstrap: str, topic: str, on_record: OnRecord) -> int:
    """Read ``topic`` from the beginning to its current end, calling on_record(key, value, ts) for each."""
    consumer = connection_from_env(bootstrap).consumer(
        enable_auto_commit=False,
        fetch_max_bytes=16 << 20,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    n = 0
    try:
        await track(consumer, [topic])
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
            for tp, msgs in batches.items():
                for m in msgs:
                    on_record(m.key, m.value, m.timestamp)
                    n += 1
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await stop_consumer(consumer)
    return n
