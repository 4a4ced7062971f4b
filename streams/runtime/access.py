"""What a worker needs from the cluster, and the start-up check that it has it.

:func:`required_acls` is the least-privilege list of the README's production checklist: the operations a
worker performs, per topic and consumer group. :func:`prepare_cluster` runs before Faust starts: it connects
(bad credentials or TLS trust stop the worker here, in one line), creates the topics that are missing (only
those: pre-created topics need no ``CREATE`` right) and asks the brokers which of the needed operations the
worker's principal is allowed (Metadata and DescribeGroups report authorized operations), so a missing ACL
stops the worker at once with one line naming it, instead of a Faust or aiokafka retry loop later.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

from aiokafka import errors
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Bytes, Int16, Int32, Schema, String

from streams.runtime.admin import create_topics
from streams.runtime.kafka import KafkaConnection, KafkaConnectionError, explain_failure, quiet_kafka_logs
from streams.runtime.topics import topic_plan
from streams.settings import Settings

__all__ = ["Acl", "KafkaAccessError", "Operation", "prepare_cluster", "required_acls"]


class KafkaAccessError(KafkaConnectionError):
    """The brokers deny the worker something it needs (the message names it)."""


class Operation(enum.IntEnum):
    """Kafka's ACL operation codes; authorized-operation bitfields use them as bit numbers."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One ALLOW rule the worker's principal needs: ``operation`` on the resource (literal name)."""

    resource: str  # "topic" or "group"
    name: str
    operation: Operation
    why: str

    def __str__(self) -> str:
        return f"{self.operation.name} on {self.resource} {self.name!r}"


def required_acls(settings: Settings, *, create_topics: bool = False) -> list[Acl]:
    """The ALLOW ACLs a worker needs, for its principal, on literal resource names.

    READ and WRITE imply DESCRIBE. No idempotent or transactional producer is used (at-least-once with
    ``acks=all``), so neither ``IDEMPOTENT_WRITE`` nor transactional-id rights are needed. ``CREATE`` only
    when the worker is to create missing topics itself (``create_topics``); pre-create them otherwise.
    """
    from streams.runtime.counting import changelog_topics

    s = settings
    acls = [
        Acl("topic", s.input_topic, Operation.READ, "the enrichment consumer reads the comments"),
        Acl("topic", s.enriched_topic, Operation.WRITE, "labelled comments"),
        Acl("topic", s.dlq_topic, Operation.WRITE, "dead letters"),
        Acl("topic", s.counts_topic, Operation.WRITE, "per-batch counts from the enrichment loop"),
        Acl("topic", s.counts_topic, Operation.READ, "the counting agent (Faust) reads the counts"),
        Acl("topic", s.bursts_topic, Operation.WRITE, "burst events"),
    ]
    for changelog in changelog_topics(s):
        acls.append(Acl("topic", changelog, Operation.WRITE, "Faust table changelog"))
        acls.append(Acl("topic", changelog, Operation.READ, "table recovery after a rebalance or restart"))
    acls.append(Acl("group", s.app_id, Operation.READ, "Faust's consumer group (counting agent, tables)"))
    acls.append(Acl("group", f"{s.app_id}-enrich", Operation.READ, "the enrichment consumer group"))
    if create_topics:
        partitions, _ = topic_plan(s)
        acls += [Acl("topic", t, Operation.CREATE, "create the topic if missing") for t in partitions]
    return acls


# --- the start-up check -------------------------------------------------------------------------

_TOPIC_AUTHORIZATION_FAILED = errors.TopicAuthorizationFailedError.errno
_UNKNOWN_TOPIC = errors.UnknownTopicOrPartitionError.errno
_UNKNOWN_OPERATIONS = -(2**31)  # "not reported"


async def prepare_cluster(
    settings: Settings,
    connect_timeout: float = 25.0,
    setup_timeout: float = 120.0,
) -> None:
    """Connect, create missing topics, and check every right the worker needs; raise
    :class:`KafkaConnectionError` (or :class:`KafkaAccessError`) with one line naming the problem.

    Connecting (TLS handshake, SASL login, first metadata) must succeed within ``connect_timeout``, so bad
    credentials or trust stop a worker within 30 s; creating topics on a busy cluster may take longer."""
    conn = KafkaConnection.from_settings(settings)
    with quiet_kafka_logs():
        admin = conn.admin(request_timeout_ms=10_000)
        try:
            try:
                async with asyncio.timeout(connect_timeout):
                    await admin.start()
            except TimeoutError:
                raise KafkaConnectionError(
                    f"Kafka did not answer within {connect_timeout:.0f}s ({conn.describe()})"
                ) from None
            except Exception as exc:  # noqa: BLE001 -- explained in one line
                raise KafkaConnectionError(await explain_failure(conn, exc)) from None
            try:
                async with asyncio.timeout(setup_timeout):
                    await _ensure_topics_and_rights(admin, conn, settings)
            except TimeoutError:
                raise KafkaConnectionError(
                    f"checking and creating the topics took over {setup_timeout:.0f}s ({conn.describe()})"
                ) from None
        finally:
            await admin.close()


async def _ensure_topics_and_rights(admin: Any, conn: KafkaConnection, settings: Settings) -> None:
    partitions, config = topic_plan(settings)
    needed: dict[tuple[str, str], set[Operation]] = {}
    for acl in required_acls(settings):
        needed.setdefault((acl.resource, acl.name), set()).add(acl.operation)

    topics = await _topic_operations(admin, list(partitions))
    missing = [t for t, (code, _) in topics.items() if code == _UNKNOWN_TOPIC]
    if missing:
        try:
            await create_topics(
                conn,
                {t: partitions[t] for t in missing},
                {t: config[t] for t in missing if t in config},
                replication_factor=settings.replication_factor,
            )
        except errors.TopicAuthorizationFailedError:
            raise KafkaAccessError(
                f"Kafka denies {conn.identity()} CREATE on the missing topic(s) {', '.join(missing)}: "
                "pre-create them or grant CREATE (README: production checklist)"
            ) from None
        except errors.KafkaError as exc:
            raise KafkaAccessError(f"creating topic(s) {', '.join(missing)} failed: {exc}") from None
        topics.update(await _topic_operations(admin, missing))

    denied: list[str] = []
    for topic, (code, allowed) in topics.items():
        wanted = needed.get(("topic", topic), set())
        if code == _TOPIC_AUTHORIZATION_FAILED:
            denied += [str(Acl("topic", topic, op, "")) for op in sorted(wanted)]
        elif code != 0:
            raise KafkaConnectionError(
                f"topic {topic!r}: {errors.for_code(code).__name__} ({conn.describe()})"
            )
        elif allowed != _UNKNOWN_OPERATIONS:
            denied += [str(Acl("topic", topic, op, "")) for op in sorted(wanted) if not allowed >> op & 1]

    for group in (settings.app_id, f"{settings.app_id}-enrich"):
        wanted = needed[("group", group)]
        group_ops = await _group_operations(admin, group)
        if group_ops is None:
            denied += [str(Acl("group", group, op, "")) for op in sorted(wanted)]
        elif group_ops != _UNKNOWN_OPERATIONS:
            denied += [str(Acl("group", group, op, "")) for op in sorted(wanted) if not group_ops >> op & 1]

    if denied:
        raise KafkaAccessError(
            f"Kafka denies {conn.identity()}: {'; '.join(denied)}; grant it (README: production checklist)"
        )


async def _topic_operations(admin: Any, topics: list[str]) -> dict[str, tuple[int, int]]:
    """``{topic: (error code, authorized-operations bitfield)}`` from one Metadata v8 request."""
    response = await admin._send_request(_MetadataWithOperations(topics))
    out = {}
    for topic in response.topics:
        error_code, name, _internal, _partitions, operations = topic
        out[name] = (error_code, operations)
    return out


async def _group_operations(admin: Any, group: str) -> int | None:
    """The group's authorized-operations bitfield, or None when even DESCRIBE is denied."""
    try:
        node = await admin.find_coordinator(group)
    except errors.GroupAuthorizationFailedError:
        return None
    response = await admin._send_request(_DescribeGroupsWithOperations([group]), node)
    for entry in response.groups:
        error_code, operations = entry[0], entry[-1]
        if error_code == errors.GroupAuthorizationFailedError.errno:
            return None
        if error_code:
            raise errors.for_code(error_code)(f"describing group {group!r}")
        return int(operations)
    return _UNKNOWN_OPERATIONS


# aiokafka's Metadata stops at v5 and its DescribeGroups v3 reads the v2 response (no operations): the two
# versions that report authorized operations, as Kafka defines them (both non-flexible).
class _MetadataResponseV8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8"))),
        ),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _MetadataWithOperations(Request[_MetadataRequestV8]):  # type: ignore[misc]
    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self._topics, False, False, True)


class _DescribeGroupsResponseV3(Response):  # type: ignore[misc]
    API_KEY = 15
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            Array(
                ("error_code", Int16),
                ("group", String("utf-8")),
                ("state", String("utf-8")),
                ("protocol_type", String("utf-8")),
                ("protocol", String("utf-8")),
                (
                    "members",
                    Array(
                        ("member_id", String("utf-8")),
                        ("client_id", String("utf-8")),
                        ("client_host", String("utf-8")),
                        ("member_metadata", Bytes),
                        ("member_assignment", Bytes),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
    )


class _DescribeGroupsRequestV3(RequestStruct):  # type: ignore[misc]
    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = _DescribeGroupsResponseV3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class _DescribeGroupsWithOperations(Request[_DescribeGroupsRequestV3]):  # type: ignore[misc]
    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[_DescribeGroupsRequestV3]) -> _DescribeGroupsRequestV3:
        return request_struct_class(self._groups, True)
