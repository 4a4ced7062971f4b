"""The alert rules (deploy/helm/shudi/rules/, their one copy) with their promtool unit tests
(deploy/prometheus/tests/): promtool checks, alert conventions, runbook anchors, metric names.

Rules are read back from a real Prometheus that loaded them (``/api/v1/rules``), so what is checked is
what Prometheus parsed. promtool and prometheus are required (CI installs Debian's ``prometheus``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.runtime.metrics import Metrics
from tests.deploy.prom import PrometheusServer, find_binary, run_prometheus

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "deploy/helm/shudi/rules").glob("*.yml"))
RULE_TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.yml"))
RUNBOOK = ROOT / "RUNBOOK.md"
DASHBOARD = ROOT / "deploy/helm/shudi/dashboards/shudi.json"
RUNBOOK_PREFIX = "https://github.com/shudi-dev/shudi/blob/main/RUNBOOK.md#"
SEVERITIES = {"critical", "warning", "info"}

# Metric names in PromQL: every shudi metric starts with `shudi_`, every recording rule with `shudi:`.
_SHUDI_NAME = re.compile(r"(?<![A-Za-z0-9_:$])shudi[_:][A-Za-z0-9_:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RECORDING_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("promtool"), *args], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )


def exported_names() -> set[str]:
    """Series names a worker can export, from a fresh registry (a labelled gauge has no sample yet)."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
        names |= {s.name for s in family.samples}
    return names


def metric_names(expr: str) -> set[str]:
    """``shudi_*`` and ``shudi:*`` names used in a PromQL (or template) expression, outside strings."""
    return set(_SHUDI_NAME.findall(_STRING.sub('""', expr)))


def github_anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", ""))
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with run_prometheus(tmp_path_factory.mktemp("prometheus-rules"), rule_files=RULE_FILES) as prom:
        yield prom


@pytest.fixture(scope="module")
def rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    groups = prometheus.rule_groups()
    loaded = [rule for group in groups for rule in group["rules"]]
    assert loaded, "Prometheus loaded no rules"
    return loaded


@pytest.fixture(scope="module")
def alerts(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rules if r["type"] == "alerting"]


def test_there_are_rule_files_and_rule_tests() -> None:
    assert RULE_FILES, "no deploy/helm/shudi/rules/*.yml"
    assert RULE_TESTS, "no deploy/prometheus/tests/*.yml"


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_loads_every_group(prometheus: PrometheusServer) -> None:
    names = {g["name"] for g in prometheus.rule_groups()}
    assert {"shudi.recording", "shudi.bursts", "shudi.pipeline", "shudi.geoip", "shudi.workers"} <= names


def test_expected_alerts_exist(alerts: list[dict[str, Any]]) -> None:
    names = {a["name"] for a in alerts}
    assert {
        "ShudiTerritoryBurst",
        "ShudiGlobalSurge",
        "ShudiDeadLetterRateHigh",
        "ShudiInternalErrors",
        "ShudiUnknownTerritoryShareHigh",
        "ShudiGeoIPDatabaseStale",
        "ShudiGeoIPReloadFailing",
        "ShudiConsumerLagHigh",
        "ShudiWorkerDown",
        "ShudiWorkerNotConsuming",
    } <= names
    assert len(names) == len(alerts), "duplicate alert names"


def test_every_alert_has_severity_summary_description_and_runbook(alerts: list[dict[str, Any]]) -> None:
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    for alert in alerts:
        name = alert["name"]
        assert re.fullmatch(r"Shudi[A-Z][A-Za-z0-9]+", name), name
        assert alert["labels"].get("severity") in SEVERITIES, name
        annotations = alert["annotations"]
        assert annotations.get("summary"), name
        assert annotations.get("description"), name
        url = annotations.get("runbook_url", "")
        assert url.startswith(RUNBOOK_PREFIX), (name, url)
        anchor = url.removeprefix(RUNBOOK_PREFIX)
        assert anchor == name.lower(), (name, anchor)
        assert anchor in anchors, f"RUNBOOK.md has no section for #{anchor}"


def test_territory_burst_carries_territory_and_scope(alerts: list[dict[str, Any]]) -> None:
    burst = next(a for a in alerts if a["name"] == "ShudiTerritoryBurst")
    assert "by (territory, scope)" in burst["query"]
    assert "instance" not in burst["query"], "a burst is per territory, summed across workers"
    assert "$value" in burst["annotations"]["description"]


def test_recording_rules_follow_level_metric_operations(rules: list[dict[str, Any]]) -> None:
    recorded = [r["name"] for r in rules if r["type"] == "recording"]
    assert "shudi:events:rate1m" in recorded
    assert "shudi:territory_events:rate1m" in recorded
    for name in recorded:
        assert _RECORDING_NAME.match(name), name
        assert name.startswith("shudi:"), name


def test_every_metric_in_rules_and_dashboard_is_exported(rules: list[dict[str, Any]]) -> None:
    known = exported_names() | {r["name"] for r in rules if r["type"] == "recording"}
    used: dict[str, set[str]] = {}
    for rule in rules:
        texts = [rule["query"], *rule.get("annotations", {}).values()]
        for text in texts:
            for name in metric_names(text):
                used.setdefault(name, set()).add(rule["name"])
    for name in metric_names(DASHBOARD.read_text(encoding="utf-8")):
        used.setdefault(name, set()).add("dashboard")
    assert used, "no metric names found"
    unknown = {name: sorted(where) for name, where in used.items() if name not in known}
    assert not unknown, f"not exported by streams.runtime.metrics.Metrics: {unknown}"


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (territory) (rate(shudi_territory_events_total{scope=~"shudi_x"}[5m]))'
        " / on() shudi:events:rate1m and $shudi_var"
    )
    assert metric_names(expr) == {"shudi_territory_events_total", "shudi:events:rate1m"}


def test_runbook_anchor_slugs() -> None:
    assert github_anchors("## ShudiWorkerDown\n### What it means\n") == {"shudiworkerdown", "what-it-means"}
