"""The Faust application factory: settings in, a configured app with its agents out.

``create_app`` reads nothing from the environment; the CLI builds the settings and hands them over, and tests
build their own. The GeoIP databases are opened and compiled first (``load_geoip``, in a thread), so a worker
with a missing or corrupt database stops at start with one line naming the path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faust
from prometheus_client import CollectorRegistry

from streams.pipeline.enrich import Enricher
from streams.pipeline.geodb import Source, open_database
from streams.pipeline.geodb.labeller import DatabaseWatcher, Labeller, ReloadResult, db_names, load
from streams.pipeline.geodb.table import TerritoryTable
from streams.runtime.counting import register_detection_agent, window_spec
from streams.runtime.enrichment import EnrichmentService
from streams.runtime.health import Health, arm_stop_watchdog
from streams.runtime.kafka import KafkaConnection
from streams.runtime.metrics import Metrics
from streams.settings import Settings


@dataclass(slots=True)
class Shudi:
    """The app and the objects its agents share; what a test or the CLI needs to drive a worker."""

    app: faust.App
    settings: Settings
    metrics: Metrics
    labeller: Labeller
    watcher: DatabaseWatcher
    health: Health
    enrichment: EnrichmentService


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def worker_class(enrichment: EnrichmentService) -> type[faust.Worker]:
    """Faust's worker, telling the enrichment loop to stop taking batches as soon as a stop begins
    (SIGTERM, SIGINT or a fatal error), not when Faust's stop order reaches it."""

    armed: list[object] = []  # the stop watchdog, once a stop began (health.arm_stop_watchdog)

    class Worker(faust.Worker):
        async def stop(self) -> None:
            enrichment.request_stop()
            watchdog = None
            if not armed:
                # exits 70 (EXIT_FATAL) if Faust's stop hangs, naming what it waits on
                watchdog = arm_stop_watchdog(loop=asyncio.get_running_loop())
                armed.append(watchdog)
            await super().stop()
            if watchdog is not None:
                # Faust's stop came back: nothing hangs. A process that goes on after its worker stopped
                # (a test, an embedding program) must not be killed 50 s later.
                watchdog.cancel()

    return Worker


GeoIP = tuple[list[Source], TerritoryTable]  # the open database files and their compiled table


def table_cache_dir(settings: Settings) -> Path:
    """Where the compiled table is cached: beside Faust's data, keyed by the files' content, so a restart
    with the same files skips the compile (seconds on a real database)."""
    return settings.data_dir / "geoip-table"


async def load_geoip(settings: Settings, *, opener: Callable[[Path], Source] = open_database) -> GeoIP:
    """Open the database files and compile (or read back) the territory table in a thread: the event loop
    goes on meanwhile (the worker checks its Kafka topics at the same time). Raises ``DatabaseError`` naming
    the file if one is unusable, so the worker stops at start with one line."""
    return await asyncio.to_thread(load, list(settings.geoip_db), table_cache_dir(settings), opener=opener)


def create_app(
    settings: Settings, *, registry: CollectorRegistry | None = None, geoip: GeoIP | None = None
) -> Shudi:
    """Build a worker's Faust app over ``geoip`` (from :func:`load_geoip`). Without it the databases are
    loaded here, blocking: allowed only where no event loop runs (offline tools, tests), since a compile
    takes seconds. Raises ``DatabaseError`` if a database is unusable."""
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    table_cache = table_cache_dir(settings)
    if geoip is None:
        if _loop_running():
            raise RuntimeError("create_app in a running event loop: pass geoip=await load_geoip(settings)")
        geoip = load(list(settings.geoip_db), table_cache)
    # Reloads compile in a thread too, while the loop runs (DatabaseWatcher.run).
    sources, table = geoip
    labeller = Labeller(table, cache_size=settings.geoip_cache_size, on_miss=metrics.lookup_seconds.observe)
    names = db_names([s.path for s in sources])

    def observe_reload(result: ReloadResult) -> None:
        metrics.observe_reload(result)
        metrics.observe_table(labeller.table, names)

    watcher = DatabaseWatcher(labeller, sources, on_result=observe_reload, cache_dir=table_cache)
    metrics.observe_table(table, names)

    enricher = Enricher(
        labeller,
        max_message_bytes=settings.max_message_bytes,
        ip_hash_key=settings.ip_hash_key.get_secret_value().encode() if settings.ip_hash_key else None,
        windows=window_spec(settings),
        max_ahead_s=settings.max_event_ahead_s,
    )
    health = Health(stall_timeout_s=settings.stall_timeout_s)
    enrichment = EnrichmentService(settings, enricher, metrics, health)

    kafka = KafkaConnection.from_settings(settings)
    app = faust.App(
        settings.app_id,
        broker=kafka.faust_broker_urls(),
        broker_credentials=kafka.faust_credentials(),
        # The worker creates its topics before Faust starts (streams.runtime.topics), or finds them made by
        # a platform team: Faust must not try (its CreateTopics would need the CREATE right), and it needs no
        # leader topic (nothing here runs `on_leader`).
        topic_allow_declare=False,
        topic_disable_leader=True,
        autodiscover=False,
        store=settings.store,
        datadir=str(settings.data_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        # Faust's 60 s default keeps a dead worker's partitions unassigned for a minute after a crash;
        # aiokafka's own default (used by the enrichment consumer) is 10 s.
        broker_session_timeout=10.0,
        # Faust's web server serves table contents and a router to anyone by default: bind it where the
        # settings say and keep only the health/stats views.
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_router_enabled=False,
        web_tables_enabled=False,
        Worker=worker_class(enrichment),
    )
    # Faust accepts an instance here too; its annotation only names the class form.
    app.service(enrichment)  # type: ignore[arg-type]
    register_detection_agent(app, settings, metrics, health)

    async def watch_geoip_database() -> None:
        await watcher.run(settings.geoip_reload_interval_s)

    app.task(watch_geoip_database)

    return Shudi(
        app=app,
        settings=settings,
        metrics=metrics,
        labeller=labeller,
        watcher=watcher,
        health=health,
        enrichment=enrichment,
    )
