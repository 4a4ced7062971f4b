"""The modes "raw" and "naive": the plain aiokafka loop the project measures itself against, run by the
harness as a child process::

    python -m bench.throughput.loops raw|naive --bootstrap HOST:PORT --in-topic IN --out-topic OUT \\
        --dlq-topic DLQ --group GROUP [--db CITY.mmdb]

``raw`` relays every record as it is; ``naive`` enriches each with stdlib json and a full geoip2 ``city()``
model, no cache. Both commit only after every record of a batch is acknowledged (at-least-once). SIGTERM or
SIGINT ends the loop.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import click

from bench.throughput.kafka import stop_consumer
from bench.throughput.options import run_async
from streams.runtime.kafka import connection_from_env

REQUIRED_FIELDS = ("event_id", "user_id", "post_id", "text", "ip", "created_at", "platform")


class NaiveEnricher:
    """The straightforward pipeline: stdlib json, a full geoip2 ``city()`` model per event, no cache."""

    def __init__(self, db: Path) -> None:
        import geoip2.database
        import geoip2.errors

        self.reader = geoip2.database.Reader(str(db))
        self.not_found = geoip2.errors.AddressNotFoundError

    def __call__(self, value: bytes) -> bytes | None:
        """The enriched record, or None for a dead letter."""
        try:
            ev = json.loads(value)
            if not isinstance(ev, dict) or any(f not in ev for f in REQUIRED_FIELDS):
                return None
            ev["ip_territory"] = self._territory(ev.pop("ip"))
            return json.dumps(ev, ensure_ascii=False).encode()
        except (ValueError, TypeError):  # JSONDecodeError is a ValueError; so is a malformed address
            return None

    def _territory(self, ip: str) -> dict[str, Any]:
        try:
            city = self.reader.city(ip)
        except self.not_found:
            return {"code": "ZZ", "name_zh": "未知", "name_en": "Unknown", "country_code": None}
        cc = city.country.iso_code
        sub = city.subdivisions.most_specific
        return {
            "code": f"{cc}-{sub.iso_code}" if cc == "CN" and sub.iso_code else cc,
            "name_zh": sub.names.get("zh-CN") or city.country.names.get("zh-CN"),
            "name_en": sub.name or city.country.name,
            "country_code": cc,
        }


async def relay(
    bootstrap: str, in_topic: str, out_topic: str, dlq_topic: str, group: str, enrich: NaiveEnricher | None
) -> None:
    """Consume ``in_topic`` in batches, produce each record (enriched, or as it is) and commit, until a
    SIGTERM or SIGINT."""
    kafka = connection_from_env(bootstrap)  # the SHUDI_* TLS/SASL settings, if any
    consumer = kafka.consumer(
        in_topic,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
    )
    # acks=all like Faust's default, so the comparison is about the client path, not durability settings.
    producer = kafka.producer(acks="all", linger_ms=5, max_batch_size=256 * 1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await consumer.start()
    await producer.start()
    send = producer.send
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            if not batches:
                continue
            futs = []
            for msgs in batches.values():
                for m in msgs:
                    if enrich is None:
                        futs.append(await send(out_topic, m.value, key=m.key))
                    elif (out := enrich(m.value)) is not None:
                        futs.append(await send(out_topic, out, key=m.key))
                    else:
                        futs.append(await send(dlq_topic, m.value, key=m.key))
            # At-least-once: commit only after every record of the batch is acknowledged by the broker.
            await asyncio.gather(*futs)
            await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in batches.items()})
    finally:
        await producer.stop()
        await stop_consumer(consumer)


@click.command()
@click.argument("mode", type=click.Choice(["raw", "naive"]))
@click.option("--bootstrap", required=True)
@click.option("--in-topic", required=True)
@click.option("--out-topic", required=True)
@click.option("--dlq-topic", required=True)
@click.option("--group", required=True)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="GeoIP2-City .mmdb (naive)")
def main(
    mode: str, bootstrap: str, in_topic: str, out_topic: str, dlq_topic: str, group: str, db: Path | None
) -> None:
    """Run the raw or the naive loop until SIGTERM."""
    if mode == "naive" and db is None:
        raise click.UsageError("the naive loop needs --db")
    enrich = NaiveEnricher(db) if mode == "naive" and db is not None else None
    run_async(relay(bootstrap, in_topic, out_topic, dlq_topic, group, enrich))


if __name__ == "__main__":
    main()
