"""streams.topics: the topics a worker creates, from settings."""

from __future__ import annotations

from streams.settings import Settings
from streams.topics import topic_plan


def test_topic_plan_defaults() -> None:
    s = Settings()
    partitions, config = topic_plan(s)
    assert partitions == {
        s.input_topic: s.partitions,
        s.enriched_topic: s.partitions,
        s.dlq_topic: s.partitions,
    }
    assert set(partitions) == {"comments", "comments.enriched", "comments.dlq"}
    assert config == {"comments.dlq": {"retention.ms": str(s.dlq_retention_ms)}}


def test_topic_plan_follows_settings() -> None:
    s = Settings(
        input_topic="in",
        enriched_topic="out",
        dlq_topic="dead",
        partitions=3,
        dlq_retention_ms=7_200_000,
    )
    partitions, config = topic_plan(s)
    assert partitions == {"in": 3, "out": 3, "dead": 3}
    assert config == {"dead": {"retention.ms": "7200000"}}
    # retention.ms is a Kafka config string of the integer, not "7200000.0" or "7_200_000"
    assert config["dead"]["retention.ms"].isdigit()
    # only the dead-letter topic holds raw IPs; the others keep the broker's default retention
    assert "in" not in config
    assert "out" not in config
