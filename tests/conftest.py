"""Shared fixtures: a real Kafka broker for integration tests, and unique names."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools.securekafka import SecureSetup
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


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureSetup]:
    """A secured broker for this session: SASL_SSL (SCRAM) and mutual-TLS listeners, ACLs enforced, no
    PLAINTEXT listener (``shudi kafka start --secure``). Its SCRAM users: ``admin`` (super user), ``shudi``
    and ``shudi-acl``; its certificate user: ``CN=shudi-tls``.

    Started on first use only, once, and shared by the tests that need it. ``TEST_SECURE_KAFKA_PORT=N``
    reuses a secured broker started with ``shudi kafka start --secure --port N`` (same users) instead.
    """
    from streams.devtools import localkafka
    from streams.testing import free_port

    reuse = os.environ.get("TEST_SECURE_KAFKA_PORT")
    if reuse:
        state = localkafka._load_state(int(reuse))
        assert state is not None, f"no local broker on port {reuse}"
        assert state.secure is not None, f"the broker on port {reuse} is not a secured one"
        asyncio.run(wait_ready(state.connection, 120))
        yield state.secure
        return
    broker = localkafka.start(
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("secure-kafka"),
        secure=True,
        scram_users=("shudi", "shudi-acl"),
        tls_users=("shudi-tls",),
    )
    assert broker.secure is not None
    try:
        yield broker.secure
    finally:
        localkafka.stop(broker)


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
