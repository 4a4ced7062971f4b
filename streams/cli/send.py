"""Producing comment events from a file: ``shudi send`` (replay, manual trials, demos)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import click

from streams.pipeline.events import post_id_key
from streams.runtime.kafka import KafkaConnection, KafkaConnectionError, explain_failure, quiet_kafka_logs
from streams.settings import Settings


async def produce_lines(
    kafka: KafkaConnection | str,
    topic: str,
    lines: Iterable[bytes],
    *,
    rate: float = 0.0,
    progress: bool = False,
) -> int:
    """Send each line as one record; ``rate`` > 0 paces sending to that many events per second.

    A failure to connect raises :class:`KafkaConnectionError` with one line naming the cause."""
    conn = KafkaConnection.of(kafka)
    producer = conn.producer(linger_ms=5, max_batch_size=256 * 1024)
    try:
        with quiet_kafka_logs():
            await producer.start()
    except Exception as exc:  # noqa: BLE001 -- explained in one line
        await producer.stop()
        raise KafkaConnectionError(await explain_failure(conn, exc)) from None
    sent = 0
    started = time.monotonic()
    try:
        pending = []
        for line in lines:
            pending.append(await producer.send(topic, line, key=post_id_key(line)))
            sent += 1
            if rate > 0 and sent % max(1, int(rate / 20)) == 0:
                # pace in small steps so the stream is smooth at any rate
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
                if progress:
                    click.echo(f"\r{sent} sent", nl=False, err=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    if progress:
        click.echo(f"\r{sent} sent", err=True)
    return sent


def read_lines(path: Path) -> Iterable[bytes]:
    with path.open("rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if line:
                yield line


async def send_jsonl(settings: Settings, path: Path, topic: str, *, rate: float = 0.0) -> int:
    kafka = KafkaConnection.from_settings(settings)
    with quiet_kafka_logs():  # a refused produce raises, and `send` reports it in one line
        return await produce_lines(kafka, topic, read_lines(path), rate=rate, progress=True)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", help="Topic to produce to (default: SHUDI_INPUT_TOPIC).")
@click.option("--rate", type=float, default=0.0, help="Events per second; 0 sends as fast as possible.")
def send(file: Path, topic: str | None, rate: float) -> None:
    """Produce the comment events of a JSON-lines FILE to the input topic (for replay and trials).

    Each line is sent as it is; the key is the line's post_id when it has one (bad lines are sent too, so
    that the worker's dead-letter path can be tried).
    """
    from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

    from streams.cli.errors import EXIT_FAILED, CommandError, settings_or_exit

    settings = settings_or_exit()
    try:
        sent = asyncio.run(send_jsonl(settings, file, topic or settings.input_topic, rate=rate))
    except KafkaConnectionError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None
    except TopicAuthorizationFailedError:
        who = KafkaConnection.from_settings(settings).identity()
        raise CommandError(
            f"Kafka denies {who} WRITE on topic {topic or settings.input_topic!r}", EXIT_FAILED
        ) from None
    except KafkaError as exc:
        raise CommandError(
            f"producing to {topic or settings.input_topic} failed: {type(exc).__name__}: {exc}", EXIT_FAILED
        ) from None
    click.echo(f"sent {sent} events to {topic or settings.input_topic}", err=True)
