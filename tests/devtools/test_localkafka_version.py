"""streams.devtools.localkafka: the Kafka version is selectable (the fault matrix runs on several)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.devtools import localkafka


def test_the_default_version_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_LOCAL_VERSION", raising=False)
    monkeypatch.delenv("KAFKA_LOCAL_CACHE", raising=False)
    assert localkafka.kafka_version() == localkafka.KAFKA_VERSION
    assert localkafka.cache_root().name == f"kafka-{localkafka.KAFKA_VERSION}"


def test_kafka_local_version_picks_the_jars_and_their_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KAFKA_LOCAL_VERSION", "4.4.0")
    monkeypatch.delenv("KAFKA_LOCAL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert localkafka.kafka_version() == "4.4.0"
    assert localkafka.cache_root() == tmp_path / "shudi" / "kafka-4.4.0"
    pom = localkafka._pom(localkafka.kafka_version())
    assert "<artifactId>kafka_2.13</artifactId>\n      <version>4.4.0</version>" in pom
    assert localkafka.KAFKA_VERSION not in pom
