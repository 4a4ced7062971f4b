"""Real ``shudi worker`` processes stopped and restarted on the real broker, under a live stream of comments.

- killed with SIGKILL in the middle of the stream, a new worker (same app id, topics and data dir) takes over:
  nothing is lost, and the duplicates are bounded by the batches a flush may leave uncommitted;
- stopped with SIGTERM in the middle of the stream and started again, three times: nothing lost, nothing
  duplicated, every exit 0 (a stop waits for the batch in flight and flushes before it leaves);
- the enriched output topic deleted under a running worker: the enrichment loop fails, ``/healthz`` answers
  503 with the fatal reason, and the worker exits with code 70.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from streams.cli.errors import EXIT_FATAL
from streams.cli.send import produce_lines
from streams.devtools.mmdbbuild import build_demo_db, sample_ips
from streams.devtools.sample import sample_events
from streams.runtime.admin import create_topics
from streams.testing import WorkerProcess, run_settings

pytestmark = pytest.mark.integration

BACKLOG = 30_000  # waiting on the input topic when the first worker starts: it works flat out on batches
TAIL = 10_000  # then more arriving at TAIL_RATE, across the stop and the restart
TAIL_RATE = 2_000.0
BATCH_SIZE = 500
FLUSH_EVENTS = 4 * BATCH_SIZE
PARTITIONS = 4
# Most records a killed worker can have produced without committing them: the events waiting for the
# next flush (fewer than FLUSH_EVENTS before the last batch) and that batch.
IN_FLIGHT_BOUND = FLUSH_EVENTS + BATCH_SIZE
# Stop the first worker only after it enriched more than that bound, so a worker that never committed
# would show more duplicates than the bound allows.
STOP_AFTER = 2 * IN_FLIGHT_BOUND + 1000
# Graceful stops: larger batches, so that each SIGTERM most likely finds the worker in the middle of one;
# several stops, so that at least one does.
GRACEFUL_BATCH_SIZE = 5000
GRACEFUL_BACKLOG = 120_000
GRACEFUL_STOP_EVERY = 4000
# Records a stopping worker may still deliver, in batches: the one in flight when the signal came and the
# ones produced but not yet read back by the test.
STOP_SLACK_BATCHES = 5


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_db(tmp_path_factory.mktemp("geoip") / "demo.mmdb")


def worker_settings(
    bootstrap: str, uid: str, db: Path, tmp_path: Path, batch_size: int = BATCH_SIZE
) -> dict[str, str]:
    """One run's settings with a small batch and a shared data dir."""
    return run_settings(
        bootstrap,
        f"shudi-{uid}",
        partitions=PARTITIONS,
        SHUDI_GEOIP_DB=str(db),
        SHUDI_BATCH_SIZE=str(batch_size),
        SHUDI_FLUSH_EVENTS=str(FLUSH_EVENTS),
        # Every worker of a test gets the same data dir, as a restarted pod keeps its volume.
        SHUDI_DATA_DIR=str(tmp_path / "shudi-data"),
    )


class EnrichedReader:
    """Reads the enriched topic from its beginning for the whole test, counting each event_id."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.seen: Counter[str] = Counter()

    @property
    def records(self) -> int:
        return self.seen.total()

    async def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            batch = await self.consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000) + 1, max_records=5000)
            for records in batch.values():
                self.seen.update(json.loads(r.value)["event_id"] for r in records if r.value is not None)

    async def wait_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} after {timeout:.0f}s ({self.records} records read)")
            await self.read(0.2)

    async def wait_for_records(self, n: int, timeout: float) -> None:  # noqa: ASYNC109
        await self.wait_until(lambda: self.records >= n, timeout, f"{n} records enriched")


@contextlib.asynccontextmanager
async def enriched_reader(bootstrap: str, topic: str) -> AsyncIterator[EnrichedReader]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        yield EnrichedReader(consumer)
    finally:
        await consumer.stop()


@contextlib.contextmanager
def stopped_at_end(*workers: WorkerProcess) -> Iterator[None]:
    """Whatever happens, no worker outlives its test."""
    try:
        yield
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.kill()


def run_with_restarts(
    bootstrap: str,
    settings: dict[str, str],
    demo_db: Path,
    workers: list[WorkerProcess],
    stop: Callable[[WorkerProcess], None],
    backlog: int,
    stop_every: int,
    batch_size: int,
) -> tuple[Counter[str], list[str], list[int]]:
    """``backlog`` comments wait on the input topic, TAIL more arrive at TAIL_RATE. The workers take turns:
    each but the last is stopped with ``stop`` once it enriched ``stop_every`` more records (it is then in
    the middle of its batches), and the next one started. Returns the event_ids the enriched topic holds once
    every event came out (read a few seconds more for duplicates), the ids sent, and the records enriched by
    each stop. The last worker is left running."""
    n_events = backlog + TAIL
    ips = sample_ips(demo_db, None, n=400, seed=5)
    events = [e.value for e in sample_events(ips, n_events, bad_fraction=0.0, seed=17)]
    ids = [json.loads(value)["event_id"] for value in events]
    input_topic = settings["SHUDI_INPUT_TOPIC"]

    async def scenario() -> tuple[Counter[str], list[int]]:
        at_stops: list[int] = []
        async with enriched_reader(bootstrap, settings["SHUDI_ENRICHED_TOPIC"]) as reader:
            tail = asyncio.create_task(
                produce_lines(bootstrap, input_topic, events[backlog:], rate=TAIL_RATE)
            )
            for i, worker in enumerate(workers):
                if i > 0:
                    worker.start()
                    await asyncio.to_thread(worker.wait_ready)
                if i == len(workers) - 1:
                    break
                # min(): a late worker may have little left to do before the input is drained
                await reader.wait_for_records(min(reader.records + stop_every, n_events), 60)
                at_signal = reader.records
                await asyncio.to_thread(stop, worker)
                await reader.read(1.0)  # whatever the worker delivered before it went
                at_stops.append(reader.records)
                # The loop takes no batch once the stop begins (app.worker_class): what comes out
                # after the signal is what was in flight or not yet read back, never the rest of the backlog.
                after_signal = reader.records - at_signal
                assert after_signal <= STOP_SLACK_BATCHES * batch_size, (
                    f"{after_signal} records enriched after the stop signal (at {at_signal})"
                )
            assert all(at < n_events for at in at_stops[:2]), f"not stopped mid-run: {at_stops}"
            await tail
            want = set(ids)
            await reader.wait_until(lambda: want <= reader.seen.keys(), 80, "every event enriched")
            await reader.read(3.0)  # duplicates, if any, come out too
            return reader.seen, at_stops

    # The worker would create the input topic itself; the backlog has to be there before it starts.
    asyncio.run(create_topics(bootstrap, {input_topic: PARTITIONS}))
    asyncio.run(produce_lines(bootstrap, input_topic, events[:backlog]))
    workers[0].start()
    workers[0].wait_ready()
    seen, at_stops = asyncio.run(scenario())
    return seen, ids, at_stops


def duplicates(seen: Counter[str]) -> int:
    return sum(n - 1 for n in seen.values() if n > 1)


def test_kill_9_mid_stream_loses_nothing(
    kafka_bootstrap: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    """The replacement takes ~60 s to start consuming: Faust's own group waits out the killed member's
    session (Faust's broker_session_timeout, 60 s by default, which shudi does not set)."""
    started = time.monotonic()
    settings = worker_settings(kafka_bootstrap, uid, demo_db, tmp_path)
    first = WorkerProcess.configure(tmp_path, "worker-1", settings)
    second = WorkerProcess.configure(tmp_path, "worker-2", settings)
    with stopped_at_end(first, second):
        seen, ids, at_kill = run_with_restarts(
            kafka_bootstrap,
            settings,
            demo_db,
            [first, second],
            WorkerProcess.kill,
            BACKLOG,
            STOP_AFTER,
            BATCH_SIZE,
        )
        exit_code = second.stop()
    assert first.proc is not None
    assert first.proc.returncode == -9
    assert exit_code == 0, second.log()[-4000:]

    missing = set(ids) - seen.keys()
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert seen.keys() == set(ids), "nothing but the input comes out"
    dup = duplicates(seen)
    assert dup <= IN_FLIGHT_BOUND, (
        f"{dup} duplicates after a kill at {at_kill} enriched records: more than the batches one flush may "
        f"leave uncommitted ({IN_FLIGHT_BOUND}) were delivered again, so commits did not follow the flushes"
    )
    print(
        f"kill -9 at {at_kill}/{len(ids)} enriched; {dup} duplicates (bound {IN_FLIGHT_BOUND}); "
        f"{time.monotonic() - started:.1f}s"
    )


GRACEFUL_STOPS = 3


def test_graceful_restarts_mid_stream_no_duplicates(
    kafka_bootstrap: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    started = time.monotonic()
    settings = worker_settings(kafka_bootstrap, uid, demo_db, tmp_path, batch_size=GRACEFUL_BATCH_SIZE)
    workers = [
        WorkerProcess.configure(tmp_path, f"worker-{i + 1}", settings) for i in range(GRACEFUL_STOPS + 1)
    ]
    exits: list[int] = []

    def graceful(worker: WorkerProcess) -> None:
        exits.append(worker.stop())

    with stopped_at_end(*workers):
        seen, ids, at_stops = run_with_restarts(
            kafka_bootstrap,
            settings,
            demo_db,
            workers,
            graceful,
            GRACEFUL_BACKLOG,
            GRACEFUL_STOP_EVERY,
            GRACEFUL_BATCH_SIZE,
        )
        exits.append(workers[-1].stop())

    missing = set(ids) - seen.keys()
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert seen.keys() == set(ids)
    dup = duplicates(seen)
    fatal = [w.log_path.name for w in workers if "enrichment loop failed" in w.log()]
    refused = [w.log_path.name for w in workers if "commit refused" in w.log()]
    print(
        f"SIGTERM at {at_stops} of {len(ids)} enriched; exit codes {exits}; {dup} duplicates; "
        f"fatal in {fatal}; commit refused in {refused}; {time.monotonic() - started:.1f}s"
    )
    assert (exits, dup) == ([0] * len(workers), 0), (
        f"graceful stops at {at_stops} enriched records: exit codes {exits}, {dup} duplicates; "
        f"loop failed in {fatal}, commit refused in {refused}"
    )


def healthz(port: int) -> tuple[int, str] | None:
    """Status and body of the worker's /healthz; None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode().strip()
    except OSError:
        return None


def test_output_topic_deleted_is_fatal_exit_70_and_healthz_503(
    kafka_bootstrap: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    """A real failure the loop cannot get past: its output topic deleted (the broker does not auto-create
    topics). The producer cannot deliver; after its request timeout (aiokafka's default 40 s, the worker has
    no setting for it) the batch fails, the loop marks the worker fatal and it exits 70."""
    settings = worker_settings(kafka_bootstrap, uid, demo_db, tmp_path)
    ips = sample_ips(demo_db, None, n=50, seed=7)
    events = [e.value for e in sample_events(ips, 2000, bad_fraction=0.0, seed=23)]
    worker = WorkerProcess.configure(tmp_path, "worker", settings)
    answers: Counter[tuple[int, str] | None] = Counter()

    async def delete_output_topic() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            response = await admin.delete_topics([settings["SHUDI_ENRICHED_TOPIC"]], timeout_ms=30_000)
        finally:
            await admin.close()
        assert all(entry[1] == 0 for entry in response.topic_error_codes), response

    with stopped_at_end(worker):
        worker.start()
        worker.wait_ready()
        # The worker works first: some events through.
        asyncio.run(produce_lines(kafka_bootstrap, settings["SHUDI_INPUT_TOPIC"], events[:1000]))
        deadline = time.monotonic() + 30
        while (answer := healthz(worker.metrics_port)) != (200, "ok") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer == (200, "ok"), answer
        asyncio.run(delete_output_topic())
        t_deleted = time.monotonic()
        asyncio.run(produce_lines(kafka_bootstrap, settings["SHUDI_INPUT_TOPIC"], events[1000:]))

        assert worker.proc is not None
        deadline = time.monotonic() + 75
        while worker.proc.poll() is None and time.monotonic() < deadline:
            answers[healthz(worker.metrics_port)] += 1
            time.sleep(0.05)
        exit_code = worker.proc.poll()
        failed_after = time.monotonic() - t_deleted

    log = worker.log()
    assert exit_code == EXIT_FATAL, (
        f"exit code {exit_code} {failed_after:.0f}s after the delete:\n{log[-4000:]}"
    )
    fatal = [a for a in answers if a is not None and a[0] == 503]
    assert fatal, f"/healthz never answered 503 before the exit; answers: {dict(answers)}"
    assert all(body.startswith("fatal: ") for _, body in fatal), fatal
    assert "enrichment loop failed, stopping the worker" in log
    print(f"exit {exit_code} {failed_after:.1f}s after the delete; /healthz answers {dict(answers)}")
