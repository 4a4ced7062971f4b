"""The topics a worker reads and writes, created before Faust starts.

Faust creates only its internal topics; with a missing source topic it logs "Ignoring missing topic" and
processes nothing, so the worker creates the topics it needs (an existing topic is left as it is). The app
is told not to declare any topic itself (``topic_allow_declare=False``), so a worker whose principal may not
create topics runs on pre-created ones.
"""

from __future__ import annotations

from streams.runtime.counting import changelog_topics
from streams.settings import Settings


def topic_plan(settings: Settings) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """Partition counts and per-topic configs of shudi's own topics."""
    partitions = {
        settings.input_topic: settings.partitions,
        settings.enriched_topic: settings.partitions,
        settings.dlq_topic: settings.partitions,
        settings.counts_topic: settings.partitions,
        settings.bursts_topic: settings.partitions,
    }
    # The dead-letter topic keeps original messages, raw IPs included, for reprocessing: short retention.
    # The counts topic only carries state forward until windows close (the tables keep the rest).
    config = {
        settings.dlq_topic: {"retention.ms": str(settings.dlq_retention_ms)},
        settings.counts_topic: {"retention.ms": str(24 * 3600 * 1000)},
    }
    # Faust would declare the tables' changelogs itself, but on a fresh cluster its first metadata view can
    # miss them and the agent then crashes with PartitionsMismatch; they must match the counts topic.
    for changelog in changelog_topics(settings):
        partitions[changelog] = settings.partitions
        config[changelog] = {"cleanup.policy": "compact"}
    return partitions, config


async def ensure_topics(settings: Settings) -> None:
    """Create the missing topics and check the worker's rights (``access.prepare_cluster``);
    raises :class:`streams.runtime.kafka.KafkaConnectionError` with one line naming what is wrong."""
    from streams.runtime.access import prepare_cluster

    await prepare_cluster(settings)
