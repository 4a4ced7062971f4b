"""streams.runtime.access: the least-privilege ACL list, and the README's copy of it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka import errors

from streams.runtime.access import KafkaAccessError, Operation, _ensure_topics_and_rights, required_acls
from streams.runtime.kafka import KafkaConnection
from streams.runtime.topics import topic_plan
from streams.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_worker_needs_read_write_and_its_two_groups_only() -> None:
    s = Settings()
    acls = required_acls(s)
    groups = {a.name for a in acls if a.resource == "group"}
    assert groups == {s.app_id, f"{s.app_id}-enrich"}
    assert {a.operation for a in acls} == {Operation.READ, Operation.WRITE}
    topics = {a.name for a in acls if a.resource == "topic"}
    assert topics == set(topic_plan(s)[0])
    # The input is only read, the outputs only written.
    assert {a.operation for a in acls if a.name == s.input_topic} == {Operation.READ}
    for output in (s.enriched_topic, s.dlq_topic, s.bursts_topic):
        assert {a.operation for a in acls if a.name == output} == {Operation.WRITE}
    assert len(set(acls)) == len(acls)


def test_create_adds_create_on_each_topic_and_nothing_else() -> None:
    s = Settings(app_id="x", input_topic="in")
    extra = set(required_acls(s, create_topics=True)) - set(required_acls(s))
    assert {a.operation for a in extra} == {Operation.CREATE}
    assert {a.name for a in extra} == set(topic_plan(s)[0])


_ROW = re.compile(r"^\s*\|\s*(topic|group)\s*\|\s*`([^`]+)`\s*\|\s*([A-Z, ]+?)\s*\|")


def test_readme_lists_exactly_the_acls_of_the_default_settings() -> None:
    listed: set[tuple[str, str, str]] = set()
    for line in README.read_text().splitlines():
        if match := _ROW.match(line):
            resource, name, operations = match.groups()
            listed |= {(resource, name, op.strip()) for op in operations.split(",")}
    wanted = {(a.resource, a.name, a.operation.name) for a in required_acls(Settings())}
    assert listed == wanted


# --- the start-up check's verdicts, on a fake admin client ------------------------------------------------

ALL = (1 << Operation.READ) | (1 << Operation.WRITE) | (1 << Operation.DESCRIBE)
UNREPORTED = -(2**31)


class _FakeAdmin:
    """Answers Metadata v8 and DescribeGroups v3 the way a broker with these rights would."""

    def __init__(self, topic_ops: dict[str, int | None], group_ops: dict[str, int | None]) -> None:
        self.topic_ops, self.group_ops = topic_ops, group_ops

    async def _send_request(self, request: Any, node: int | None = None) -> Any:
        if request.API_KEY == 3:
            topics: list[tuple[int, str, bool, list[Any], int]] = [
                (0 if ops is not None else 29, t, False, [], ops or 0) for t, ops in self.topic_ops.items()
            ]
            return SimpleNamespace(topics=topics)
        (group,) = request._groups
        return SimpleNamespace(groups=[(0, group, "Empty", "", "", [], self.group_ops[group])])

    async def find_coordinator(self, group: str) -> int:
        if self.group_ops[group] is None:
            raise errors.GroupAuthorizationFailedError(group)
        return 1


def _verdict(topic_ops: dict[str, int | None], group_ops: dict[str, int | None]) -> str | None:
    s = Settings()
    conn = KafkaConnection.plaintext("k:1")
    try:
        asyncio.run(_ensure_topics_and_rights(_FakeAdmin(topic_ops, group_ops), conn, s))
    except KafkaAccessError as exc:
        return str(exc)
    return None


def _everything(ops: int = ALL) -> tuple[dict[str, int | None], dict[str, int | None]]:
    s = Settings()
    return dict.fromkeys(topic_plan(s)[0], ops), {s.app_id: ops, f"{s.app_id}-enrich": ops}


def test_all_rights_pass_and_unreported_rights_are_not_held_against_the_worker() -> None:
    assert _verdict(*_everything()) is None
    assert _verdict(*_everything(UNREPORTED)) is None


def test_a_missing_operation_is_named() -> None:
    topics, groups = _everything()
    topics["comments.enriched"] = (1 << Operation.READ) | (1 << Operation.DESCRIBE)
    groups["shudi-enrich"] = 1 << Operation.DESCRIBE
    verdict = _verdict(topics, groups)
    assert verdict is not None
    assert "WRITE on topic 'comments.enriched'" in verdict
    assert "READ on group 'shudi-enrich'" in verdict
    assert "READ on topic" not in verdict


def test_a_topic_or_group_without_any_right_is_named() -> None:
    topics, groups = _everything()
    topics["territory.counts"] = None  # TOPIC_AUTHORIZATION_FAILED: no DESCRIBE, so no metadata at all
    groups["shudi"] = None  # FindCoordinator refused
    verdict = _verdict(topics, groups)
    assert verdict is not None
    assert "READ on topic 'territory.counts'" in verdict
    assert "WRITE on topic 'territory.counts'" in verdict
    assert "READ on group 'shudi'" in verdict
