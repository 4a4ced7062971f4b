"""streams.runtime.access: the least-privilege ACL list, and the README's copy of it."""

from __future__ import annotations

import re
from pathlib import Path

from streams.runtime.access import Operation, required_acls
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
