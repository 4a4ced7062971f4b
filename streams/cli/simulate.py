"""``shudi simulate``: produce realistic comment traffic to Kafka, with ground truth for burst detection.

The traffic model is :mod:`streams.devtools.simulate` (its docstring: the burst file format). This module
paces it in wall-clock time and produces it with aiokafka.

Rate and speedup: the base traffic (bursts excluded) averages ``--rate`` events per wall second over a
simulated day; simulated time runs ``--speedup`` times faster than the wall clock, so the simulated traffic
is ``rate / speedup`` events per simulated second. Each event is sent when the wall clock reaches its
simulated time (divided by the speedup), so the daily cycle and the bursts are visible in processing time
too: at the 21:00 peak the wall rate is ~1.7 × ``--rate``, at the 04:00 trough ~0.3 × (peak/trough 5), and a
burst adds ``(multiplier - 1)`` × its territory's base rate on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from streams.cli.errors import EXIT_FAILED, CommandError, settings_or_exit
from streams.devtools.simulate import (
    TZ_CN,
    Burst,
    BurstFileError,
    DailyCycle,
    SimConfig,
    Simulation,
    TerritoryPool,
    load_bursts,
    parse_time,
    random_bursts,
    rfc3339,
    territory_shares,
    write_jsonl,
)
from streams.pipeline.geodb.table import TerritoryTable
from streams.runtime.kafka import KafkaConnection, KafkaConnectionError, explain_failure, quiet_kafka_logs


@dataclass(slots=True)
class ProduceResult:
    sent: int  # handed to the producer
    delivered: int  # acknowledged by the broker
    bad: int
    wall_s: float
    stopped: bool  # by SIGINT/SIGTERM


def _status(sim: Simulation, sent: int, rate: float, lag: float) -> str:
    active = ", ".join(
        f"{sim.bursts[i].territory}×{sim.bursts[i].multiplier:g}" for i in sim.active_bursts(sim.sim_offset)
    )
    when = sim.time_of(sim.sim_offset).strftime("%Y-%m-%d %H:%M:%S")
    line = f"sent {sent:,}  {rate:,.0f}/s  sim {when} +08:00"
    if lag > 1:
        line += f"  behind {lag:.1f}s"
    line += f"  bursts: {active or '-'}"
    return line


class _Deliveries:
    """The broker's acknowledgements of the records sent: how many, and the errors."""

    def __init__(self) -> None:
        self.delivered = 0
        self.errors: list[BaseException] = []

    def on_done(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self.errors.append(asyncio.CancelledError())
        elif (exc := fut.exception()) is not None:
            self.errors.append(exc)
        else:
            self.delivered += 1


class _Progress:
    """The one-line progress, rewritten in place at most twice a second."""

    def __init__(self, sim: Simulation, show: Callable[[str], None], started: float) -> None:
        self.sim, self.show = sim, show
        self.last_shown, self.last_sent, self.width = started, 0, 0

    def update(self, now: float, sent: int, lag: float) -> None:
        if now - self.last_shown < 0.5:
            return
        line = _status(self.sim, sent, (sent - self.last_sent) / (now - self.last_shown), lag)
        self.show("\r" + line.ljust(self.width))
        self.width = len(line)
        self.last_shown, self.last_sent = now, sent

    def end(self) -> None:
        if self.width:
            self.show("\n")


async def produce_simulation(
    sim: Simulation,
    kafka: KafkaConnection | str,
    topic: str,
    *,
    duration: float | None = None,
    limit: int | None = None,
    progress: bool = False,
    producer_kwargs: dict[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
) -> ProduceResult:
    """Send ``sim``'s events to ``topic``, each when the wall clock reaches its simulated time / speedup.

    Stops at the end of ``duration``/``limit``, or cleanly (flushing what was sent) on SIGINT/SIGTERM.
    Raises the first delivery error, if any, after the flush; :class:`KafkaConnectionError` (one line naming
    the cause) if it cannot connect.
    """
    speedup = sim.config.speedup
    conn = KafkaConnection.of(kafka)
    producer = conn.producer(
        linger_ms=20,
        max_batch_size=256 * 1024,
        max_request_size=1024 * 1024,
        **(producer_kwargs or {}),
    )
    try:
        with quiet_kafka_logs():
            await producer.start()
    except BaseException as exc:
        await producer.stop()  # releases the client it made; else aiokafka warns "Unclosed AIOKafkaProducer"
        if isinstance(exc, Exception):
            raise KafkaConnectionError(await explain_failure(conn, exc)) from None
        raise
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)

    deliveries = _Deliveries()
    sent = bad = 0
    started = loop.time()
    shown = _Progress(sim, echo or (lambda s: click.echo(s, nl=False, err=True)), started)
    try:
        for event in sim.events(duration=duration, limit=limit):
            delay = started + event.offset / speedup - loop.time()
            if delay > 0.005:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set() or deliveries.errors:
                sim.retract(event)  # not sent: keep the ground truth to what the topic holds
                break
            fut = await producer.send(topic, event.value, key=event.key)
            fut.add_done_callback(deliveries.on_done)
            sent += 1
            bad += event.bad_reason is not None
            if progress:
                now = loop.time()
                shown.update(now, sent, lag=now - (started + event.offset / speedup))
        await producer.flush()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await producer.stop()
        if progress:
            shown.end()
    if deliveries.errors:
        raise deliveries.errors[0]
    return ProduceResult(sent, deliveries.delivered, bad, loop.time() - started, stop.is_set())


@click.command("simulate")
@click.option(
    "--db",
    "db_path",
    help="Database file(s), comma separated (any format shudi reads), whose ranges the addresses come from "
    "(default: SHUDI_GEOIP_DB).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=200.0,
    show_default=True,
    help="Mean base events per wall-clock second over a simulated day (bursts come on top).",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated seconds per wall second (60: an hour a minute). Simulated volume = rate/speedup per s.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    help="Simulated seconds to run (default: until Ctrl-C or --events).",
)
@click.option("--events", "max_events", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--start", help="Simulated start time, RFC 3339 (no offset: Asia/Shanghai). Default: now.")
@click.option(
    "--bad-fraction",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Share of base events replaced by malformed ones (every dead-letter reason in turn).",
)
@click.option(
    "--bursts",
    "bursts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Burst script: JSON lines or a JSON list (format: `pydoc streams.devtools.simulate`).",
)
@click.option(
    "--random-bursts",
    "n_random",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Add N bursts drawn from the seed, spread over --duration (else the time --events takes, "
    "else the first wall-clock hour).",
)
@click.option("--seed", type=int, help="Random seed; the same seed and --start give the same traffic.")
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the bursts' ground truth here (JSON lines; rewritten with the emitted counts at the end).",
)
@click.option(
    "--counts",
    type=click.Path(dir_okay=False, path_type=Path),
    help="At the end, write valid events per (territory, --window) here, with their expectation.",
)
@click.option(
    "--window", type=click.IntRange(min=1), default=60, show_default=True, help="Seconds per --counts window."
)
@click.option(
    "--dispersion",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    help="Over-dispersion: variance of a mean-1 gamma multiplier per (territory, step); 0 is plain Poisson.",
)
@click.option(
    "--peak-ratio",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="Daily cycle: 21:00 peak over 04:00 trough (Asia/Shanghai).",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Users in all, spread over territories by share; each posts Zipf-often from a stable address.",
)
@click.option(
    "--posts", type=click.IntRange(min=1), default=5_000, show_default=True, help="Posts (Zipf popularity)."
)
@click.option("--topic", help="Topic to produce to (default: SHUDI_INPUT_TOPIC).")
@click.option("--broker", help="Kafka bootstrap servers (default: SHUDI_BROKER).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="One-line progress on stderr (default: when stderr is a terminal).",
)
def simulate(
    db_path: str | None,
    rate: float,
    speedup: float,
    duration: float | None,
    max_events: int | None,
    start: str | None,
    bad_fraction: float,
    bursts_file: Path | None,
    n_random: int,
    seed: int | None,
    truth: Path | None,
    counts: Path | None,
    window: int,
    dispersion: float,
    peak_ratio: float,
    users: int,
    posts: int,
    topic: str | None,
    broker: str | None,
    progress: bool | None,
) -> None:
    """Produce realistic comment traffic with injected regional bursts, and write their ground truth.

    Addresses are drawn from the GeoIP database's own networks per territory (IP属地), with rates roughly
    in proportion to internet users, a daily cycle, repeat posters with stable addresses, popular posts,
    a share of malformed events and scripted or random bursts. Records are keyed by post_id.
    """
    settings = settings_or_exit()
    db, table = _checked_db(db_path, settings.geoip_db)
    begin = _start_time(start)
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
    if progress is None:
        progress = sys.stderr.isatty()

    pool = _pool(db, table, seed, begin)
    config = SimConfig(
        start=begin,
        rate=rate,
        speedup=speedup,
        seed=seed,
        bad_fraction=bad_fraction,
        dispersion=dispersion,
        cycle=DailyCycle(ratio=peak_ratio),
        users=users,
        posts=posts,
        window=window,
    )
    horizon = duration or (max_events / config.sim_rate if max_events else 3600 * speedup)
    sim = _simulation(pool, config, bursts_file, n_random, horizon)
    if truth is not None:
        write_jsonl(truth, sim.truth())

    topic = topic or settings.input_topic
    kafka = KafkaConnection.from_settings(settings)
    if broker:
        kafka = kafka.with_bootstrap(broker)  # other brokers, the same TLS/SASL settings
    try:
        result = _produce(sim, kafka, topic, duration=duration, limit=max_events, progress=progress)
    finally:
        if truth is not None:
            write_jsonl(truth, sim.truth())
        if counts is not None:
            write_jsonl(counts, sim.count_rows())
    how = "stopped" if result.stopped else "done"
    click.echo(
        f"{how}: sent {result.sent:,} events ({result.bad:,} malformed) to {topic} in {result.wall_s:.1f}s; "
        f"simulated {rfc3339(sim.time_of(0))} → {rfc3339(sim.time_of(sim.sim_offset))}",
        err=True,
    )


def _checked_db(db_path: str | None, configured: tuple[Path, ...]) -> tuple[str, TerritoryTable]:
    """The database file(s) (``--db``, else the setting) and their compiled table: a clear one-line error
    for a missing or unusable file."""
    from streams.pipeline.geodb import parse_paths
    from streams.pipeline.geodb.base import DatabaseError
    from streams.pipeline.geodb.labeller import load

    paths = parse_paths(db_path) if db_path else list(configured)
    try:
        sources, table = load(paths)
    except DatabaseError as exc:
        raise CommandError(str(exc)) from None
    for s in sources:
        s.close()
    return ",".join(str(p) for p in paths), table


def _pool(db: str, table: TerritoryTable, seed: int, begin: datetime) -> TerritoryPool:
    t0 = time.perf_counter()
    click.echo(f"drawing addresses from the ranges of {db} ...", err=True)
    pool = TerritoryPool.from_table(table, seed=seed)
    click.echo(
        f"{len(pool.codes)} territories ({time.perf_counter() - t0:.1f}s); seed {seed}, "
        f"start {rfc3339(begin)}",
        err=True,
    )
    return pool


def _start_time(start: str | None) -> datetime:
    """``--start`` (RFC 3339; no offset: Asia/Shanghai), else now to the second."""
    try:
        return parse_time(start) if start else datetime.now(TZ_CN).replace(microsecond=0)
    except ValueError:
        raise click.BadParameter(f"not an RFC 3339 date-time: {start!r}", param_hint="--start") from None


def _simulation(
    pool: TerritoryPool, config: SimConfig, bursts_file: Path | None, n_random: int, horizon: float
) -> Simulation:
    """The simulation with the bursts of ``bursts_file`` and ``n_random`` more over ``horizon`` simulated
    seconds; each burst is announced on stderr."""
    bursts: list[Burst] = []
    if bursts_file is not None:
        try:
            bursts = load_bursts(bursts_file, config.start)
        except BurstFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--bursts") from None
    if n_random:
        shares = territory_shares(pool.codes, config.weights, config.other_weight)
        bursts += random_bursts(n_random, shares, seed=config.seed, horizon=horizon, first=len(bursts))
    try:
        sim = Simulation(pool, config, bursts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bursts") from None
    for row in sim.truth():
        click.echo(
            f"burst {row['burst']}: {row['territory']} ×{row['multiplier']:g} {row['start']} → {row['end']}"
            f" on {', '.join(row['post_ids'])} (~{row['expected_extra']:.0f} extra)",
            err=True,
        )
    return sim


def _produce(sim: Simulation, kafka: KafkaConnection, topic: str, **options: Any) -> ProduceResult:
    """:func:`produce_simulation` in its own event loop; a Kafka or network failure is a CommandError."""
    from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

    try:
        return asyncio.run(produce_simulation(sim, kafka, topic, **options))
    except KafkaConnectionError as exc:
        raise CommandError(f"producing to {topic} at {kafka.bootstrap} failed: {exc}", EXIT_FAILED) from None
    except TopicAuthorizationFailedError:
        raise CommandError(f"Kafka denies {kafka.identity()} WRITE on topic {topic!r}", EXIT_FAILED) from None
    except (KafkaError, OSError) as exc:
        raise CommandError(
            f"producing to {topic} at {kafka.bootstrap} failed: {type(exc).__name__}: {exc}", EXIT_FAILED
        ) from None
