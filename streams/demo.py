"""``shudi demo``: a local broker, a worker and sample comments, so a newcomer sees labelled output.

Everything runs on 127.0.0.1. The GeoIP database is the synthetic DEMO database from
:func:`streams.mmdbbuild.build_demo_db`: real-looking labels for made-up networks, not real geography.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import click
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams import localkafka
from streams.producer import produce_lines
from streams.sample import sample_events
from streams.settings import Settings


@click.command()
@click.option("--port", default=9092, show_default=True, help="Port of the local Kafka broker.")
@click.option("--events", default=3000, show_default=True, help="Sample comments to send.")
@click.option("--workdir", default=Path("var/demo"), type=click.Path(path_type=Path), show_default=True)
@click.option("--keep", is_flag=True, help="Leave the broker and the worker running afterwards.")
def demo(port: int, events: int, workdir: Path, keep: bool) -> None:
    """Start a local Kafka and a worker, send sample comments, and show them labelled."""
    from streams.mmdbbuild import build_demo_db, sample_ips

    workdir.mkdir(parents=True, exist_ok=True)
    bootstrap = f"127.0.0.1:{port}"
    started_broker = None
    if localkafka.status(port):
        click.echo(f"using the Kafka broker already on {bootstrap}")
    else:
        click.echo(f"starting Kafka on {bootstrap} (the first run downloads the jars with mvn) ...")
        started_broker = localkafka.start(port)

    db = build_demo_db(workdir / "demo-city.mmdb")
    click.echo(f"GeoIP: {db} (synthetic DEMO data: made-up networks, real-looking labels)")
    settings = Settings(broker=bootstrap, geoip_db=db.resolve(), data_dir=(workdir / "worker").resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHUDI_")}
    env |= {
        "SHUDI_BROKER": bootstrap,
        "SHUDI_GEOIP_DB": str(settings.geoip_db),
        "SHUDI_DATA_DIR": str(settings.data_dir),
    }
    log_path = workdir / "worker.log"
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    click.echo(
        f"worker: pid {worker.pid}, log {log_path}, metrics http://127.0.0.1:{settings.metrics_port}/metrics"
    )
    try:
        sample = workdir / "sample.jsonl"
        ips = sample_ips(db, None, n=300, seed=int(time.time()))
        seed = int(time.time())
        with sample.open("wb") as f:
            for event in sample_events(ips, events, bad_fraction=0.02, seed=seed, prefix="demo-"):
                if event.value:
                    f.write(event.value + b"\n")
        click.echo(f"sending {sample} (replay it with: shudi send {sample})\n")
        asyncio.run(_send_and_show(settings, sample))
    finally:
        if keep:
            click.echo(
                f"\nleft running: worker pid {worker.pid}; stop the broker: shudi kafka stop --port {port}"
            )
        else:
            worker.terminate()
            worker.wait(60)
            if started_broker is not None:
                localkafka.stop(started_broker)


async def _send_and_show(settings: Settings, sample: Path, show: int = 12) -> None:
    from streams.producer import read_lines

    lines = list(read_lines(sample))
    topics = (settings.enriched_topic, settings.dlq_topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        # Read only what this run produces: start at the current end of both output topics.
        partitions = [TopicPartition(topic, p) for topic in topics for p in range(settings.partitions)]
        await _wait_for_topics(consumer, topics)
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        await produce_lines(settings.broker, settings.input_topic, lines)
        territories: Counter[tuple[str, str, str]] = Counter()
        scopes: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        shown = 0
        deadline = time.monotonic() + 120
        while sum(territories.values()) + sum(reasons.values()) < len(lines) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    body = json.loads(record.value or b"{}")
                    if tp.topic == settings.dlq_topic:
                        reasons[body["reason"]] += 1
                        continue
                    t = body["territory"]
                    territories[(t["code"], t["name_zh"], t["name_en"])] += 1
                    scopes[t["scope"]] += 1
                    if shown < show:
                        shown += 1
                        click.echo(
                            f"  {t['name_zh']:<6}\t{t['code']:<6}\t{t['scope']:<15}{body['text'][:28]}"
                        )
        click.echo(f"\n{sum(territories.values())} labelled, {sum(reasons.values())} dead-lettered")
        click.echo(
            "top territories: " + ", ".join(f"{zh} {n}" for (_, zh, _), n in territories.most_common(10))
        )
        click.echo("by scope: " + ", ".join(f"{s} {n}" for s, n in scopes.most_common()))
        click.echo("dead letters by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    finally:
        await consumer.stop()


async def _wait_for_topics(consumer: AIOKafkaConsumer, topics: tuple[str, ...], timeout: float = 60) -> None:  # noqa: ASYNC109
    """The worker creates the topics at start; wait until it has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        existing = await consumer.topics()
        if all(t in existing for t in topics):
            return
        await asyncio.sleep(0.5)
    raise click.ClickException(f"the worker did not create {topics} within {timeout}s; see its log")
