"""End-to-end throughput of shudi against a raw aiokafka loop, a naive pipeline and a bare Faust relay.

Run from the repo root::

    python -m bench.throughput --bootstrap 127.0.0.1:19092            # 200k events, 4 partitions
    python -m bench.throughput --tiny --bootstrap ...                  # 3k events, CI: asserts accounting
    python -m bench.throughput --rate 5000 --events 100000 ...         # latency at a fixed input rate
    python -m bench.throughput --long ...                              # >= 10M events, RSS every million

Every mode runs in a child process (so its CPU and RSS can be read from /proc without the harness's own
work mixed in), reads the same pre-loaded input through its own consumer group and writes its own output
topic. Throughput and latency come from the *record timestamps* read back from the output topics by this
harness, never from what a worker says about itself.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

from streams.devtools.mmdbbuild import build_synthetic_db
from streams.runtime.kafka import connection_from_env
from streams.testing import free_port, user_cache_dir

CLK_TCK = os.sysconf("SC_CLK_TCK")
REQUIRED_FIELDS = ("event_id", "user_id", "post_id", "text", "ip", "created_at", "platform")
REPO_ROOT = Path(__file__).resolve().parent.parent  # children run from here, so `-m bench...` resolves

# ----------------------------------------------------------------------------------------------------------
# /proc readings: the harness measures children from outside, so a worker cannot flatter itself.


def proc_cpu_s(pid: int) -> float:
    """utime + stime of *pid* (all threads) in seconds; 0.0 once the process is gone."""
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


# ----------------------------------------------------------------------------------------------------------
# GeoIP database: a real file (--db) or a synthetic GeoIP2-City of realistic size.


def ensure_db(db: Path | None, networks: int) -> tuple[Path, str]:
    """The DB to use and how it was obtained (reported, so a synthetic result is never mistaken for real)."""
    if db is not None:
        return db, "given"
    cached = user_cache_dir() / "bench" / f"synthetic-city-{networks}.mmdb"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        build_synthetic_db(tmp, networks, 7)
        tmp.replace(cached)
    return cached, f"synthetic, {networks:,} networks (streams.devtools.mmdbbuild)"


def ip_pool(db: Path, size: int, seed: int) -> list[str]:
    """*size* distinct addresses drawn from the DB's own networks, so most lookups hit, as in production."""
    import maxminddb

    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    with maxminddb.open_database(str(db)) as reader:
        for net, _rec in reader:
            nets.append(net)
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < size:
        net = nets[rng.randrange(len(nets))]
        host = net.network_address + rng.randrange(max(1, min(net.num_addresses, 1 << 32)))
        # IPv4 networks inside an IPv6 DB come back as ::a.b.c.d; comments carry dotted quads.
        if isinstance(host, ipaddress.IPv6Address) and int(host) < (1 << 32):
            out.add(str(ipaddress.IPv4Address(int(host))))
        else:
            out.add(str(host))
    return list(out)


# ----------------------------------------------------------------------------------------------------------
# Events.

_TEXT_ZH = [
    "今天的天气真不错",
    "这个观点我不同意",
    "支持一下博主",
    "哈哈哈笑死我了",
    "有没有人一起去看演唱会",
    "这家店的火锅很好吃",
    "转发微博",
    "终于下班了",
    "求推荐一本好书",
    "太真实了吧",
]
_TEXT_EN = [
    "lol",
    "so true",
    "check this out https://t.cn/abc123",
    "+1",
    "GG",
    "iPhone 18 Pro Max",
    "wow",
    "#热门话题#",
    "@someone",
    "2026 is wild",
]


def key_of(i: int) -> bytes:
    return b"e%010d" % i


def index_of(key: bytes) -> int:
    return int(key[1:])


def gen_events(
    n: int, ips: Sequence[str], seed: int, bad_ratio: float = 0.01
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs: ~600-byte comment JSON, Zipf-like IP reuse, *bad_ratio* bad events."""
    rng = random.Random(seed)
    k = len(ips)
    for i in range(n):
        # u**3 skews toward low indices: a few addresses are very hot, most appear once or twice.
        ip = ips[int(k * rng.random() ** 3)]
        parts: list[str] = []
        while sum(len(p.encode()) for p in parts) < 330:
            parts.append(rng.choice(_TEXT_ZH) if rng.random() < 0.6 else rng.choice(_TEXT_EN))
        ev: dict[str, Any] = {
            "event_id": key_of(i).decode(),
            "user_id": f"u{rng.randrange(1_000_000)}",
            "post_id": f"p{rng.randrange(50_000)}",
            "text": " ".join(parts),
            "ip": ip,
            "created_at": "2026-11-25T10:00:00+08:00",
            "platform": rng.choice(("weibo", "douyin", "xiaohongshu", "bilibili")),
            "lang": "zh",
        }
        r = rng.random()
        if r < bad_ratio / 3:
            yield key_of(i), json.dumps(ev, ensure_ascii=False).encode()[:-7]  # truncated: invalid JSON
            continue
        if r < 2 * bad_ratio / 3:
            del ev[rng.choice(("ip", "user_id", "event_id"))]
        elif r < bad_ratio:
            ev["ip"] = rng.choice(("999.1.2.3", "not-an-ip", "", "1.2.3"))
        yield key_of(i), json.dumps(ev, ensure_ascii=False).encode()


# ----------------------------------------------------------------------------------------------------------
# Kafka helpers.


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = connection_from_env(bootstrap).admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # No retention limit on the bench's own topics: the project's dev broker keeps 64 MB per partition,
        # and a --long run's input (6 GB) would be deleted under the worker reading it.
        unlimited = {"retention.bytes": "-1", "retention.ms": "-1"}
        new = [NewTopic(t, p, 1, topic_configs=unlimited) for t, p in topics.items() if t not in existing]
        if new:
            await admin.create_topics(new)
        # Leaders appear a moment after CreateTopics returns; a consumer starting earlier sees no partitions.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = await admin.describe_topics(list(topics))
            if all(t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in md):
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_run_topics(bootstrap: str, run_id: str) -> None:
    """Every topic of one harness run (inputs, outputs, the workers' internal topics)."""
    admin = connection_from_env(bootstrap).admin()
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(f"bench-{run_id}")]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


async def group_is_stable(bootstrap: str, group: str) -> bool:
    admin = connection_from_env(bootstrap).admin()
    await admin.start()
    try:
        for resp in await admin.describe_consumer_groups([group]):
            for g in resp.groups:
                # (error_code, group_id, state, protocol_type, protocol, members, ...)
                if g[1] == group and g[2] == "Stable" and g[5]:
                    return True
        return False
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, events: Iterator[tuple[bytes, bytes]], rate: float | None = None
) -> int:
    """Produce *events*; at *rate* events/s if given (in 10 ms slices, so the rate is smooth enough)."""
    producer = connection_from_env(bootstrap).producer(
        linger_ms=5,
        max_batch_size=512 * 1024,
        acks=1,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    n = 0
    try:
        start = time.monotonic()
        futs: list[asyncio.Future[Any]] = []
        for key, value in events:
            futs.append(await producer.send(topic, value, key=key))
            n += 1
            if rate is not None and n % max(1, int(rate / 100)) == 0:
                ahead = n / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(futs) >= 20_000:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """consumer.stop(), minus an aiokafka quirk: without a group, stop() can re-raise the CancelledError of
    its own never-started ``_reset_committed_routine`` task. Swallow it only if *we* are not being cancelled.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def track(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> None:
    """Make a group-less consumer fetch metadata for *topics* (partitions_for_topic is None until then)."""
    for t in topics:
        await consumer._client.add_topic(t)  # no public API for this in aiokafka 0.14


async def end_offsets(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> int:
    tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
    if not tps:
        return 0
    offs = await consumer.end_offsets(tps)
    return int(sum(offs.values()))


async def read_all(bootstrap: str, topic: str, on_record: Any) -> int:
    """Read *topic* from the beginning to its current end, calling on_record(key, value, ts) for each."""
    consumer = connection_from_env(bootstrap).consumer(
        enable_auto_commit=False,
        fetch_max_bytes=16 << 20,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    n = 0
    try:
        await track(consumer, [topic])
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
            for tp, msgs in batches.items():
                for m in msgs:
                    on_record(m.key, m.value, m.timestamp)
                    n += 1
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await stop_consumer(consumer)
    return n


# ----------------------------------------------------------------------------------------------------------
# Child modes "raw" and "naive": the plain aiokafka loop the project measures itself against.


async def child_loop(args: argparse.Namespace) -> None:
    enrich = args.child == "naive"
    reader: Any = None
    if enrich:
        import geoip2.database
        import geoip2.errors

        reader = geoip2.database.Reader(str(args.db))
        not_found = geoip2.errors.AddressNotFoundError
    consumer = connection_from_env(args.bootstrap).consumer(
        args.in_topic,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
    )
    # acks=all like Faust's default, so the comparison is about the client path, not durability settings.
    producer = connection_from_env(args.bootstrap).producer(
        acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await consumer.start()
    await producer.start()
    send = producer.send
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            if not batches:
                continue
            futs = []
            for msgs in batches.values():
                for m in msgs:
                    if not enrich:
                        futs.append(await send(args.out_topic, m.value, key=m.key))
                        continue
                    out, dlq = _naive_enrich(m.value, reader, not_found)
                    if out is not None:
                        futs.append(await send(args.out_topic, out, key=m.key))
                    else:
                        futs.append(await send(args.dlq_topic, dlq, key=m.key))
            # At-least-once: commit only after every record of the batch is acknowledged by the broker.
            await asyncio.gather(*futs)
            await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in batches.items()})
    finally:
        await producer.stop()
        await consumer.stop()


def _naive_enrich(value: bytes, reader: Any, not_found: type[Exception]) -> tuple[bytes | None, bytes]:
    """The straightforward pipeline: stdlib json, a full geoip2 ``city()`` model per event, no cache."""
    try:
        ev = json.loads(value)
        if not isinstance(ev, dict) or any(f not in ev for f in REQUIRED_FIELDS):
            return None, value
        try:
            city = reader.city(ev["ip"])
        except not_found:
            terr = {"code": "ZZ", "name_zh": "未知", "name_en": "Unknown", "country_code": None}
        else:
            cc = city.country.iso_code
            sub = city.subdivisions.most_specific.iso_code
            terr = {
                "code": f"{cc}-{sub}" if cc == "CN" and sub else cc,
                "name_zh": city.subdivisions.most_specific.names.get("zh-CN")
                or city.country.names.get("zh-CN"),
                "name_en": city.subdivisions.most_specific.name or city.country.name,
                "country_code": cc,
            }
        del ev["ip"]
        ev["ip_territory"] = terr
        return json.dumps(ev, ensure_ascii=False).encode(), b""
    except (ValueError, TypeError):  # JSONDecodeError is a ValueError; so is a malformed address
        return None, value


# ----------------------------------------------------------------------------------------------------------
# The harness.


@dataclass
class Result:
    mode: str
    ran: bool = True
    note: str = ""
    outputs: int = 0
    dead_letters: int = 0
    events_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s_per_100k: float = 0.0
    cpu_s_total: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_every_million: list[float] = field(default_factory=list)


@dataclass
class Mode:
    name: str
    argv: list[str]
    env: dict[str, str]
    out_topic: str
    dlq_topic: str | None
    group: str
    input_topic: str
    # Worker processes started side by side (same group); each copy gets these env overrides on top.
    copies: list[dict[str, str]] = field(default_factory=lambda: [{}])


def _percentile(sorted_vals: Sequence[int], q: float) -> float:
    if not sorted_vals:
        return 0.0
    return float(sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))])


async def run_mode(
    args: argparse.Namespace, mode: Mode, n_events: int, in_ts: array.array[int] | None, events_factory: Any
) -> Result:
    res = Result(mode.name)
    topics = {mode.out_topic: args.partitions}
    if mode.dlq_topic:
        topics[mode.dlq_topic] = args.partitions
    if args.rate:
        topics[mode.input_topic] = args.partitions
    await create_topics(args.bootstrap, topics)
    log = Path(args.workdir) / f"{mode.name}.log"
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("wb") as logf:
        for copy in mode.copies:
            # Popen returns at once (fork/exec); the children's lives are watched by polling below.
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220
                    mode.argv,
                    env={**os.environ, **mode.env, **copy},
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                )
            )
    proc = procs[0]

    def exited() -> subprocess.Popen[bytes] | None:
        return next((p for p in procs if p.poll() is not None), None)

    def cpu_s() -> float:
        return sum(proc_cpu_s(p.pid) for p in procs)

    def rss_mb() -> float:
        return sum(proc_rss_mb(p.pid) for p in procs)

    producer_task: asyncio.Task[int] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    watch = connection_from_env(args.bootstrap).consumer()
    await watch.start()
    out_topics = [mode.out_topic] + ([mode.dlq_topic] if mode.dlq_topic else [])
    try:
        if args.rate:
            # Latency at a fixed rate only means something once the worker is consuming: wait for its group.
            deadline = time.monotonic() + 120
            while not await group_is_stable(args.bootstrap, mode.group):
                if exited() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{mode.name}: worker never joined group {mode.group}; see {log}")
                await asyncio.sleep(0.5)
            producer_task = asyncio.create_task(
                produce(args.bootstrap, mode.input_topic, events_factory(), rate=args.rate)
            )
        await track(watch, out_topics)
        base = await end_offsets(watch, out_topics)
        cpu_first = rss_first = None
        n_first = 0
        last_change, last_n, next_million = time.monotonic(), 0, 1_000_000
        started = time.monotonic()
        while True:
            if (gone := exited()) is not None:
                res.note = f"worker exited with {gone.returncode}; see {log}"
                break
            n = await end_offsets(watch, out_topics) - base
            now = time.monotonic()
            if n and cpu_first is None:
                cpu_first, rss_first, n_first = cpu_s(), rss_mb(), n
                if args.profile:
                    profiler = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "-p",
                            str(proc.pid),
                            "-r",
                            "250",
                            "--nonblocking",  # sampling without pausing the worker: less distortion
                            "-f",
                            "raw",
                            "-o",
                            str(Path(args.workdir) / f"{mode.name}.pyspy.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
            while n >= next_million:
                res.rss_every_million.append(round(rss_mb(), 1))
                print(
                    f"  {mode.name}: {next_million:,} events, RSS {res.rss_every_million[-1]} MB", flush=True
                )
                next_million += 1_000_000
            if n != last_n:
                last_change, last_n = now, n
            if n >= n_events:
                break
            if now - last_change > args.idle_timeout and (n or now - started > args.startup_timeout):
                res.note = f"stalled at {n}/{n_events} outputs"
                break
            await asyncio.sleep(0.2)
        cpu_end, res.rss_end_mb = cpu_s(), rss_mb()
        res.cpu_s_total = round(cpu_end, 2)
        if cpu_first is not None and last_n > n_first:
            res.cpu_s_per_100k = round((cpu_end - cpu_first) / (last_n - n_first) * 100_000, 2)
            res.rss_start_mb = round(rss_first or 0.0, 1)
        res.rss_end_mb = round(res.rss_end_mb, 1)
    finally:
        await stop_consumer(watch)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)
        if producer_task is not None:
            producer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer_task
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # Read back: timestamps of outputs (throughput, latency) and dead letters (accounting).
    out_ts: list[int] = []
    lat: list[int] = []
    stride = max(1, n_events // 500_000)  # --long: sample latencies instead of keeping 10M of them

    def on_out(key: bytes | None, value: bytes, ts: int) -> None:
        out_ts.append(ts)
        if in_ts is None:
            return
        try:
            idx = index_of(key) if key else index_of(json.loads(value)["event_id"].encode())
        except (ValueError, KeyError, TypeError):
            return
        if idx % stride == 0 and 0 <= idx // stride < len(in_ts):
            lat.append(ts - in_ts[idx // stride])

    res.outputs = await read_all(args.bootstrap, mode.out_topic, on_out)
    if mode.dlq_topic:
        res.dead_letters = await read_all(args.bootstrap, mode.dlq_topic, lambda k, v, ts: out_ts.append(ts))
    if len(out_ts) > 1:
        out_ts.sort()
        span = (out_ts[-1] - out_ts[0]) / 1000
        res.events_per_s = round((len(out_ts) - 1) / span) if span > 0 else 0.0
    lat.sort()
    res.p50_ms, res.p99_ms = _percentile(lat, 0.5), _percentile(lat, 0.99)
    return res


def _modes(args: argparse.Namespace, run_id: str) -> list[Mode]:
    py = sys.executable
    modes: list[Mode] = []
    wanted = args.modes.split(",")

    def topics(name: str) -> tuple[str, str, str]:
        # Kafka topic names (and Faust's app-id-derived ones) allow only [A-Za-z0-9._-].
        tag = name.replace("[", "-").replace("]", "").replace(",", "-").replace("+", ".")
        inp = f"bench-{run_id}-in-{tag}" if args.rate else args.input_topic
        return inp, f"bench-{run_id}-out-{tag}", f"bench-{run_id}-dlq-{tag}"

    for name in ("raw", "naive"):
        if name in wanted:
            inp, out, dlq = topics(name)
            group = f"bench-{run_id}-{name}"
            modes.append(
                Mode(
                    name,
                    [
                        py,
                        "-m",
                        "bench.throughput",
                        "--child",
                        name,
                        "--bootstrap",
                        args.bootstrap,
                        "--in-topic",
                        inp,
                        "--out-topic",
                        out,
                        "--dlq-topic",
                        dlq,
                        "--group",
                        group,
                        "--db",
                        str(args.db),
                    ],
                    {},
                    out,
                    dlq if name == "naive" else None,
                    group,
                    inp,
                )
            )
    if "faust-relay" in wanted:
        for variant in args.relay_variants.split(","):
            name = f"faust-relay[{variant}]"
            inp, out, _ = topics(name)
            group = f"bench-{run_id}-relay-{variant.replace('+', '.')}"
            modes.append(
                Mode(
                    name,
                    [
                        py,
                        "-m",
                        "bench.faust_relay",
                        "--variant",
                        variant,
                        "--bootstrap",
                        args.bootstrap,
                        "--in-topic",
                        inp,
                        "--out-topic",
                        out,
                        "--app-id",
                        group,
                        "--data-dir",
                        str(Path(args.workdir) / group),
                        "--partitions",
                        str(args.partitions),
                    ],
                    {},
                    out,
                    None,
                    group,
                    inp,
                )
            )
    # Two workers in one group share the partitions: on 2 cores with the broker beside them, the gain is
    # bounded by the cores, not by shudi.
    for name, workers in (("shudi", 1), ("shudi-x2", 2)):
        if name not in wanted:
            continue
        inp, out, dlq = topics(name.replace("-", ""))
        group = f"bench-{run_id}-{name}"
        env = {
            "SHUDI_BROKER": args.bootstrap,
            "SHUDI_INPUT_TOPIC": inp,
            "SHUDI_ENRICHED_TOPIC": out,
            "SHUDI_DLQ_TOPIC": dlq,
            # The internal topics too: with the defaults every run's counting agent would replay the
            # counts of every earlier run from the beginning.
            "SHUDI_COUNTS_TOPIC": f"{group}-counts",
            "SHUDI_BURSTS_TOPIC": f"{group}-bursts",
            "SHUDI_GEOIP_DB": str(args.db),
            "SHUDI_APP_ID": group,
            "SHUDI_METRICS_PORT": "0",
            "SHUDI_PARTITIONS": str(args.partitions),
            "SHUDI_LOG_LEVEL": "error",  # a level both shudi and Faust's -l accept
        }
        copies = [
            {
                "SHUDI_WEB_PORT": str(free_port()),  # others may run workers on this machine
                "SHUDI_DATA_DIR": str(Path(args.workdir) / f"{group}-{i}"),
            }
            for i in range(workers)
        ]
        modes.append(Mode(name, [*_shudi_cmd(), "worker"], env, out, dlq, group, inp, copies))
    return modes


def _shudi_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("shudi")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "streams.cli"]


def shudi_runnable() -> str | None:
    """None if ``shudi worker`` can start, else why not (the lead is still writing the CLI)."""
    try:
        r = subprocess.run(
            [*_shudi_cmd(), "--help"],
            capture_output=True,
            timeout=60,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run shudi: {exc}"
    if r.returncode != 0 or b"worker" not in r.stdout:
        return (
            "shudi CLI not runnable yet: "
            + (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        )
    return None


def start_broker() -> tuple[str, Any]:
    """A throwaway broker from streams.devtools.localkafka (the module another helper maintains)."""
    try:
        from streams.devtools import localkafka
    except ImportError as exc:
        raise SystemExit("no --bootstrap given and streams.devtools.localkafka does not exist yet") from exc
    broker = localkafka.start(port=free_port())
    return broker.bootstrap, broker


def stop_broker(broker: Any) -> None:
    from streams.devtools import localkafka

    localkafka.stop(broker)


def print_table(results: list[Result], meta: dict[str, Any]) -> None:
    print(
        f"\n{meta['events']:,} events, {meta['partitions']} partitions, DB: {meta['db_source']}"
        + (
            f", rate {meta['rate']}/s, latency after {meta['warmup']} s warm-up"
            if meta["rate"]
            else " (preloaded backlog: latency = backlog)"
        )
    )
    hdr = (
        f"{'mode':<46}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU s/100k':>11}{'RSS MB':>15}"
        f"{'out':>9}{'dlq':>7}  note"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        if not r.ran:
            print(f"{r.mode:<46}{'skipped':>10}  {r.note}")
            continue
        print(
            f"{r.mode:<46}{r.events_per_s:>10,.0f}{r.p50_ms:>9.0f}{r.p99_ms:>9.0f}{r.cpu_s_per_100k:>11.2f}"
            f"{f'{r.rss_start_mb:.0f}->{r.rss_end_mb:.0f}':>15}{r.outputs:>9}{r.dead_letters:>7}  {r.note}"
        )
    by = {r.mode: r for r in results if r.ran and r.events_per_s}
    if "shudi" in by:
        for base in ("raw", "naive"):
            if base in by:
                print(f"shudi/{base}: {by['shudi'].events_per_s / by[base].events_per_s:.2f}")
        if "shudi-x2" in by:
            print(f"two workers / one: {by['shudi-x2'].events_per_s / by['shudi'].events_per_s:.2f}")


async def _harness(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:8]
    Path(args.workdir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any I/O matters
    args.db, db_source = ensure_db(args.db, args.networks)
    ips = ip_pool(args.db, min(args.distinct_ips, max(100, args.events)), seed=1)
    print(f"run {run_id}: DB {args.db} ({db_source}), {len(ips):,} distinct IPs", flush=True)

    def events_factory() -> Iterator[tuple[bytes, bytes]]:
        return gen_events(args.events, ips, seed=2)

    stride = max(1, args.events // 500_000)
    in_ts: array.array[int] | None = array.array("q", bytes(8 * (args.events // stride + 1)))
    if not args.rate:
        args.input_topic = f"bench-{run_id}-in"
        await create_topics(args.bootstrap, {args.input_topic: args.partitions})
        t0 = time.monotonic()
        await produce(args.bootstrap, args.input_topic, events_factory())
        print(f"preloaded {args.events:,} events in {time.monotonic() - t0:.1f}s", flush=True)

        def on_in(key: bytes | None, _v: bytes, ts: int) -> None:
            idx = index_of(key or b"e-1")
            if in_ts is not None and idx % stride == 0:
                in_ts[idx // stride] = ts

        await read_all(args.bootstrap, args.input_topic, on_in)

    results: list[Result] = []
    for mode in _modes(args, run_id):
        if mode.name.startswith("shudi") and (why := shudi_runnable()):
            print(f"shudi: skipped ({why})", flush=True)
            results.append(Result("shudi", ran=False, note=why))
            continue
        print(f"running {mode.name} ...", flush=True)
        if args.rate:
            # Fresh input per mode: the timestamps to measure from are written while the mode runs.
            in_ts_mode = array.array("q", bytes(8 * (args.events // stride + 1)))
            res = await run_mode(args, mode, args.events, in_ts_mode, events_factory)
            await read_all(
                args.bootstrap,
                mode.input_topic,
                lambda k, v, ts, a=in_ts_mode: (
                    a.__setitem__(index_of(k) // stride, ts) if index_of(k) % stride == 0 else None
                ),
            )
            # Latencies were matched before the input was read; redo the match now that it is known.
            res = await _rematch(args, mode, res, in_ts_mode, stride)
        else:
            res = await run_mode(args, mode, args.events, in_ts, events_factory)
        print(f"  {res}", flush=True)
        results.append(res)

    meta = {
        "events": args.events,
        "partitions": args.partitions,
        "db": str(args.db),
        "db_source": db_source,
        "rate": args.rate,
        "warmup": args.warmup,
        "run_id": run_id,
    }
    print_table(results, meta)
    if args.json:
        Path(args.json).write_text(  # noqa: ASYNC240 - after the measurements
            json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2)
        )
    if args.long:
        await delete_run_topics(args.bootstrap, run_id)  # some 12 GB of broker disk
    if args.tiny:
        bad = [r for r in results if r.ran and r.outputs + r.dead_letters != args.events]
        for r in bad:
            print(
                f"ACCOUNTING FAILED for {r.mode}: {r.outputs} outputs + {r.dead_letters} dead letters "
                f"!= {args.events} inputs",
                file=sys.stderr,
            )
        assert not bad, "every event must end up in the output or the dead-letter topic exactly once"
    return 0


async def _rematch(
    args: argparse.Namespace, mode: Mode, res: Result, in_ts: array.array[int], stride: int
) -> Result:
    lat: list[int] = []
    # Events produced in the first --warmup seconds are left out, in every mode alike: a fresh worker's
    # first second (empty label cache, first fetches, the counting agent's first assignment) is not the
    # steady state a latency target is about.
    first = min((t for t in in_ts if t), default=0)
    since = first + int(args.warmup * 1000)

    def on_out(key: bytes | None, value: bytes, ts: int) -> None:
        try:
            idx = index_of(key) if key else index_of(json.loads(value)["event_id"].encode())
        except (ValueError, KeyError, TypeError):
            return
        if idx % stride == 0 and in_ts[idx // stride] >= since:
            lat.append(ts - in_ts[idx // stride])

    await read_all(args.bootstrap, mode.out_topic, on_out)
    lat.sort()
    res.p50_ms, res.p99_ms = _percentile(lat, 0.5), _percentile(lat, 0.99)
    return res


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--bootstrap", help="HOST:PORT of a running broker (else streams.devtools.localkafka starts one)"
    )
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--tiny", action="store_true", help="3k events; assert every event is accounted for (CI)")
    p.add_argument("--long", action="store_true", help=">= 10M events, RSS reported every million")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--rate", type=float, help="produce at this many events/s while each mode runs")
    p.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="with --rate: leave events of the first S seconds out of the latency figures (every mode)",
    )
    p.add_argument("--db", type=Path, help="GeoIP2-City .mmdb (else a synthetic one is built and cached)")
    p.add_argument("--networks", type=int, default=220_000, help="networks in the synthetic DB")
    p.add_argument("--distinct-ips", type=int, default=300_000)
    p.add_argument("--modes", default="raw,naive,faust-relay,shudi")
    p.add_argument(
        "--relay-variants",
        default="fast-drain+tuned+uvloop+quietlog,aiokafka+uvloop",
        help="bench.faust_relay variants, comma separated",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--workdir", help="logs, Faust data dirs, profiles (default: a new temporary directory)")
    p.add_argument("--profile", action="store_true", help="py-spy each child while it processes (raw format)")
    p.add_argument("--idle-timeout", type=float, default=20.0)
    p.add_argument("--startup-timeout", type=float, default=120.0)
    # Child-process mode (internal): the raw / naive loops.
    p.add_argument("--child", choices=("raw", "naive"), help=argparse.SUPPRESS)
    p.add_argument("--in-topic", help=argparse.SUPPRESS)
    p.add_argument("--out-topic", help=argparse.SUPPRESS)
    p.add_argument("--dlq-topic", help=argparse.SUPPRESS)
    p.add_argument("--group", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.workdir is None:
        args.workdir = tempfile.mkdtemp(prefix="shudi-bench-")
    if args.tiny:
        args.events = 3_000
    if args.long:
        args.events = max(args.events, 10_000_000)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run  # every mode gets uvloop, as the worker does
    if args.child:
        run(child_loop(args))
        return 0
    broker: Any = None
    if not args.bootstrap:
        # localkafka.start uses asyncio.run itself: it must run before our loop exists.
        args.bootstrap, broker = start_broker()
    try:
        return int(run(_harness(args)))
    finally:
        if broker is not None:
            stop_broker(broker)


if __name__ == "__main__":
    sys.exit(main())
