"""Faust agents: thin loops that move batches between Kafka and the pure functions that do the work.

Guarantees, and why the code looks the way it does:
- The agent consumes raw bytes and decodes inside :class:`streams.enrich.Enricher`: Faust acks a message
  before its own decode-error handler runs, so a bad message decoded by Faust is lost.
- Concurrency stays 1: with more, an in-flight batch can be committed past and lost on a crash
  (faust-streaming issue 606).
- ``take_events`` acks a batch only when the loop comes back for the next one, i.e. after every output record
  of the batch is acknowledged by the broker: commits never pass an unprocessed event (at-least-once).
- Bad input never raises out of the enricher. A broker failure that outlasts the producer's own retries does
  raise, and the crashing supervisor then stops the whole worker (so the orchestrator restarts it) instead of
  leaving a live process that no longer consumes (faust-streaming issues 175 and 640).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import faust
from mode import CrashingSupervisor

from streams.enrich import Enricher, InRecord, OutRecord
from streams.metrics import Metrics
from streams.settings import Settings


def to_in_record(event: Any) -> InRecord:
    message = event.message
    timestamp = message.timestamp
    return InRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp_ms=int(timestamp * 1000) if timestamp else None,
    )


async def produce_all(producer: Any, batches: Sequence[tuple[str, Sequence[OutRecord]]]) -> None:
    """Queue every record of the batch, then wait for all of the broker's acknowledgements at once.

    One ``await`` per record would serialise on the round trip; queueing first lets aiokafka pack the batch
    into a few produce requests.
    """
    pending: list[Awaitable[Any]] = []
    for topic, records in batches:
        for record in records:
            pending.append(await producer.send(topic, record.key, record.value, None, None, None))
    if pending:
        await asyncio.gather(*pending)


def register_enrichment_agent(
    app: faust.App, settings: Settings, enricher: Enricher, metrics: Metrics
) -> Any:
    source = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="shudi.enrich", concurrency=1, supervisor_strategy=CrashingSupervisor)
    async def enrich(stream: faust.StreamT[bytes]) -> None:
        # take_events exists on faust.Stream but is missing from the StreamT interface
        batches = cast(faust.Stream[bytes], stream).take_events(
            settings.batch_size, within=settings.batch_timeout_s
        )
        async for events in batches:
            started = time.perf_counter()
            result = enricher.process_batch([to_in_record(event) for event in events])
            await produce_all(
                app.producer,
                ((settings.enriched_topic, result.enriched), (settings.dlq_topic, result.dead_letters)),
            )
            metrics.observe_batch(result.stats)
            metrics.batch_seconds.observe(time.perf_counter() - started)

    return enrich
