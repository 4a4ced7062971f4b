"""What ``shudi demo`` shows: the workers' metrics and the bursts topic folded into a view, drawn as a live
screen or as summary lines. No processes here: :mod:`streams.devtools.demo` starts and watches them.

The per-territory gauges are exported by the worker that owns the territory's counting partition, so
summing over both workers gives each territory once.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click
from prometheus_client.parser import text_string_to_metric_families

from streams.devtools.simulate import TZ_CN
from streams.pipeline.countries import COUNTRIES
from streams.pipeline.territory import CHINA, DIVISIONS, UNKNOWN
from streams.runtime.kafka import KafkaConnection

_NAMES_ZH: dict[str, str] = (
    {code: zh for code, (zh, _) in COUNTRIES.items()}
    | {d.territory.code: d.territory.name_zh for d in DIVISIONS}
    | {CHINA.code: CHINA.name_zh, UNKNOWN.code: UNKNOWN.name_zh}
)


def name_zh(code: str) -> str:
    return _NAMES_ZH.get(code, code)


# --- metrics ------------------------------------------------------------------------------------------------

Sample = tuple[str, dict[str, str], float]


def scrape(url: str, timeout: float = 2.0) -> list[Sample] | None:
    """Every sample of one /metrics page; None if the worker does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http://127.0.0.1 only
            text = resp.read().decode()
    except OSError:
        return None
    return [
        (s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples
    ]


@dataclass
class Row:
    code: str
    count: float = 0.0
    baseline: float = 0.0
    score: float = 0.0
    active: bool = False


@dataclass
class Snapshot:
    """The sum over the workers' scrapes of what the view shows."""

    rows: dict[str, Row] = field(default_factory=dict)
    enriched: float = 0.0
    dead: float = 0.0
    answered: int = 0

    @classmethod
    def of(cls, scrapes: Sequence[list[Sample] | None]) -> Snapshot:
        snap = cls(answered=sum(s is not None for s in scrapes))
        for samples in scrapes:
            for name, labels, value in samples or ():
                if name == "shudi_events_total":
                    if labels.get("outcome") == "enriched":
                        snap.enriched += value
                    elif labels.get("outcome") == "dead_lettered":
                        snap.dead += value
                    continue
                code = labels.get("territory")
                if code is None:
                    continue
                if name == "shudi_window_events":
                    snap.row(code).count += value
                elif name == "shudi_window_baseline_events":
                    snap.row(code).baseline += value
                elif name == "shudi_burst_score":
                    snap.row(code).score += value
                elif name == "shudi_burst_active":
                    snap.row(code).active |= value > 0
        return snap

    def row(self, code: str) -> Row:
        return self.rows.setdefault(code, Row(code))

    def top(self, n: int = 10) -> list[Row]:
        return sorted(self.rows.values(), key=lambda r: (-r.count, r.code))[:n]


# --- bursts -------------------------------------------------------------------------------------------------


@dataclass
class BurstState:
    burst_id: str
    type: str
    code: str
    name: str
    since: str  # burst_start (event time), HH:MM:SS
    count: int = 0
    baseline: float = 0.0
    top_posts: list[tuple[str, int]] = field(default_factory=list)
    ended: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {self.code}" if self.type == "regional" else "全部 (global surge)"


class Bursts:
    """Started/updated/ended events of the bursts topic, folded into the state of each burst."""

    def __init__(self) -> None:
        self.by_id: dict[str, BurstState] = {}
        self.news: list[str] = []  # one line per started/ended event, for --no-live

    def add(self, raw: bytes | None) -> None:
        try:
            ev = json.loads(raw or b"")
            kind, btype, burst_id = ev["kind"], ev["type"], ev["burst_id"]
        except (ValueError, KeyError, TypeError):
            return
        territory = ev.get("territory") or {}
        code = territory.get("code", "*")
        start = ev.get("burst_start") or ev.get("window_start") or ""
        state = self.by_id.get(burst_id)
        if state is None:
            state = BurstState(
                burst_id, btype, code, territory.get("name_zh", code), _clock(start) if start else "?"
            )
            self.by_id[burst_id] = state
        state.count = int(ev.get("count") or 0)
        state.baseline = float(ev.get("baseline") or 0.0)
        posts = ev.get("top_posts") or []
        if posts:
            state.top_posts = [(p["post_id"], int(p["count"])) for p in posts if isinstance(p, dict)]
        if kind == "ended":
            state.ended = _clock(ev.get("window_end") or "") or "?"
            self.news.append(f"burst ended:   {state.label} (since {state.since}, ended {state.ended})")
        elif kind == "started":
            self.news.append(
                f"burst started: {state.label} at {state.since}: {state.count} comments in a window, "
                f"baseline {state.baseline:.1f}, top posts {_posts(state.top_posts)}"
            )

    def active(self) -> list[BurstState]:
        return [b for b in self.by_id.values() if b.ended is None]

    def seen(self) -> set[str]:
        return {b.code for b in self.by_id.values() if b.type == "regional"}


def _clock(when: str) -> str:
    try:
        return datetime.fromisoformat(when).astimezone(TZ_CN).strftime("%H:%M:%S")
    except ValueError:
        return ""


def _posts(posts: Sequence[tuple[str, int]], n: int = 3) -> str:
    return ", ".join(f"{p} ({c})" for p, c in posts[:n]) or "-"


async def follow_bursts(
    kafka: KafkaConnection | str, topic: str, bursts: Bursts, stop: asyncio.Event
) -> None:
    """Read the bursts topic from its start (it is this run's own topic) until ``stop``."""
    consumer = KafkaConnection.of(kafka).consumer(
        topic,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=5000,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    bursts.add(record.value)
    finally:
        await consumer.stop()


# --- the view -----------------------------------------------------------------------------------------------


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def render(
    snap: Snapshot, bursts: Bursts, sim_time: str, elapsed: float, duration: float, window_s: int
) -> list[str]:
    lines = [
        f"shudi demo — simulated {sim_time} +08:00 — {elapsed:4.0f}/{duration:.0f} s — "
        f"{snap.enriched:,.0f} enriched, {snap.dead:,.0f} dead-lettered — workers up {snap.answered}/2",
        "",
        f"top territories, last closed {window_s}-s window (event time)",
        f"  {_pad('territory', 12)}{'code':<7}{'count':>7}{'baseline':>10}{'score':>8}",
    ]
    top = snap.top()
    for r in top:
        flag = "  BURST" if r.active else ""
        lines.append(
            f"  {_pad(name_zh(r.code), 12)}{r.code:<7}{r.count:>7.0f}{r.baseline:>10.1f}{r.score:>8.1f}{flag}"
        )
    if not top:
        lines.append("  (no window closed yet: the workers are warming up)")
    lines += ["", "active bursts"]
    active = bursts.active()
    for b in active:
        lines.append(
            f"  {_pad(b.label, 20)} since {b.since}  {b.count} vs {b.baseline:.1f}  {_posts(b.top_posts)}"
        )
    if not active:
        lines.append("  (none)")
    ended = [b for b in bursts.by_id.values() if b.ended is not None]
    if ended:
        lines.append("ended: " + ", ".join(f"{b.label} {b.since}–{b.ended}" for b in ended))
    return lines


def summary_line(snap: Snapshot, bursts: Bursts, sim_time: str, elapsed: float) -> str:
    top = ", ".join(f"{name_zh(r.code)} {r.code} {r.count:.0f}" for r in snap.top(5)) or "-"
    active = ", ".join(b.label for b in bursts.active()) or "-"
    return (
        f"[{elapsed:3.0f}s sim {sim_time}] enriched {snap.enriched:,.0f} dead-lettered {snap.dead:,.0f} | "
        f"top: {top} | bursts: {active}"
    )


def print_summary(snap: Snapshot, bursts: Bursts, script: Sequence[Mapping[str, Any]]) -> None:
    seen = bursts.seen()
    click.echo("")
    click.echo(f"{snap.enriched:,.0f} comments labelled, {snap.dead:,.0f} dead-lettered")
    marks = [
        f"{name_zh(b['territory'])} {b['territory']} {'seen' if b['territory'] in seen else 'missed'}"
        for b in script
    ]
    hits = sum(b["territory"] in seen for b in script)
    click.echo(f"bursts: {hits} of {len(script)} scripted seen ({', '.join(marks) or '-'})")
    extra = sorted(seen - {b["territory"] for b in script})
    if extra:
        click.echo("other regional bursts: " + ", ".join(f"{name_zh(c)} {c}" for c in extra))
    surges = sum(b.type == "global" for b in bursts.by_id.values())
    if surges:
        click.echo(f"global surges: {surges} (most of the traffic's territories rose together)")
