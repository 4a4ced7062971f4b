"""deploy/helm/shudi/dashboards/shudi.json (the one copy, compose's too): structure, datasource, variables,
every query on a real Prometheus.

Every PromQL expression of the dashboard (panel targets, annotations, variable queries) and of the rule
files is sent to a real Prometheus (Debian's binary, see prom.py) after substituting Grafana's variables;
a parse error is an HTTP 400 with ``status: error``. The server scrapes nothing here, so results are empty;
the same helpers take scrape targets for a test where real workers feed it and every query must return data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.prom import PrometheusServer, run_prometheus

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/helm/shudi/dashboards/shudi.json"
RULE_FILES = sorted((ROOT / "deploy/helm/shudi/rules").glob("*.yml"))
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# What Grafana would put in place of its variables; values that select data once workers are scraped.
SUBSTITUTIONS = {
    "territory": "CN-GD",
    "scope": ".*",  # the `All` value (allValue) of the multi-value scope variable
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<metric>.+),\s*)?(?P<label>\w+)\)\s*$", re.S)


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Grafana's variable forms ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]`` replaced by values."""
    values = SUBSTITUTIONS if values is None else values

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"no substitution for ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(repl, expr)


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query", "")
    assert isinstance(query, str), variable
    return query


def as_promql(variable_expr: str) -> str:
    """A variable's ``label_values(metric, label)`` as the PromQL query whose labels Grafana lists."""
    m = _LABEL_VALUES.match(variable_expr)
    if not m:  # query_result(...) or plain PromQL
        inner = re.fullmatch(r"\s*query_result\((.*)\)\s*", variable_expr, re.S)
        return inner.group(1) if inner else variable_expr
    metric, label = m.group("metric"), m.group("label")
    return f"count by ({label}) ({metric})" if metric else f"count by ({label}) ({{{label}!=''}})"


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, annotation and variable query, before substitution."""
    found = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel['title']!r} {target.get('refId')}", target["expr"]))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            found.append((f"variable {variable['name']!r}", as_promql(variable_query(variable))))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with run_prometheus(tmp_path_factory.mktemp("prometheus-dashboard"), rule_files=RULE_FILES) as prom:
        yield prom


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "shudi"
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    assert "__inputs" not in dashboard, "import-time ${DS_...} inputs: reference the datasource by uid"
    assert "${DS_" not in DASHBOARD.read_text(encoding="utf-8")


def test_every_panel_uses_the_prometheus_datasource_by_uid(dashboard: dict[str, Any]) -> None:
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, (panel["title"], target)
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] == DATASOURCE, annotation["name"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_panels_have_unique_ids_and_fit_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def test_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"territory", "scope"} <= set(variables)
    for name in ("territory", "scope"):
        query = variable_query(variables[name])
        assert query.startswith("label_values("), query
        assert re.search(rf",\s*{name}\)$", query), query
    # Every variable a query refers to is defined (or one of Grafana's own).
    builtin = {"__rate_interval", "__interval", "__range", "__range_s", "__range_ms"}
    for where, expr in dashboard_exprs(dashboard):
        for m in _VARIABLE.finditer(expr):
            name = m.group(1) or m.group(2) or m.group(3)
            assert name in variables or name in builtin, (where, name)


def test_no_hard_coded_instances(dashboard: dict[str, Any]) -> None:
    for where, expr in dashboard_exprs(dashboard):
        assert not re.search(r'instance\s*=~?\s*"[^"$]', expr), (where, expr)


def test_dashboard_shows_what_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(expr for _, expr in dashboard_exprs(dashboard))
    types = {p["type"] for p in all_panels(dashboard)}
    assert {"timeseries", "bargauge", "state-timeline"} <= types
    for needle in (
        "sum by (scope)",
        "topk(",
        "shudi_window_events",
        "shudi_window_baseline_events",
        "shudi_burst_active",
        "shudi_dead_letters_total",
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
        "shudi_geoip_unknown_lookups_total",
        "shudi_consumer_lag_messages",
        'up{job="shudi"}',
    ):
        assert needle in exprs, needle
    assert any("shudi_bursts_started_total" in a["expr"] for a in dashboard["annotations"]["list"])


def test_substitute() -> None:
    assert substitute('x{t=~"$territory"}[$__rate_interval]') == 'x{t=~"CN-GD"}[1m]'
    assert substitute("${scope:regex} [[territory]] $__range_s") == ".* CN-GD 3600"
    assert as_promql('label_values(m{a=~"$scope"}, territory)') == 'count by (territory) (m{a=~"$scope"})'


def test_the_real_prometheus_rejects_a_bad_query(prometheus: PrometheusServer) -> None:
    body = prometheus.query("sum by (territory (shudi_events_total")
    assert body["status"] == "error"
    assert body.get("errorType") == "bad_data", body


def test_every_dashboard_query_parses_on_a_real_prometheus(
    prometheus: PrometheusServer, dashboard: dict[str, Any]
) -> None:
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 20
    failures = []
    for where, expr in exprs:
        body = prometheus.query(substitute(expr))
        if body.get("status") != "success":
            failures.append(f"{where}: {expr}\n  -> {body.get('errorType')}: {body.get('error')}")
    assert not failures, "\n".join(failures)


def test_every_rule_expression_runs_on_a_real_prometheus(prometheus: PrometheusServer) -> None:
    rules = [rule for group in prometheus.rule_groups() for rule in group["rules"]]
    assert rules
    failures = []
    for rule in rules:
        body = prometheus.query(rule["query"])
        if body.get("status") != "success":
            failures.append(f"{rule['name']}: {body.get('error')}")
        # Prometheus evaluates each rule itself too; a rule that errors at evaluation shows it here.
        assert rule.get("health") in ("ok", "unknown"), (rule["name"], rule.get("lastError"))
    assert not failures, "\n".join(failures)
