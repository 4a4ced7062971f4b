"""``shudi demo``: a local broker, two workers and the simulator with scripted bursts, watched live.

Everything runs on 127.0.0.1. The GeoIP database is the synthetic DEMO database from
``mmdbbuild.build_demo_db``: real-looking labels for made-up networks, not real geography.

Time is shrunk so that something happens within a minute: 10-second event-time windows and a simulator
running 10 times faster than the wall clock, so one window closes per wall second and the detector's
12-window warm-up is over after about 12 seconds of traffic. The scripted bursts (CN-GD ×8, HK ×10, US ×6,
one after the other) start after the warm-up; at the default rate (1,500 events per wall second, ≈ 2,500 per
window at the simulated 20:00 peak) each bursting territory has ≈ 100 or more comments per window, well
above the detector's minimum of 20.

Each run uses a fresh app id and topic names (``shudi-demo-<unix time>``), so state or records of an earlier
run on a reused broker never show up in the view; a broker the demo started itself is thrown away at the end.

The live view reads the two workers' ``/metrics`` (the per-territory gauges are exported by the worker that
owns the territory's counting partition, so summing over both workers gives each territory once) and the
bursts topic (``started``/``updated``/``ended`` events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from streams.cli.errors import EXIT_FAILED, CommandError
from streams.devtools import localkafka
from streams.devtools.simulate import TZ_CN, rfc3339
from streams.pipeline.countries import COUNTRIES
from streams.pipeline.territory import CHINA, DIVISIONS, UNKNOWN
from streams.testing import free_port

WINDOW_S = 10  # simulated seconds per event-time window
SPEEDUP = 10  # simulated seconds per wall second: a window closes about once a wall second
WARMUP_WINDOWS = 12
PARTITIONS = 4
STARTUP_TIMEOUT_S = 120.0
# The scripted bursts: simulated seconds after the start, one after the other so that each is alone in its
# windows (a burst's territory also needs a high share of all comments). A burst is scripted only when the
# run is long enough for it to be detected (two hot windows after its start, plus closing time).
BURSTS: tuple[dict[str, Any], ...] = (
    {"territory": "CN-GD", "start": 200, "duration": 120, "multiplier": 8, "post_ids": ["demo-hot-gd"]},
    {"territory": "HK", "start": 330, "duration": 120, "multiplier": 10, "post_ids": ["demo-hot-hk"]},
    {"territory": "US", "start": 460, "duration": 120, "multiplier": 6, "post_ids": ["demo-hot-us"]},
)
_DETECT_MARGIN_S = 5 * WINDOW_S  # simulated time a burst needs before the end to be seen
_SIM_TIME = re.compile(r"sim (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
_NAMES_ZH: dict[str, str] = (
    {code: zh for code, (zh, _) in COUNTRIES.items()}
    | {d.territory.code: d.territory.name_zh for d in DIVISIONS}
    | {CHINA.code: CHINA.name_zh, UNKNOWN.code: UNKNOWN.name_zh}
)


def name_zh(code: str) -> str:
    return _NAMES_ZH.get(code, code)


def scripted_bursts(sim_duration: float) -> list[dict[str, Any]]:
    """The bursts of :data:`BURSTS` that fit in ``sim_duration`` simulated seconds."""
    return [b for b in BURSTS if b["start"] + _DETECT_MARGIN_S <= sim_duration]


def last_evening() -> datetime:
    """The latest 20:00 in Shanghai not after now: the simulation starts near the daily peak."""
    now = datetime.now(TZ_CN)
    start = now.replace(hour=20, minute=0, second=0, microsecond=0)
    return start if start <= now else start - timedelta(days=1)


# --- processes ----------------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process (own session, so Ctrl-C reaches only the demo, which then stops it) with a log."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().replace("\r", "\n").splitlines()[-lines:])

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Worker(Proc):
    metrics_port: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def healthz_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/healthz"


class DemoError(CommandError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILED)


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHUDI_")}
    env.update(extra)
    return env


def _fail(proc: Proc, what: str) -> DemoError:
    return DemoError(f"{proc.name} {what}; last lines of {proc.log_path}:\n{proc.tail()}")


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


async def follow_bursts(bootstrap: str, topic: str, bursts: Bursts, stop: asyncio.Event) -> None:
    """Read the bursts topic from its start (it is this run's own topic) until ``stop``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
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


def render(snap: Snapshot, bursts: Bursts, sim_time: str, elapsed: float, duration: float) -> list[str]:
    lines = [
        f"shudi demo — simulated {sim_time} +08:00 — {elapsed:4.0f}/{duration:.0f} s — "
        f"{snap.enriched:,.0f} enriched, {snap.dead:,.0f} dead-lettered — workers up {snap.answered}/2",
        "",
        f"top territories, last closed {WINDOW_S}-s window (event time)",
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


# --- the command --------------------------------------------------------------------------------------------


@click.command()
@click.option(
    "--port", default=9092, show_default=True, help="Port of the local Kafka broker (reused if up)."
)
@click.option("--workdir", default=Path("var/demo"), type=click.Path(path_type=Path), show_default=True)
@click.option(
    "--duration",
    type=click.FloatRange(min=10),
    default=90.0,
    show_default=True,
    help="Wall seconds of simulated traffic (the view runs as long).",
)
@click.option(
    "--metrics-port", default=9464, show_default=True, help="Workers' /metrics: this port and the next."
)
@click.option(
    "--rate", type=click.FloatRange(min=1), default=1500.0, show_default=True, help="Simulator base events/s."
)
@click.option("--seed", default=2026, show_default=True, help="Simulator seed (same seed, same traffic).")
@click.option("--no-live", is_flag=True, help="One summary line per refresh instead of the live screen.")
@click.option("--keep", is_flag=True, help="Leave the broker and the workers running afterwards.")
def demo(
    port: int,
    workdir: Path,
    duration: float,
    metrics_port: int,
    rate: float,
    seed: int,
    no_live: bool,
    keep: bool,
) -> None:
    """Local Kafka, two workers and simulated comments with scripted regional bursts, watched live.

    Ends after --duration or on Ctrl-C (both exit 0), stopping what it started unless --keep.
    """
    from streams.devtools.mmdbbuild import build_demo_db

    live = not no_live and sys.stdout.isatty()
    signal.signal(signal.SIGTERM, _sigterm)  # `kill <demo>` cleans up like Ctrl-C
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for p in (metrics_port, metrics_port + 1):
        if _port_taken(p):
            raise DemoError(f"127.0.0.1:{p} is in use: choose other worker metrics ports with --metrics-port")
    bootstrap = f"127.0.0.1:{port}"
    started_broker = None
    if localkafka.status(port):
        click.echo(f"using the Kafka broker already on {bootstrap}")
    else:
        click.echo(f"starting Kafka on {bootstrap} (the first run downloads the jars with mvn) ...")
        try:
            started_broker = localkafka.start(port)
        except localkafka.BrokerError as exc:
            raise DemoError(str(exc)) from None

    run = f"shudi-demo-{int(time.time())}"
    settings = {
        "SHUDI_BROKER": bootstrap,
        "SHUDI_APP_ID": run,
        "SHUDI_INPUT_TOPIC": f"comments-{run}",
        "SHUDI_ENRICHED_TOPIC": f"comments.enriched-{run}",
        "SHUDI_DLQ_TOPIC": f"comments.dlq-{run}",
        "SHUDI_COUNTS_TOPIC": f"territory.counts-{run}",
        "SHUDI_BURSTS_TOPIC": f"territory.bursts-{run}",
        "SHUDI_PARTITIONS": str(PARTITIONS),
        "SHUDI_WINDOW_S": str(WINDOW_S),
        "SHUDI_ALLOWED_LATENESS_S": "5",
        "SHUDI_TICK_INTERVAL_S": "0.5",
        "SHUDI_DETECTOR_WARMUP_WINDOWS": str(WARMUP_WINDOWS),
        "SHUDI_METRICS_HOST": "127.0.0.1",
    }
    workers: list[Worker] = []
    sim: Proc | None = None
    interrupted = False
    ok = False
    try:
        db = build_demo_db(workdir / "demo-city.mmdb")
        settings["SHUDI_GEOIP_DB"] = str(db)
        click.echo(f"GeoIP: {db} (synthetic DEMO data: made-up networks, real-looking labels)")
        click.echo(f"app id and topic suffix: {run}")
        for i, name in enumerate(("worker-a", "worker-b")):
            env = _child_env(
                settings
                | {
                    "SHUDI_METRICS_PORT": str(metrics_port + i),
                    "SHUDI_WEB_PORT": str(free_port()),
                    "SHUDI_DATA_DIR": str(workdir / f"{name}-data"),
                }
            )
            w = Worker(
                name,
                [sys.executable, "-m", "streams.cli", "worker"],
                env,
                workdir / f"{name}.log",
                None,
                metrics_port + i,
            )
            w.start()
            workers.append(w)
            click.echo(
                f"{name}: pid {w.pid}, metrics {w.metrics_url} (health {w.healthz_url}), log {w.log_path}"
            )
        _wait_for_workers(workers, settings["SHUDI_INPUT_TOPIC"])

        start = last_evening()
        sim_duration = duration * SPEEDUP
        bursts_script = scripted_bursts(sim_duration)
        bursts_path = workdir / "bursts.jsonl"
        bursts_path.write_text("".join(json.dumps(b) + "\n" for b in bursts_script), encoding="utf-8")
        sim_args = [
            sys.executable, "-m", "streams.cli", "simulate",
            "--db", str(db), "--broker", bootstrap, "--topic", settings["SHUDI_INPUT_TOPIC"],
            "--rate", f"{rate:g}", "--speedup", str(SPEEDUP), "--window", str(WINDOW_S),
            "--duration", f"{sim_duration:g}", "--start", rfc3339(start), "--seed", str(seed),
            "--bursts", str(bursts_path), "--truth", str(workdir / "truth.jsonl"), "--progress",
        ]  # fmt: skip
        sim = Proc(
            "simulator",
            sim_args,
            _child_env({}),
            workdir / "simulate.log",
        )
        sim.start()
        click.echo(
            f"simulator: pid {sim.pid}, log {sim.log_path}; {rate:g} comments/s (before the daily cycle), "
            f"{SPEEDUP}× time from {rfc3339(start)}, {WINDOW_S}-s windows, warm-up {WARMUP_WINDOWS} windows"
        )
        for b in bursts_script:
            at = start + timedelta(seconds=b["start"])
            click.echo(
                f"scripted burst: {name_zh(b['territory'])} {b['territory']} ×{b['multiplier']} from "
                f"{at:%H:%M:%S} for {b['duration']} s simulated (≈ {b['start'] / SPEEDUP:.0f} s from now)"
            )
        if not live:
            click.echo("")
        interrupted = asyncio.run(
            _watch(workers, sim, bootstrap, settings["SHUDI_BURSTS_TOPIC"], start, duration, live)
        )
        ok = True
    except KeyboardInterrupt:
        interrupted = True
        ok = True
    finally:
        if sim is not None:
            sim.stop(signal.SIGINT, timeout=15)
        if keep and ok:
            pids = ", ".join(f"{w.name} {w.pid}" for w in workers if w.running())
            click.echo(f"\nleft running: {pids or 'no workers'}; stop them with kill <pid>")
            if started_broker is not None or localkafka.status(port):
                click.echo(f"stop the broker: shudi kafka stop --port {port}")
        else:
            for w in workers:
                if w.running():
                    assert w.proc is not None
                    w.proc.send_signal(signal.SIGTERM)
            for w in workers:
                w.stop(timeout=30)
            if started_broker is not None:
                click.echo(f"stopping Kafka on {bootstrap}")
                localkafka.stop(started_broker)
    if interrupted:
        click.echo("interrupted: stopped")


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_workers(workers: Sequence[Worker], input_topic: str) -> None:
    """Until both workers are ready and have split the input partitions (else the first minutes of the
    demo would be rebalances); a worker that exits is an error."""
    click.echo("waiting for the workers to be ready ...")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not all("[^Worker]: Ready" in w.log() for w in workers):
        for w in workers:
            if not w.running():
                raise _fail(w, f"exited with code {w.returncode()} while starting")
        if time.monotonic() > deadline:
            slow = next(w for w in workers if "[^Worker]: Ready" not in w.log())
            raise _fail(slow, f"not ready after {STARTUP_TIMEOUT_S:.0f}s")
        time.sleep(0.25)
    split_deadline = time.monotonic() + 60
    while time.monotonic() < split_deadline:
        owned = []
        for w in workers:
            if not w.running():
                raise _fail(w, f"exited with code {w.returncode()} while starting")
            owned.append(
                {
                    labels.get("partition")
                    for name, labels, _ in scrape(w.metrics_url) or ()
                    if name == "shudi_consumer_lag_messages" and labels.get("topic") == input_topic
                }
            )
        every = [p for parts in owned for p in parts]
        if all(owned) and len(every) == len(set(every)) == PARTITIONS:
            time.sleep(2.0)  # the Faust group (counts topic, tables) rebalances alongside
            return
        time.sleep(0.25)
    click.echo("the workers have not split the partitions yet; starting the traffic anyway")


async def _watch(
    workers: Sequence[Worker],
    sim: Proc,
    bootstrap: str,
    bursts_topic: str,
    start: datetime,
    duration: float,
    live: bool,
) -> bool:
    """The view, until ``duration`` wall seconds after the simulator started or SIGINT/SIGTERM; returns
    whether it was interrupted. Raises DemoError when a worker or the simulator fails."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    bursts = Bursts()
    reader = asyncio.create_task(follow_bursts(bootstrap, bursts_topic, bursts, stop))
    began = time.monotonic()
    refresh = 1.0 if live else 5.0
    snap = Snapshot()
    lines: list[str] = []
    last_line = 0.0
    sim_time = start.strftime("%Y-%m-%d %H:%M:%S")
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - began
            for w in workers:
                if not w.running():
                    raise _fail(w, f"exited with code {w.returncode()}")
            if not sim.running() and sim.returncode() != 0:
                raise _fail(sim, f"exited with code {sim.returncode()}")
            if reader.done():
                reader.result()  # raises the reader's error
                raise DemoError(f"reading {bursts_topic} stopped")
            scrapes = await asyncio.gather(*(asyncio.to_thread(scrape, w.metrics_url) for w in workers))
            snap = Snapshot.of(scrapes)
            found = _SIM_TIME.findall(sim.log()[-4000:])
            if found:
                sim_time = found[-1]
            if live:
                lines = render(snap, bursts, sim_time, elapsed, duration)
                sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n\n(Ctrl-C to stop)\n")
                sys.stdout.flush()
            else:
                for news in bursts.news:
                    click.echo(news)
                if elapsed - last_line >= refresh - 0.1 or bursts.news:
                    click.echo(summary_line(snap, bursts, sim_time, elapsed))
                    last_line = elapsed
                bursts.news.clear()
            if elapsed >= duration:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(1.0, max(0.05, duration - elapsed)))
    finally:
        interrupted = stop.is_set()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, 5)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    if live:
        # Leave the last screen as it was, without the Ctrl-C hint.
        sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    else:
        for news in bursts.news:
            click.echo(news)
    _print_summary(snap, bursts, scripted_bursts(duration * SPEEDUP))
    return interrupted


def _print_summary(snap: Snapshot, bursts: Bursts, script: Sequence[Mapping[str, Any]]) -> None:
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
