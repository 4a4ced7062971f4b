"""The Faust application factory: settings in, a configured app with its agents out.

``create_app`` reads nothing from the environment; the CLI builds the settings and hands them over, and tests
build their own. Opening the GeoIP database happens here, so a worker with a missing or corrupt database
stops at start with one line naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from prometheus_client import CollectorRegistry

from streams.pipeline.enrich import Enricher
from streams.pipeline.geoip import DatabaseWatcher, Labeller, MmdbDatabase
from streams.runtime.counting import register_detection_agent, window_spec
from streams.runtime.enrichment import EnrichmentService
from streams.runtime.health import Health, arm_stop_watchdog
from streams.runtime.kafka import ssl_context
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


def faust_broker_urls(settings: Settings) -> list[str]:
    return [f"kafka://{server}" for server in settings.bootstrap_servers]


def broker_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def worker_class(enrichment: EnrichmentService) -> type[faust.Worker]:
    """Faust's worker, telling the enrichment loop to stop taking batches as soon as a stop begins
    (SIGTERM, SIGINT or a fatal error), not when Faust's stop order reaches it."""

    armed: list[object] = []  # the stop watchdog, once a stop began (health.arm_stop_watchdog)

    class Worker(faust.Worker):
        async def stop(self) -> None:
            enrichment.request_stop()
            if not armed:
                armed.append(arm_stop_watchdog())  # exits 70 (EXIT_FATAL) if Faust hangs
            await super().stop()

    return Worker


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> Shudi:
    """Build a worker's Faust app. Raises ``DatabaseError`` if the database is unusable."""
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    database = MmdbDatabase.open(settings.geoip_db)
    labeller = Labeller(
        database, cache_size=settings.geoip_cache_size, on_miss=metrics.lookup_seconds.observe
    )
    watcher = DatabaseWatcher(labeller, settings.geoip_db, on_result=metrics.observe_reload)
    metrics.db_build.set(database.build_epoch)

    enricher = Enricher(
        labeller,
        max_message_bytes=settings.max_message_bytes,
        ip_hash_key=settings.ip_hash_key.get_secret_value().encode() if settings.ip_hash_key else None,
        windows=window_spec(settings),
        max_ahead_s=settings.max_event_ahead_s,
    )
    health = Health(stall_timeout_s=settings.stall_timeout_s)
    enrichment = EnrichmentService(settings, enricher, metrics, health)

    app = faust.App(
        settings.app_id,
        broker=faust_broker_urls(settings),
        broker_credentials=broker_credentials(settings),
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
