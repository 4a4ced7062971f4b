"""Shared fixtures: a real Kafka broker for integration tests, and unique names."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

from streams.kafka_admin import wait_ready


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a ready broker: $TEST_KAFKA_BOOTSTRAP, or a local one for this session.

    Lazy like every fixture, so a run without integration tests never starts a JVM.
    """
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if external:
        asyncio.run(wait_ready(external, 120))
        yield external
        return

    # Imported here so unit-test runs do not depend on the broker module at all.
    from streams.localkafka import free_port, start, stop

    # A pytest tmp dir (not a throwaway one) so server.log survives a failed run for inspection.
    broker = start(port=free_port(), data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.bootstrap
    finally:
        stop(broker)


@pytest.fixture
def uid() -> str:
    """Short unique suffix for topic and group names, so tests never see each other's data."""
    return uuid.uuid4().hex[:10]
