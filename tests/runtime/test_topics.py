"""streams.runtime.topics: the topics a worker creates, from settings."""

from __future__ import annotations

from streams.runtime.topics import topic_plan
from streams.settings import Settings

CHANGELOGS = ("shudi-windows", "shudi-detectors", "shudi-clocks")


def test_topic_plan_defaults() -> None:
    s = Settings()
    partitions, config = topic_plan(s)
    changelogs = {f"shudi-{table}-changelog" for table in CHANGELOGS}
    assert (
        set(partitions)
        == {
            "comments",
            "comments.enriched",
            "comments.dlq",
            "territory.counts",
            "territory.bursts",
        }
        | changelogs
    )
    # Faust refuses a table whose changelog has other partitions than its source topic (the counts topic).
    assert set(partitions.values()) == {s.partitions}
    assert config["comments.dlq"] == {"retention.ms": str(s.dlq_retention_ms)}
    assert config["territory.counts"] == {"retention.ms": str(24 * 3600 * 1000)}
    for changelog in changelogs:
        assert config[changelog] == {"cleanup.policy": "compact"}


def test_topic_plan_follows_settings() -> None:
    s = Settings(
        app_id="app",
        input_topic="in",
        enriched_topic="out",
        dlq_topic="dead",
        counts_topic="cnt",
        bursts_topic="bu",
        partitions=3,
        dlq_retention_ms=7_200_000,
    )
    partitions, config = topic_plan(s)
    assert partitions == {"in": 3, "out": 3, "dead": 3, "cnt": 3, "bu": 3} | {
        f"app-{table}-changelog": 3 for table in CHANGELOGS
    }
    assert config["dead"] == {"retention.ms": "7200000"}
    # retention.ms is a Kafka config string of the integer, not "7200000.0" or "7_200_000"
    assert config["dead"]["retention.ms"].isdigit()
    # only the dead-letter topic holds raw IPs; input, output and bursts keep the broker's default retention
    assert not {"in", "out", "bu"} & set(config)
