"""The dashboard and the alert rules on a real Prometheus that scrapes two real workers fed by the simulator.

One scenario per module, on the real broker: two ``shudi worker`` processes of one app (as in
tests/integration/test_bursts_e2e.py), Debian's ``prometheus`` scraping both every second with the rule
files loaded, and ``shudi simulate`` sending traffic that makes every panel have something to show: a
regional burst (CN-SX ×8), then a global surge (every territory ×3 at once), 5 % malformed events (dead
letters of every reason), and a few comments from private and loopback addresses (the unknown territory).

Then every PromQL expression of the dashboard and of the rule files goes through the HTTP API, as Grafana
would send it (its variables substituted; range queries over the scenario for the time-series targets and
annotations, instant queries for the instant targets and the variables): each must parse, and each
dashboard expression must return data. Expressions that cannot have data even so are listed in
``KNOWN_EMPTY`` with the reason.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from streams.cli.send import produce_lines
from streams.devtools.mmdbbuild import build_demo_db
from streams.devtools.simulate import TerritoryPool
from streams.pipeline.events import InvalidEvent, decode_comment, event_seconds
from streams.testing import WorkerProcess
from tests.deploy.prom import PrometheusServer, run_prometheus
from tests.deploy.test_dashboard import (
    DASHBOARD,
    RULE_FILES,
    all_panels,
    as_promql,
    dashboard_exprs,
    substitute,
)
from tests.integration.test_bursts_e2e import (
    SPEEDUP,
    TERRITORY,
    WINDOW_S,
    ActiveWatch,
    Simulator,
    burst_events,
    burst_script,
    counting_settings,
    read_all,
    running_workers,
)

pytestmark = pytest.mark.integration

REGIONAL_START, REGIONAL_DURATION = 150.0, 100.0  # simulated seconds: CN-SX ×8 at 15-25 s wall
SURGE_START, SURGE_DURATION = 300.0, 60.0  # every territory ×3 at 30-36 s wall: a global surge
SIM_DURATION = 420.0
BAD_FRACTION = 0.05
UNKNOWN_IPS = ("10.1.2.3", "192.168.7.8", "127.0.0.1", "172.16.0.9")  # private and loopback: territory ZZ
RANGE_STEP = "5s"
INTERVAL = "15s"  # Grafana's $__interval at this range, never below the datasource's 15-s minimum
ANNOTATION_INTERVAL = "1m"  # the annotations' own step

# Dashboard expressions that may have no data in this scenario, and why (each entry needs a reason).
# (Empty now: every panel and annotation has data once a regional burst and a global surge happened.)
KNOWN_EMPTY: dict[str, str] = {}


@dataclass(frozen=True)
class GrafanaQuery:
    where: str
    expr: str
    kind: str  # "range" (time series), "instant", "annotation" or "variable"


def grafana_queries(dashboard: dict[str, Any]) -> list[GrafanaQuery]:
    """Every query of the dashboard with how Grafana sends it (the same list as dashboard_exprs)."""
    found = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"panel {panel['title']!r} {target.get('refId')}"
                kind = "instant" if target.get("instant") and not target.get("range") else "range"
                found.append(GrafanaQuery(where, target["expr"], kind))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append(GrafanaQuery(f"annotation {annotation['name']!r}", annotation["expr"], "annotation"))
    found += [
        GrafanaQuery(where, expr, "variable")
        for where, expr in dashboard_exprs(dashboard)
        if "variable" in where
    ]
    assert [(q.where, q.expr) for q in found] == dashboard_exprs(dashboard)
    return found


DASHBOARD_JSON: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
QUERIES = grafana_queries(DASHBOARD_JSON)


def _param(i: int, q: GrafanaQuery) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_EMPTY[q.where])] if q.where in KNOWN_EMPTY else []
    return pytest.param(q, id=f"{i:02d}-{q.where}", marks=marks)


@dataclass
class Scenario:
    prom: PrometheusServer
    start: float  # Unix time of the first scrape
    end: float  # Unix time the queries are evaluated at
    workers: list[WorkerProcess]
    burst_kinds: list[tuple[str, str, str]]  # (kind, type, burst_id) of every burst event
    burst_delays: dict[str, float]  # burst_id -> wall seconds from its started window's close to the event
    enrich_lags: dict[str, float]  # burst_id -> of those, seconds until the workers had enriched the close

    def values(self) -> dict[str, str]:
        span = int(self.end - self.start)
        return {
            "territory": TERRITORY,
            "scope": ".*",
            "__rate_interval": "1m",
            "__interval": INTERVAL,
            "__range": f"{span}s",
            "__range_s": str(span),
            "__range_ms": str(span * 1000),
        }

    def run(self, q: GrafanaQuery) -> dict[str, Any]:
        if q.kind in ("instant", "variable"):
            return self.prom.query(substitute(q.expr, self.values()), at=self.end)
        values = self.values()
        if q.kind == "annotation":
            values["__interval"] = ANNOTATION_INTERVAL
        return self.prom.query_range(substitute(q.expr, values), self.start, self.end, step=RANGE_STEP)


def unknown_comments(n: int, created_at: datetime) -> list[bytes]:
    """Comments from private and loopback addresses, stamped with the stream's own (simulated) time: a
    comment stamped with the wall clock, months after the simulated day, would move its partition's event
    time on by months and close every window up to it."""
    now = created_at.isoformat(timespec="milliseconds")
    return [
        json.dumps(
            {
                "event_id": f"unknown-{i}",
                "user_id": f"u-unknown-{i}",
                "post_id": "p-unknown",
                "text": "从内网发的评论",
                "ip": UNKNOWN_IPS[i % len(UNKNOWN_IPS)],
                "created_at": now,
            },
            ensure_ascii=False,
        ).encode()
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("prometheus-scrape")
    uid = f"prom{int(time.time() * 1000) % 10**9}"
    db = build_demo_db(tmp / "demo.mmdb")
    settings = counting_settings(kafka_bootstrap, uid, db)
    surge = [
        {"territory": code, "start": SURGE_START, "duration": SURGE_DURATION, "multiplier": 3}
        for code in TerritoryPool.from_db(db).codes
    ]
    with running_workers(tmp, settings) as workers:
        targets = [f"127.0.0.1:{w.metrics_port}" for w in workers]
        with run_prometheus(tmp / "prometheus", scrape_targets=targets, rule_files=RULE_FILES) as prom:
            prom.wait_for_targets_up(timeout=30, job="shudi")
            start = time.time()
            sim = Simulator.start(
                tmp,
                settings,
                [*burst_script(REGIONAL_START, REGIONAL_DURATION), *surge],
                duration=SIM_DURATION,
                bad_fraction=BAD_FRACTION,
            )
            try:
                time.sleep(3)
                unknown = unknown_comments(40, sim.sim_time(time.monotonic()))
                asyncio.run(produce_lines(kafka_bootstrap, settings["SHUDI_INPUT_TOPIC"], unknown))
                watch = ActiveWatch(workers, sim.started_at)
                watch.wait_for(1.0, sim.wall_of(SIM_DURATION) + 45 - time.monotonic())
                watch.wait_for(0.0, timeout=30)
                sim.wait(timeout=60)
            finally:
                sim.kill()
            # Prometheus has scraped the end state and evaluated the rules on it.
            time.sleep(5)
            events = burst_events(kafka_bootstrap, settings["SHUDI_BURSTS_TOPIC"])
            sent = SendTimes.read(kafka_bootstrap, settings["SHUDI_INPUT_TOPIC"])
            enriched = SendTimes.read(kafka_bootstrap, settings["SHUDI_ENRICHED_TOPIC"])
            lateness = int(settings["SHUDI_ALLOWED_LATENESS_S"])
            started = [e for e in events if e["kind"] == "started"]
            scenario = Scenario(
                prom=prom,
                start=start,
                end=time.time(),
                workers=workers,
                burst_kinds=[(e["kind"], e["type"], e["burst_id"]) for e in events],
                burst_delays={e["burst_id"]: alert_delay(sent, e, lateness) for e in started},
                enrich_lags={
                    e["burst_id"]: enriched.when(close_of(e, lateness)) - sent.when(close_of(e, lateness))
                    for e in started
                },
            )
            print(
                f"burst_active timeline {watch.timeline}; SPEEDUP {SPEEDUP}; close -> started (s): "
                f"{scenario.burst_delays}, of which enrichment: {scenario.enrich_lags}"
            )
            yield scenario


@dataclass(frozen=True)
class SendTimes:
    """When (wall clock, the records' Kafka timestamps) the input first held a comment of each event time."""

    created: list[float]  # event times (created_at), ascending
    first_sent: list[float]  # the earliest Kafka timestamp of a comment at or after created[i]

    @classmethod
    def read(cls, bootstrap: str, topic: str) -> SendTimes:
        """From the input topic (comments) or the enriched topic (the time each was enriched)."""
        pairs = []
        for record in read_all(bootstrap, topic):
            try:
                # Only what the worker counts: a malformed event may carry any created_at at all.
                created = event_seconds(json.loads(record.value or b"")["created_at"])
                if "territory" not in json.loads(record.value or b""):
                    decode_comment(record.value)
            except (InvalidEvent, ValueError, KeyError, TypeError):
                continue
            pairs.append((created, record.timestamp / 1000))
        pairs.sort()
        first_sent, low = [], float("inf")
        for _, sent in reversed(pairs):
            low = min(low, sent)
            first_sent.append(low)
        return cls([c for c, _ in pairs], first_sent[::-1])

    def when(self, event_time: float) -> float:
        i = bisect.bisect_left(self.created, event_time)
        assert i < len(self.created), f"no comment at or after {event_time} was sent"
        return self.first_sent[i]


def alert_delay(sent: SendTimes, event: dict[str, Any], lateness_s: int) -> float:
    """Wall seconds from the close of the window that started a burst (the first comment sent past its end
    plus the allowed lateness: from then on the window is final) to the burst event's ``emitted_at``."""
    return datetime.fromisoformat(event["emitted_at"]).timestamp() - sent.when(close_of(event, lateness_s))


def close_of(event: dict[str, Any], lateness_s: int) -> float:
    return datetime.fromisoformat(event["window_end"]).timestamp() + lateness_s


def test_burst_alerts_come_within_a_window_and_two_seconds_of_the_close(scenario: Scenario) -> None:
    """The counting path keeps up: with a regional burst and then a surge of every territory, each
    ``started`` event is out within one window (1 s of wall time here) plus 2 s of its window's close."""
    assert scenario.burst_delays, scenario.burst_kinds
    late = {bid: round(d, 2) for bid, d in scenario.burst_delays.items() if d > WINDOW_S / SPEEDUP + 2}
    assert not late, (
        f"later than a window + 2 s after the close: {late}; all: {scenario.burst_delays}; of which the "
        f"enrichment took: {scenario.enrich_lags}"
    )


def test_the_scenario_has_a_regional_burst(scenario: Scenario) -> None:
    started = [
        bid for kind, kind_type, bid in scenario.burst_kinds if (kind, kind_type) == ("started", "regional")
    ]
    assert [bid.split("@")[0] for bid in started] == [TERRITORY], scenario.burst_kinds


def test_the_scenario_has_a_global_surge(scenario: Scenario) -> None:
    assert ("started", "global") in {(kind, kind_type) for kind, kind_type, _ in scenario.burst_kinds}


def test_both_workers_are_scraped(scenario: Scenario) -> None:
    targets = scenario.prom.wait_for_targets_up(timeout=10, job="shudi")
    assert len(targets) == 2


def test_every_rule_expression_runs_on_the_scraped_data(scenario: Scenario) -> None:
    rules = [rule for group in scenario.prom.rule_groups() for rule in group["rules"]]
    assert len(rules) >= 10
    failures = []
    for rule in rules:
        body = scenario.prom.query(rule["query"], at=scenario.end)
        if body.get("status") != "success":
            failures.append(f"{rule['name']}: {body.get('errorType')}: {body.get('error')}")
        elif rule.get("health") not in ("ok", "unknown") or rule.get("lastError"):
            failures.append(f"{rule['name']}: evaluation: {rule.get('health')} {rule.get('lastError')}")
    assert not failures, "\n".join(failures)
    # The recording rules produce series from the workers' metrics.
    for record in ("shudi:events:rate1m", "shudi:territory_events:rate1m", "shudi:consumer_lag_messages:sum"):
        assert scenario.prom.query(record, at=scenario.end)["data"]["result"], record


@pytest.mark.parametrize("query", [_param(i, q) for i, q in enumerate(QUERIES)])
def test_every_dashboard_query_returns_data(scenario: Scenario, query: GrafanaQuery) -> None:
    body = scenario.run(query)
    assert body.get("status") == "success", (query.where, query.expr, body.get("error"))
    result = body["data"]["result"]
    assert result, (
        f"{query.where} ({query.kind}) returned no data: {substitute(query.expr, scenario.values())}"
    )


def test_known_empty_entries_are_dashboard_queries() -> None:
    assert set(KNOWN_EMPTY) <= {q.where for q in QUERIES}
    assert len(QUERIES) >= 20
    assert as_promql("label_values(m, scope)") == "count by (scope) (m)"
