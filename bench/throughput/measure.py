"""Running one mode and measuring it from outside: its processes' CPU and RSS from /proc (so a worker cannot
flatter itself), throughput and latency from the record timestamps of the topics it wrote."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.throughput.kafka import (
    create_topics,
    end_offsets,
    group_is_stable,
    produce,
    read_all,
    stop_consumer,
    track,
)
from bench.throughput.modes import Mode
from bench.throughput.options import Options
from bench.throughput.report import Result, percentile
from streams.runtime.kafka import connection_from_env
from streams.testing import ChildProcess, stop_all

CLK_TCK = os.sysconf("SC_CLK_TCK")
Events = Callable[[], Iterable[tuple[bytes, bytes]]]  # a fresh iterator of the (key, value) input each call


def proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (all threads) in seconds; 0.0 once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Usage:
    """The summed CPU and RSS of a mode's processes, and what they were when the first output appeared."""

    processes: Sequence[ChildProcess]
    first_cpu_s: float | None = None
    first_rss_mb: float = 0.0
    first_n: int = 0

    def cpu_s(self) -> float:
        return sum(proc_cpu_s(p.pid) for p in self.processes)

    def rss_mb(self) -> float:
        return sum(proc_rss_mb(p.pid) for p in self.processes)

    def mark_first(self, n: int) -> None:
        self.first_cpu_s, self.first_rss_mb, self.first_n = self.cpu_s(), self.rss_mb(), n

    def fill(self, res: Result, last_n: int) -> None:
        """The CPU per 100k outputs after the first one (start-up left out), and the RSS then and now."""
        cpu_end, rss_end = self.cpu_s(), self.rss_mb()
        res.cpu_s_total = round(cpu_end, 2)
        if self.first_cpu_s is not None and last_n > self.first_n:
            res.cpu_s_per_100k = round((cpu_end - self.first_cpu_s) / (last_n - self.first_n) * 100_000, 2)
            res.rss_start_mb = round(self.first_rss_mb, 1)
        res.rss_end_mb = round(rss_end, 1)


async def run_mode(opts: Options, mode: Mode, events: Events) -> Result:
    """Start the mode's processes, with ``--rate`` feed them its input, watch until every event is out (or
    they stall, or one exits) and stop them. The outputs are read back afterwards (:func:`read_back`)."""
    res = Result(mode.name)
    topics = dict.fromkeys(mode.output_topics, opts.partitions)
    if opts.rate:
        topics[mode.input_topic] = opts.partitions
    await create_topics(opts.bootstrap, topics)
    feeder: asyncio.Task[int] | None = None
    try:
        for p in mode.processes:
            p.start()
        if opts.rate:
            await _wait_for_group(opts, mode)
            feeder = asyncio.create_task(produce(opts.bootstrap, mode.input_topic, events(), rate=opts.rate))
        await _watch(opts, mode, res)
    finally:
        if feeder is not None:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
        await asyncio.to_thread(stop_all, mode.processes, 30)
    return res


async def _wait_for_group(opts: Options, mode: Mode) -> None:
    """Latency at a fixed rate only means something once the mode is consuming: wait for its group."""
    deadline = time.monotonic() + 120
    while not await group_is_stable(opts.bootstrap, mode.group):
        if _exited(mode) is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"{mode.name}: never joined group {mode.group}; see {mode.processes[0].log_path}"
            )
        await asyncio.sleep(0.5)


def _exited(mode: Mode) -> ChildProcess | None:
    return next((p for p in mode.processes if not p.running()), None)


async def _watch(opts: Options, mode: Mode, res: Result) -> None:
    """Poll the end offsets of the mode's output topics until ``opts.events`` records are out, or nothing
    moved for ``--idle-timeout`` (``--startup-timeout`` before the first output), or a process exited."""
    usage = Usage(mode.processes)
    profiler: ChildProcess | None = None
    watch = connection_from_env(opts.bootstrap).consumer()
    await watch.start()
    try:
        await track(watch, mode.output_topics)
        base = await end_offsets(watch, mode.output_topics)
        started = last_change = time.monotonic()
        last_n, next_million = 0, 1_000_000
        while (gone := _exited(mode)) is None:
            n = await end_offsets(watch, mode.output_topics) - base
            now = time.monotonic()
            if n and usage.first_cpu_s is None:
                usage.mark_first(n)
                profiler = _profile(opts, mode) if opts.profile else None
            while n >= next_million:  # --long: is memory flat?
                res.rss_every_million.append(round(usage.rss_mb(), 1))
                print(
                    f"  {mode.name}: {next_million:,} events, RSS {res.rss_every_million[-1]} MB", flush=True
                )
                next_million += 1_000_000
            if n != last_n:
                last_change, last_n = now, n
            if n >= opts.events:
                break
            if now - last_change > opts.idle_timeout and (n or now - started > opts.startup_timeout):
                res.note = f"stalled at {n}/{opts.events} outputs"
                break
            await asyncio.sleep(0.2)
        if gone is not None:
            res.note = f"{gone.name} exited with {gone.returncode()}; see {gone.log_path}"
        usage.fill(res, last_n)
    finally:
        await stop_consumer(watch)
        if profiler is not None:
            await asyncio.to_thread(profiler.stop, 30, signal.SIGINT)


def _profile(opts: Options, mode: Mode) -> ChildProcess:
    """py-spy on the mode's first process, sampling without pausing it (less distortion), raw format."""
    out = opts.workdir / f"{mode.processes[0].log_path.stem}.pyspy.txt"
    args = [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(mode.processes[0].pid)]
    args += ["-r", "250", "--nonblocking", "-f", "raw", "-o", str(out)]
    profiler = ChildProcess("py-spy", args, dict(os.environ), out.with_suffix(".log"))
    profiler.start()
    return profiler


def event_index(key: bytes | None, value: bytes) -> int | None:
    """The input position of an event: the number its id ends with (``e2-123`` → 123), read from the record
    key, or from the value's ``event_id`` when a mode wrote no key; None when neither has one."""
    try:
        event_id = key if key else json.loads(value)["event_id"].encode()
        return int(event_id.rsplit(b"-", 1)[1])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


@dataclass
class InputTimes:
    """The record timestamps of the input, every ``stride``-th event's (a --long run would keep 10M of them
    otherwise): what latency is measured from. Events written before ``since`` (ms) are left out."""

    events: int
    stride: int = 0
    since: int = 0
    ts: array[int] = field(default_factory=lambda: array("q"))

    def __post_init__(self) -> None:
        self.stride = max(1, self.events // 500_000)
        self.ts = array("q", bytes(8 * (self.events // self.stride + 1)))

    async def read(self, bootstrap: str, topic: str, warmup_s: float = 0.0) -> None:
        """Read the input ``topic``; events of its first ``warmup_s`` seconds will count for no latency."""

        def on_record(key: bytes | None, value: bytes, ts: int) -> None:
            idx = event_index(key, value)
            if idx is not None and idx % self.stride == 0 and 0 <= idx // self.stride < len(self.ts):
                self.ts[idx // self.stride] = ts

        await read_all(bootstrap, topic, on_record)
        if warmup_s:
            self.since = min((t for t in self.ts if t), default=0) + int(warmup_s * 1000)

    def sent_at(self, key: bytes | None, value: bytes) -> int | None:
        idx = event_index(key, value)
        if idx is None or idx % self.stride or not 0 <= idx // self.stride < len(self.ts):
            return None
        sent = self.ts[idx // self.stride]
        return sent if sent and sent >= self.since else None


async def read_back(bootstrap: str, mode: Mode, res: Result, inputs: InputTimes) -> None:
    """Outputs and dead letters (accounting), throughput from the first to the last output's timestamp,
    latency from each sampled event's input timestamp to its output's."""
    out_ts: list[int] = []
    lat: list[int] = []

    def on_out(key: bytes | None, value: bytes, ts: int) -> None:
        out_ts.append(ts)
        if (sent := inputs.sent_at(key, value)) is not None:
            lat.append(ts - sent)

    res.outputs = await read_all(bootstrap, mode.out_topic, on_out)
    if mode.dlq_topic:
        res.dead_letters = await read_all(bootstrap, mode.dlq_topic, lambda k, v, ts: out_ts.append(ts))
    if len(out_ts) > 1:
        out_ts.sort()
        span = (out_ts[-1] - out_ts[0]) / 1000
        res.events_per_s = round((len(out_ts) - 1) / span) if span > 0 else 0.0
    lat.sort()
    res.p50_ms, res.p99_ms = percentile(lat, 0.5), percentile(lat, 0.99)
