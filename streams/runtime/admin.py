"""Kafka admin helpers: a readiness probe, topic creation (the one ``create_topics``) and ACLs.

Used by the worker (:mod:`streams.runtime.topics`), the local broker (:mod:`streams.devtools.localkafka`),
the benchmarks and the tests. Each takes a :class:`~streams.runtime.kafka.KafkaConnection`; a plain
``host:port`` string means a PLAINTEXT development broker (``shudi kafka start``, the test broker).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from streams.runtime.kafka import KafkaConnection

__all__ = ["create_acls", "create_topics", "delete_acls", "probe", "wait_ready"]

# Short request timeout: a probe against a port with nothing behind it should fail fast.
_PROBE_TIMEOUT_MS = 3000


async def probe(kafka: KafkaConnection | str, *, warm_group_coordinator: bool = False) -> None:
    """One metadata round trip; raises if the cluster does not answer.

    With ``warm_group_coordinator`` it also asks for a group coordinator, which makes the broker
    create ``__consumer_offsets``; otherwise the first consumer group of a fresh broker logs
    GroupCoordinatorNotAvailableError while that topic is being created.
    """
    admin = KafkaConnection.of(kafka).admin(request_timeout_ms=_PROBE_TIMEOUT_MS)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        if not cluster.get("brokers"):
            raise KafkaError("metadata response lists no brokers yet")
        if warm_group_coordinator:
            await admin.find_coordinator("shudi-readiness-probe")
    finally:
        await admin.close()


# The name `timeout` is the agreed API (tests and the app call wait_ready(bootstrap, timeout)).
async def wait_ready(kafka: KafkaConnection | str, timeout: float = 120.0) -> None:  # noqa: ASYNC109
    """Poll until a metadata request (and group-coordinator lookup) succeeds, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            await probe(kafka, warm_group_coordinator=True)
        except (TimeoutError, KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.5)
        else:
            return
    where = KafkaConnection.of(kafka).describe()
    raise TimeoutError(f"Kafka ({where}) not ready after {timeout:.0f}s (last error: {last!r})")


async def create_topics(
    kafka: KafkaConnection | str,
    topics: Mapping[str, int],
    config: Mapping[str, Mapping[str, str]] | None = None,
    replication_factor: int = 1,
    timeout_ms: int = 30_000,
) -> None:
    """Create ``{name: partitions}`` topics; existing topics are left as they are.

    Returns only once every partition has a leader in metadata, so a producer started right
    after does not race the controller and hit UnknownTopicOrPartition.
    """
    config = config or {}
    new = [
        NewTopic(name, partitions, replication_factor, topic_configs=dict(config.get(name, {})))
        for name, partitions in topics.items()
    ]
    admin = KafkaConnection.of(kafka).admin()
    try:
        await admin.start()
        response = await admin.create_topics(new, timeout_ms=timeout_ms)
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code == 0:
                continue
            err = for_code(code)
            if err is TopicAlreadyExistsError:
                continue
            message = entry[2] if len(entry) > 2 and entry[2] else err.description
            raise err(f"creating topic {name!r}: {message}")
        await _wait_for_leaders(admin, topics, time.monotonic() + timeout_ms / 1000)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: Mapping[str, int], deadline: float) -> None:
    missing = dict(topics)
    while True:
        for meta in await admin.describe_topics(list(missing)):
            parts = meta.get("partitions") or []
            # An existing topic may have another partition count; what matters is that all have leaders.
            if meta.get("error_code") == 0 and parts and all(p["leader"] >= 0 for p in parts):
                missing.pop(meta["topic"], None)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics still without partition leaders: {sorted(missing)}")
        await asyncio.sleep(0.2)


# --- ACLs (the local secured broker, the least-privilege tests) ---------------------------------------------

_RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4}
_LITERAL = 3
_ALLOW = 3


async def create_acls(
    kafka: KafkaConnection | str, principal: str, rules: Iterable[tuple[str, str, int]], host: str = "*"
) -> None:
    """ALLOW ``principal`` (``User:name``) each ``(resource type, literal name, operation code)`` rule."""
    from aiokafka.protocol.admin import CreateAclsRequest

    admin = KafkaConnection.of(kafka).admin()
    try:
        await admin.start()
        for resource, name, operation in rules:
            request = CreateAclsRequest(
                _RESOURCE_TYPES[resource], name, _LITERAL, principal, host, operation, _ALLOW
            )
            response = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code:
                    raise for_code(code)(f"creating ACL {resource}:{name} op {operation}: {message}")
    finally:
        await admin.close()


async def delete_acls(
    kafka: KafkaConnection | str, principal: str, rules: Iterable[tuple[str, str, int]], host: str = "*"
) -> int:
    """Delete the ALLOW rules :func:`create_acls` made; returns how many ACLs the brokers removed."""
    from aiokafka.protocol.admin import DeleteAclsRequest

    admin = KafkaConnection.of(kafka).admin()
    removed = 0
    try:
        await admin.start()
        for resource, name, operation in rules:
            request = DeleteAclsRequest(
                _RESOURCE_TYPES[resource], name, _LITERAL, principal, host, operation, _ALLOW
            )
            response = await admin._send_request(request)
            for code, message, matching in response.filter_responses:
                if code:
                    raise for_code(code)(f"deleting ACL {resource}:{name} op {operation}: {message}")
                removed += len(matching)
    finally:
        await admin.close()
    return removed
