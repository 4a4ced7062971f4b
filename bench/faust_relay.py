"""A bare Faust worker relaying ``--in-topic`` to ``--out-topic`` byte for byte, in several variants.

``python -m bench.throughput --modes faust-relay --relay-variants a,b`` runs and measures them; run alone::

    python -m bench.faust_relay --variant take-batch --bootstrap 127.0.0.1:19092 \\
        --in-topic in --out-topic out --app-id relay1 --data-dir "$(mktemp -d)"

Variants (see bench/FAUST-PROFILE.md for what each one measured and costs):

``await-send``      ``async for event in stream.events(): await out.send(...)`` -- the textbook agent.
``take-batch``      ``stream.take_events(n, within)``, send the whole batch, then await its delivery futures.
``fast-drain``      ``take-batch`` on a Consumer whose ``_drain_messages`` runs the per-message conductor
                    callback eagerly and only races it against ``suspend_flow`` when it actually blocks
                    (upstream runs ``wait_first`` -- four tasks and an ``asyncio.wait`` -- per message).
``aiokafka``        the escape hatch: a ``mode.Service`` inside the Faust worker running its own
                    ``AIOKafkaConsumer`` (getmany, produce, await the batch, commit); Faust keeps its app,
                    tables and web server for later stages but no Faust stream touches these events.

``--set name=value`` (repeatable; value parsed as JSON when it parses) passes any Faust setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import types
from collections.abc import Awaitable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import click
import faust
import mode
import mode.loop
from aiokafka.abc import ConsumerRebalanceListener
from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.runtime.kafka import connection_from_env

VARIANTS = ("await-send", "take-batch", "fast-drain", "aiokafka")

# Setting presets, appended to a variant with "+": ``take-batch+big+nomonitor``. Values are Faust settings.
PRESETS: dict[str, dict[str, Any]] = {
    # Bigger buffers and fetches: fewer, larger getmany() calls into the consumer thread.
    "big": {
        "stream_buffer_maxsize": 32768,
        "broker_max_poll_records": 5000,
        "consumer_max_fetch_size": 8 << 20,
    },
    # Producer batching (defaults: linger 0, 16 KiB batches).
    "producer": {"producer_linger_ms": 5, "producer_max_batch_size": 256 * 1024},
    # Fewer commits (defaults: every 10k acks or 2.8 s).
    "commit": {"broker_commit_every": 100_000, "broker_commit_interval": 5.0},
    # The Monitor sensor is called per message in and out; replace it with a no-op sensor.
    "nomonitor": {"Monitor": f"{__name__}:NullMonitor"},
    # faust-streaming's opt-in repaired Cython paths (StreamIterator takes buffered values without awaiting).
    "cython": {"cython_optimizations": True},
}
PRESETS["tuned"] = {k: v for preset in PRESETS.values() for k, v in preset.items()}
# Not settings, handled in main(): "uvloop" really switches the loop (see use_uvloop), "quietlog" stops
# Topic.publish_message from building a DEBUG LogRecord (with findCaller) for every message sent.
PRESETS["uvloop"] = {}
PRESETS["quietlog"] = {}


def use_uvloop() -> None:
    """Select uvloop the way that works.

    Faust reads ``-L/--loop`` from ``sys.argv`` once, in ``faust/__init__.py`` at *import* time. A program
    that imports faust and then sets ``sys.argv = [..., "--loop", "uvloop", "worker", ...]`` before
    ``app.main()`` (as this file did, and as streams/cli/__init__.py does) silently keeps the default asyncio
    loop: the profile shows ``asyncio/base_events.py`` and ``selector_events.py`` frames. mode.loop.use()
    sets the event-loop policy before the worker creates its loop.
    """
    mode.loop.use("uvloop")


class NullMonitor(Monitor):
    """The Monitor with its per-message hooks made no-ops (its other state stays, as Faust reads it)."""

    def _noop(self, *args: Any, **kwargs: Any) -> None:
        return None

    on_message_in = on_stream_event_in = on_stream_event_out = on_message_out = _noop
    on_send_initiated = on_send_completed = track_tp_end_offset = _noop


# ----------------------------------------------------------------------------------------------------------
# fast-drain: the per-message wait_first in Consumer._drain_messages is the single largest Faust cost.


@types.coroutine
def _finish(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Continue driving *coro*, which already ran up to its first suspension and yielded *first*.

    This is what ``asyncio.Task`` does with a coroutine, done by hand so the coroutine's first step can run
    eagerly (without a task) and only the rare coroutine that really suspends pays for one.
    """
    value = first
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine, like Task does
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _finish(coro, first)


class FastDrainConsumer(faust_aiokafka.Consumer):
    """aiokafka Consumer whose drain loop does not create four tasks per message.

    Upstream ``_drain_messages`` runs ``await self.wait_first(callback(message), self.suspend_flow.wait())``
    for every message, so a rebalance (``suspend_flow`` set) can interrupt a callback that is blocked on a
    full stream buffer. Almost always the callback completes without ever suspending (the buffer has room),
    so here its first step runs inline; only when it yields (it is really blocked) is the rest wrapped in a
    task and raced against ``suspend_flow`` exactly as upstream does. Gap tracking, commit_every and the
    read-offset bookkeeping are unchanged.
    """

    async def _drain_messages(self, fetcher: mode.ServiceT) -> None:  # pragma: no cover - mirrors upstream
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = cast(mode.Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        flag_consumer_fetching = CONSUMER_FETCHING
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspend_flow = self.suspend_flow
        yield_every, num_since_yield = 100, 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if suspend_flow.is_set():
                                # Rebalancing: upstream's wait_first would return at once without
                                # delivering; do the same (the message is re-fetched after the rebalance).
                                continue
                            coro = cast(Coroutine[Any, Any, Any], callback(message))
                            try:
                                first = coro.send(None)
                            except StopIteration:
                                pass  # the common case: delivered without suspending, no task needed
                            else:
                                await self.wait_first(_resume(coro, first), suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class FastDrainTransport(faust_aiokafka.Transport):
    Consumer = FastDrainConsumer


def register_fast_drain() -> None:
    """Make ``broker="fastkafka://host:port"`` use :class:`FastDrainTransport` (a Faust transport alias)."""
    from faust.transport import drivers

    drivers.TRANSPORTS.aliases["fastkafka"] = f"{__name__}:FastDrainTransport"


# ----------------------------------------------------------------------------------------------------------
# aiokafka escape hatch inside the Faust worker.


class _FinishBatchFirst(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hold a rebalance until the batch in flight is produced and committed, so nothing is committed late."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.lock:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class AiokafkaRelay(mode.Service):
    """Stateless relay on a plain aiokafka consumer, living in (and stopped with) the Faust worker.

    Group id is ``<app id>-enrich`` so it never collides with the Faust app's own group. At-least-once:
    offsets are committed only after the broker acknowledged every record the batch produced.
    """

    def __init__(self, app: faust.App, in_topic: str, out_topic: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.in_topic, self.out_topic = in_topic, out_topic
        self.lock = asyncio.Lock()

    async def on_start(self) -> None:
        # aiokafka clients must be created inside the running loop (Faust's), hence here and not in __init__.
        bootstrap = [f"{u.host}:{u.port}" for u in self.app.conf.broker]
        kafka = connection_from_env(",".join(bootstrap))
        self.consumer = kafka.consumer(
            group_id=f"{self.app.conf.id}-enrich",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=16 << 20,
        )
        self.producer = kafka.producer(acks="all", linger_ms=5, max_batch_size=256 * 1024)
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.in_topic], listener=_FinishBatchFirst(self.lock))

    async def on_stop(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    @mode.Service.task
    async def _relay(self) -> None:
        consumer, send, out = self.consumer, self.producer.send, self.out_topic
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            if not batches:
                continue
            async with self.lock:
                futs = [await send(out, m.value, key=m.key) for msgs in batches.values() for m in msgs]
                await asyncio.gather(*futs)
                offsets = {tp: msgs[-1].offset + 1 for tp, msgs in batches.items()}
                with contextlib.suppress(Exception):  # revoked meanwhile: redelivered, at-least-once
                    await consumer.commit(offsets)


# ----------------------------------------------------------------------------------------------------------


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, _, raw = item.partition("=")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


@dataclass(frozen=True)
class RelayOptions:
    variant: str  # a variant, then +PRESET...
    bootstrap: str
    in_topic: str
    out_topic: str
    app_id: str
    data_dir: str
    partitions: int = 4
    batch: int = 1000  # take_events max
    within: float = 0.05  # take_events within (seconds)
    set: tuple[str, ...] = ()  # NAME=VALUE Faust settings


def build_app(args: RelayOptions) -> faust.App:
    variant, *presets = args.variant.split("+")
    scheme = "kafka"
    if variant == "fast-drain":
        register_fast_drain()
        scheme = "fastkafka"
    settings: dict[str, Any] = {
        "broker": f"{scheme}://{args.bootstrap}",
        "broker_credentials": connection_from_env(args.bootstrap).faust_credentials(),
        "store": "memory://",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "topic_partitions": args.partitions,
        "datadir": args.data_dir,
        "web_enabled": False,
    }
    for preset in presets:
        settings.update(PRESETS[preset])
    settings.update(parse_set(args.set))
    app = faust.App(args.app_id, **settings)
    in_topic = app.topic(args.in_topic, value_type=bytes, key_type=bytes)
    out_topic = app.topic(args.out_topic, value_type=bytes, key_type=bytes)
    n, within = args.batch, args.within

    if variant == "await-send":

        @app.agent(in_topic)
        async def relay(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                await out_topic.send(key=event.key, value=event.value)

    elif variant in ("take-batch", "fast-drain"):

        @app.agent(in_topic)
        async def relay_batch(stream: faust.StreamT[bytes]) -> None:
            # take_events exists on faust.Stream but not on the StreamT protocol.
            async for events in cast(faust.Stream[bytes], stream).take_events(n, within):
                # Queue the whole batch, then wait for the broker to acknowledge all of it: one round trip
                # per batch instead of per message. take_events acks the events only when we ask for the
                # next batch, i.e. after this loop body -- after delivery.
                futs: list[Awaitable[Any]] = [await out_topic.send(key=e.key, value=e.value) for e in events]
                await asyncio.gather(*futs)

    elif variant == "aiokafka":
        # app.service() is typed for a class, but an instance is accepted at runtime (and needed here).
        app.service(cast(Any, AiokafkaRelay(app, args.in_topic, args.out_topic)))
    else:
        raise SystemExit(f"unknown variant {variant!r}; one of {VARIANTS}")
    return app


def summarize_profile(path: str, top: int = 25) -> str:
    """Top frames of a py-spy ``--format raw`` (collapsed stacks) file: self %, inclusive %, by package."""
    import collections
    import re

    self_n: collections.Counter[str] = collections.Counter()
    incl_n: collections.Counter[str] = collections.Counter()
    pkg_self: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [re.sub(r":\d+\)$", ")", fr) for fr in stack.split(";")]
            self_n[frames[-1]] += n
            for fr in set(frames):
                incl_n[fr] += n
            m = re.search(r"\((.*)\)$", frames[-1])
            where = m.group(1) if m else frames[-1]
            pkg = next(
                (
                    p
                    for p in (
                        "faust",
                        "mode",
                        "aiokafka",
                        "asyncio",
                        "uvloop",
                        "selectors",
                        "threading",
                        "concurrent",
                        "bench",
                    )
                    if f"/{p}/" in where or f"{p}." in where or where.startswith(p)
                ),
                "other",
            )
            pkg_self[pkg] += n
    out = [f"{total} samples", "", "| self % | function |", "|---:|---|"]
    out += [f"| {100 * c / total:.1f} | `{fr}` |" for fr, c in self_n.most_common(top)]
    out += ["", "| inclusive % | function |", "|---:|---|"]
    out += [f"| {100 * c / total:.1f} | `{fr}` |" for fr, c in incl_n.most_common(top * 2)]
    out += ["", "| package (self) | % |", "|---|---:|"]
    out += [f"| {p} | {100 * c / total:.1f} |" for p, c in pkg_self.most_common()]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--summarize"]:
        print(summarize_profile(argv[1]))
        return
    relay(argv, prog_name="python -m bench.faust_relay")


@click.command(help=(__doc__ or "").replace("run alone::\n\n", "run alone:\n\n\b\n"))
@click.option("--variant", default="take-batch", help=f"one of {VARIANTS}, then +PRESET... ({list(PRESETS)})")
@click.option("--bootstrap", required=True)
@click.option("--in-topic", required=True)
@click.option("--out-topic", required=True)
@click.option("--app-id", required=True)
@click.option("--data-dir", required=True)
@click.option("--partitions", type=int, default=4, show_default=True)
@click.option("--batch", type=int, default=1000, show_default=True, help="take_events max")
@click.option("--within", type=float, default=0.05, show_default=True, help="take_events within (seconds)")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE", help="a Faust setting (repeatable)")
@click.option(
    "--log-level",
    default="warn",
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
    show_default=True,
)
def relay(
    variant: str,
    bootstrap: str,
    in_topic: str,
    out_topic: str,
    app_id: str,
    data_dir: str,
    partitions: int,
    batch: int,
    within: float,
    settings: tuple[str, ...],
    log_level: str,
) -> None:
    """Relay --in-topic to --out-topic with one variant (``--summarize FILE`` instead: a py-spy summary)."""
    args = RelayOptions(
        variant, bootstrap, in_topic, out_topic, app_id, data_dir, partitions, batch, within, settings
    )
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    presets = args.variant.split("+")[1:]
    if "uvloop" in presets:
        use_uvloop()
    if "quietlog" in presets:
        logging.getLogger("faust.topics").setLevel(logging.INFO)
    app = build_app(args)
    # NB: this --loop has no effect (faust reads it at import time); the "+uvloop" preset is what works.
    sys.argv = [sys.argv[0], "--loop", "uvloop", "worker", "-l", log_level, "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
