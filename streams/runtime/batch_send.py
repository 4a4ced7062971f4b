"""Producing a batch of records as whole Kafka record batches, one per partition, instead of one by one.

``AIOKafkaProducer.send()`` costs ~22 µs of CPU per record on these machines (partitioner, a future and a
done-callback per record, the accumulator's bookkeeping), nearly as much as everything else shudi does per
event. Building the record batch ourselves (``create_batch`` / ``append`` / ``send_batch``) costs ~3 µs per
record and one future per batch (py-spy on ``python -m bench.throughput``). The price is that the caller
names the partition of every record; shudi's enrichment sends each record to the partition its input came
from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def send_batches(
    producer: Any, topic: str, records: Iterable[tuple[int, bytes | None, bytes]]
) -> list[asyncio.Future[Any]]:
    """Queue ``(partition, key, value)`` records as record batches; returns their delivery futures.

    Records keep their order within a partition. A batch goes out when it is full (the producer's
    ``max_batch_size``) or at the end; a record too large for an empty batch goes through ``send()``, which
    sizes a request of its own for it (and raises for one above ``max_request_size``, as ``send`` would).
    Awaiting the futures means the broker acknowledged every record.
    """
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for partition, key, value in records:
        queue = by_partition.get(partition)
        if queue is None:
            queue = by_partition[partition] = []
        queue.append((key, value))
    futures: list[asyncio.Future[Any]] = []
    for partition, queue in by_partition.items():
        batch = producer.create_batch()
        for key, value in queue:
            if batch.append(key=key, value=value, timestamp=None) is not None:
                continue
            if batch.record_count():
                futures.append(await _submit(producer, batch, topic, partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is not None:
                    continue
            futures.append(await producer.send(topic, value, key=key, partition=partition))
            batch = producer.create_batch()  # a failed append closes the batch
        if batch.record_count():
            futures.append(await _submit(producer, batch, topic, partition))
    return futures


async def _submit(producer: Any, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    # Closed before it is queued: left open, producer.send() to the same partition could append to it.
    batch.close()
    future: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
    return future
