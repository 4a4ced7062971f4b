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

This module starts, watches and stops the processes; what the live view shows (the two workers' ``/metrics``
and the bursts topic's ``started``/``updated``/``ended`` events) is :mod:`streams.devtools.demo_view`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from streams.cli.errors import EXIT_FAILED, CommandError
from streams.devtools import localkafka
from streams.devtools.demo_view import (
    Bursts,
    Snapshot,
    follow_bursts,
    name_zh,
    print_summary,
    render,
    scrape,
    summary_line,
)
from streams.devtools.simulate import TZ_CN, rfc3339
from streams.testing import (
    ChildProcess,
    WorkerProcess,
    child_env,
    port_in_use,
    run_settings,
    shudi_command,
    stop_all,
)

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


def scripted_bursts(sim_duration: float) -> list[dict[str, Any]]:
    """The bursts of :data:`BURSTS` that fit in ``sim_duration`` simulated seconds."""
    return [b for b in BURSTS if b["start"] + _DETECT_MARGIN_S <= sim_duration]


def last_evening() -> datetime:
    """The latest 20:00 in Shanghai not after now: the simulation starts near the daily peak."""
    now = datetime.now(TZ_CN)
    start = now.replace(hour=20, minute=0, second=0, microsecond=0)
    return start if start <= now else start - timedelta(days=1)


# --- processes ----------------------------------------------------------------------------------------------


class DemoError(CommandError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILED)


def _fail(proc: ChildProcess, what: str) -> DemoError:
    return DemoError(f"{proc.name} {what}; last lines of {proc.log_path}:\n{proc.tail()}")


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
@click.option(
    "--db",
    "db_paths",
    default=None,
    help="Database file(s) to label with, comma separated, any format shudi reads (.mmdb, ip2region .xdb, "
    "IPIP.net .ipdb), first answers first (default: the synthetic demo database, built).",
)
def demo(
    port: int,
    workdir: Path,
    duration: float,
    metrics_port: int,
    rate: float,
    seed: int,
    no_live: bool,
    keep: bool,
    db_paths: str | None,
) -> None:
    """Local Kafka, two workers and simulated comments with scripted regional bursts, watched live.

    Ends after --duration or on Ctrl-C (both exit 0), stopping what it started unless --keep.
    """
    live = not no_live and sys.stdout.isatty()
    signal.signal(signal.SIGTERM, _sigterm)  # `kill <demo>` cleans up like Ctrl-C
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for p in (metrics_port, metrics_port + 1):
        if port_in_use(p):
            raise DemoError(f"127.0.0.1:{p} is in use: choose other worker metrics ports with --metrics-port")
    bootstrap = f"127.0.0.1:{port}"
    procs = DemoProcesses(port, _ensure_broker(port))
    run = f"shudi-demo-{int(time.time())}"
    settings = run_settings(bootstrap, run, partitions=PARTITIONS) | {
        "SHUDI_WINDOW_S": str(WINDOW_S),
        "SHUDI_ALLOWED_LATENESS_S": "5",
        "SHUDI_TICK_INTERVAL_S": "0.5",
        "SHUDI_DETECTOR_WARMUP_WINDOWS": str(WARMUP_WINDOWS),
    }
    interrupted = False
    ok = False
    try:
        if db_paths:
            click.echo(f"GeoIP: {db_paths}")
        settings["SHUDI_GEOIP_DB"] = db_paths or str(_demo_db(workdir))
        click.echo(f"app id and topic suffix: {run}")
        _start_workers(procs.workers, workdir, settings, metrics_port)
        _wait_for_workers(procs.workers, settings["SHUDI_INPUT_TOPIC"])
        start = last_evening()
        procs.simulator = _start_simulator(workdir, settings, start, duration, rate, seed)
        if not live:
            click.echo("")
        interrupted = asyncio.run(
            _watch(
                procs.workers,
                procs.simulator,
                bootstrap,
                settings["SHUDI_BURSTS_TOPIC"],
                start,
                duration,
                live,
            )
        )
        ok = True
    except KeyboardInterrupt:
        interrupted = True
        ok = True
    finally:
        procs.end(keep=keep and ok)
    if interrupted:
        click.echo("interrupted: stopped")


# --- process supervision ------------------------------------------------------------------------------------


@dataclass
class DemoProcesses:
    """What the demo runs: the broker on ``port`` (``broker`` if the demo started it), the workers and the
    simulator."""

    port: int
    broker: localkafka.Broker | None
    workers: list[WorkerProcess] = field(default_factory=list)
    simulator: ChildProcess | None = None

    def end(self, *, keep: bool) -> None:
        """Stop the simulator, then the workers and the broker the demo started, unless ``keep`` (then say
        how to stop them)."""
        if self.simulator is not None:
            self.simulator.stop(timeout=15, sig=signal.SIGINT)
        if keep:
            pids = ", ".join(f"{w.name} {w.pid}" for w in self.workers if w.running())
            click.echo(f"\nleft running: {pids or 'no workers'}; stop them with kill <pid>")
            if self.broker is not None or localkafka.status(self.port):
                click.echo(f"stop the broker: shudi kafka stop --port {self.port}")
            return
        stop_all(self.workers, timeout=30)
        if self.broker is not None:
            click.echo(f"stopping Kafka on {self.broker.bootstrap}")
            localkafka.stop(self.broker)


def _ensure_broker(port: int) -> localkafka.Broker | None:
    """The broker on 127.0.0.1:``port``: the one already there (None), else one started now."""
    if localkafka.status(port):
        click.echo(f"using the Kafka broker already on 127.0.0.1:{port}")
        return None
    click.echo(f"starting Kafka on 127.0.0.1:{port} (the first run downloads the jars with mvn) ...")
    try:
        return localkafka.start(port)
    except localkafka.BrokerError as exc:
        raise DemoError(str(exc)) from None


def _demo_db(workdir: Path) -> Path:
    from streams.devtools.mmdbbuild import build_demo_db

    db = build_demo_db(workdir / "demo-city.mmdb")
    click.echo(f"GeoIP: {db} (synthetic DEMO data: made-up networks, real-looking labels)")
    return db


def _start_workers(
    workers: list[WorkerProcess], workdir: Path, settings: Mapping[str, str], metrics_port: int
) -> None:
    """Start the two workers, adding each to ``workers`` as it starts."""
    for i, name in enumerate(("worker-a", "worker-b")):
        w = WorkerProcess.configure(
            workdir, name, {**settings, "SHUDI_METRICS_PORT": str(metrics_port + i)}, new_session=True
        )
        w.start()
        workers.append(w)
        click.echo(f"{name}: pid {w.pid}, metrics {w.metrics_url} (health {w.healthz_url}), log {w.log_path}")


def _start_simulator(
    workdir: Path, settings: Mapping[str, str], start: datetime, duration: float, rate: float, seed: int
) -> ChildProcess:
    """``shudi simulate`` with the scripted bursts that fit in ``duration`` wall seconds, started now."""
    sim_duration = duration * SPEEDUP
    bursts_script = scripted_bursts(sim_duration)
    bursts_path = workdir / "bursts.jsonl"
    bursts_path.write_text("".join(json.dumps(b) + "\n" for b in bursts_script), encoding="utf-8")
    sim_args = shudi_command(
        "simulate",
        "--db", settings["SHUDI_GEOIP_DB"], "--broker", settings["SHUDI_BROKER"],
        "--topic", settings["SHUDI_INPUT_TOPIC"],
        "--rate", f"{rate:g}", "--speedup", str(SPEEDUP), "--window", str(WINDOW_S),
        "--duration", f"{sim_duration:g}", "--start", rfc3339(start), "--seed", str(seed),
        "--bursts", str(bursts_path), "--truth", str(workdir / "truth.jsonl"), "--progress",
    )  # fmt: skip
    sim = ChildProcess("simulator", sim_args, child_env(), workdir / "simulate.log", new_session=True)
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
    return sim


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_workers(workers: Sequence[WorkerProcess], input_topic: str) -> None:
    """Until both workers are ready and have split the input partitions (else the first minutes of the
    demo would be rebalances); a worker that exits is an error."""
    click.echo("waiting for the workers to be ready ...")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not all(w.ready() for w in workers):
        for w in workers:
            if not w.running():
                raise _fail(w, f"exited with code {w.returncode()} while starting")
        if time.monotonic() > deadline:
            slow = next(w for w in workers if not w.ready())
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
    workers: Sequence[WorkerProcess],
    sim: ChildProcess,
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
                lines = render(snap, bursts, sim_time, elapsed, duration, WINDOW_S)
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
    print_summary(snap, bursts, scripted_bursts(duration * SPEEDUP))
    return interrupted
