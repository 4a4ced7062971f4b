"""Shared fixtures: a real Kafka broker for integration tests, and unique names."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.runtime.admin import wait_ready
from tests.geoip_fixtures import MAXMIND_DIR, build_fixture_db


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
    from streams.devtools.localkafka import start, stop
    from streams.testing import free_port

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


@pytest.fixture(scope="session")
def fixture_db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known-answer database (variant "a"), built once per session. Do not modify it: copy it."""
    return build_fixture_db(tmp_path_factory.mktemp("geoip") / "fixture.mmdb")


@pytest.fixture(scope="session")
def fixture_db_b_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known-answer database, variant "b" (CASES[0] relabelled), for hot-reload tests."""
    return build_fixture_db(tmp_path_factory.mktemp("geoip") / "fixture-b.mmdb", variant="b")


@pytest.fixture(scope="session")
def maxmind_dir() -> Path:
    """MaxMind's public test databases, vendored in tests/data/maxmind (MIT)."""
    return MAXMIND_DIR
