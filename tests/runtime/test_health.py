"""streams.runtime.health: liveness and readiness on a fake clock, the HTTP endpoint, `shudi healthcheck`."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, Counter

from streams.cli import main
from streams.runtime import health as health_module
from streams.runtime.health import Health, serve, storage_failure
from streams.testing import free_port

STALL = 30.0


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> Health:
    return Health(stall_timeout_s=STALL, clock=clock)


# --------------------------------------------------------------------------- verdicts


def test_starting_is_live_but_not_ready(health: Health, clock: FakeClock) -> None:
    clock.advance(10 * STALL)  # however long the start takes, a starting worker is not restarted
    assert health.liveness() == (True, "starting")
    assert health.readiness() == (False, "starting")


def test_started_is_live_and_ready(health: Health, clock: FakeClock) -> None:
    health.mark_started()
    clock.advance(STALL / 2)
    assert health.liveness() == (True, "ok")
    assert health.readiness() == (True, "ok")


def test_polling_with_decreasing_lag_stays_live(health: Health, clock: FakeClock) -> None:
    health.mark_started()
    for lag in (5000, 4000, 2500, 1000, 10, 0):
        clock.advance(STALL * 0.9)  # each step alone is within the timeout; together far beyond it
        health.polled(lag)
        assert health.liveness() == (True, "ok"), lag
        assert health.readiness() == (True, "ok"), lag


def test_processed_batches_count_as_progress_even_if_lag_grows(health: Health, clock: FakeClock) -> None:
    health.mark_started()
    for lag in (100, 200, 300, 400):
        clock.advance(STALL * 0.9)
        health.progressed()
        health.polled(lag)
        assert health.liveness() == (True, "ok"), lag


def test_idle_with_no_lag_stays_live(health: Health, clock: FakeClock) -> None:
    health.mark_started()
    for _ in range(10):
        clock.advance(STALL * 0.9)
        health.polled(0)
    assert health.liveness() == (True, "ok")


def test_lag_without_progress_beyond_stall_timeout_is_not_live(health: Health, clock: FakeClock) -> None:
    health.mark_started()
    health.polled(42)
    for _ in range(4):  # still polling, but the lag never goes down
        clock.advance(STALL / 4)
        health.polled(42)
    assert health.liveness() == (True, "ok"), "exactly at the timeout is still within it"
    clock.advance(1.0)
    health.polled(42)
    live, why = health.liveness()
    assert not live
    assert "42 messages behind" in why
    assert "no progress for 31s" in why
    assert health.readiness() == (False, why)
    # Progress again: live again.
    health.polled(41)
    assert health.liveness() == (True, "ok")


def test_no_poll_beyond_stall_timeout_is_not_live(health: Health, clock: FakeClock) -> None:
    health.mark_started()
    health.polled(0)
    clock.advance(STALL + 5)
    live, why = health.liveness()
    assert not live
    assert why == "consumer loop has not polled for 35s"
    assert health.readiness() == (False, why)
    health.polled(0)
    assert health.liveness() == (True, "ok")


def test_fatal_is_neither_live_nor_ready(health: Health, clock: FakeClock) -> None:
    health.mark_started()
    health.polled(0)
    health.mark_fatal("KafkaTimeoutError")
    assert health.liveness() == (False, "fatal: KafkaTimeoutError")
    assert health.readiness() == (False, "fatal: KafkaTimeoutError")
    health.polled(0)  # nothing after a fatal error makes the worker healthy again
    assert health.liveness()[0] is False


def test_fatal_while_starting_is_not_live(health: Health) -> None:
    health.mark_fatal("KafkaConnectionError")
    assert health.liveness() == (False, "fatal: KafkaConnectionError")
    assert health.readiness() == (False, "fatal: KafkaConnectionError")


# --------------------------------------------------------------------------- HTTP


@dataclass
class Served:
    base: str
    health: Health
    clock: FakeClock
    registry: CollectorRegistry


@pytest.fixture
def served(health: Health, clock: FakeClock) -> Iterator[Served]:
    registry = CollectorRegistry()
    counter = Counter("shudi_test_things", "Things counted by the test.", registry=registry)
    counter.inc(3)
    server: ThreadingHTTPServer = serve("127.0.0.1", free_port(), registry, health)
    try:
        host, port = server.server_address[:2]
        yield Served(f"http://{host!s}:{port}", health, clock, registry)
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 -- our own loopback server
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_serves_the_registry(served: Served) -> None:
    status, content_type, body = get(served.base + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "# HELP shudi_test_things_total Things counted by the test." in body
    assert "# TYPE shudi_test_things_total counter" in body
    assert "shudi_test_things_total 3.0" in body.splitlines()
    # Served live from the registry, not a snapshot.
    Counter("shudi_test_more", "Registered after the server started.", registry=served.registry).inc()
    assert "shudi_test_more_total 1.0" in get(served.base + "/metrics")[2].splitlines()


def test_healthz_and_readyz_follow_health(served: Served) -> None:
    h, clock = served.health, served.clock
    assert get(served.base + "/healthz") == (200, "text/plain; charset=utf-8", "starting\n")
    assert get(served.base + "/readyz") == (503, "text/plain; charset=utf-8", "starting\n")

    h.mark_started()
    assert get(served.base + "/healthz")[:3:2] == (200, "ok\n")
    assert get(served.base + "/readyz?verbose=1")[:3:2] == (200, "ok\n"), "the query string is ignored"

    h.polled(7)
    clock.advance(STALL + 1)
    h.polled(7)
    status, _, body = get(served.base + "/healthz")
    assert status == 503
    assert "7 messages behind" in body
    assert get(served.base + "/readyz")[0] == 503

    h.polled(0)
    assert get(served.base + "/healthz")[:3:2] == (200, "ok\n")

    h.mark_fatal("KafkaTimeoutError")
    assert get(served.base + "/healthz")[:3:2] == (503, "fatal: KafkaTimeoutError\n")
    assert get(served.base + "/readyz")[:3:2] == (503, "fatal: KafkaTimeoutError\n")


def test_other_paths_are_404(served: Served) -> None:
    for path in ("/", "/health", "/metrics/x", "/healthz/", "/favicon.ico"):
        status, content_type, body = get(served.base + path)
        assert status == 404, path
        assert content_type == "text/plain; charset=utf-8"
        assert "/metrics" in body


# --------------------------------------------------------------------------- shudi healthcheck


def test_healthcheck_exit_0_when_healthy(served: Served) -> None:
    served.health.mark_started()
    result = CliRunner().invoke(main, ["healthcheck", "--url", served.base + "/healthz"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok"


def test_healthcheck_exit_1_when_unhealthy(served: Served) -> None:
    served.health.mark_started()
    served.health.mark_fatal("KafkaTimeoutError")
    result = CliRunner().invoke(main, ["healthcheck", "--url", served.base + "/healthz"])
    assert result.exit_code == 1, result.output
    assert "unhealthy: fatal: KafkaTimeoutError" in result.stderr


def test_healthcheck_exit_1_when_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"  # nothing listens there
    result = CliRunner().invoke(main, ["healthcheck", "--url", url])
    assert result.exit_code == 1, result.output
    assert "unreachable:" in result.stderr


def test_stop_worker_fails_liveness_and_signals_the_worker_to_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead stage (the enrichment loop, the counting agent) must not leave a live, idle worker."""
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))
    health = Health(stall_timeout_s=60)
    health.stop_worker("counting agent", TypeError("boom"))
    assert health.liveness() == (False, "fatal: counting agent: TypeError")
    assert signals == [(os.getpid(), signal.SIGTERM)]


# What rocksdict raised in the disk-full row of bench.faults (RocksDB's Status text, a plain Exception).
ROCKSDB_ENOSPC = (
    "IO error: No space left on device: While appending to file: /data/v1/tables/shudi-windows-0.db/"
    "000004.log: No space left on device"
)


@pytest.mark.parametrize(
    "exc",
    [
        Exception(ROCKSDB_ENOSPC),
        Exception(
            "IO error: While open a file for appending: /data/v1/tables/x.db/LOG: Read-only file system"
        ),
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        OSError(errno.EROFS, os.strerror(errno.EROFS)),
    ],
)
def test_a_data_directory_that_takes_no_writes_is_a_storage_failure(exc: BaseException) -> None:
    assert storage_failure(exc) is not None
    wrapped = RuntimeError("table write failed")
    wrapped.__cause__ = exc
    assert storage_failure(wrapped) is not None


@pytest.mark.parametrize("exc", [TypeError("boom"), OSError(errno.ECONNREFUSED, "refused"), Exception("")])
def test_other_failures_are_not_storage_failures(exc: BaseException) -> None:
    assert storage_failure(exc) is None


def test_a_storage_failure_stops_the_worker_once_with_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))
    armed: list[float] = []
    monkeypatch.setattr(health_module, "arm_stop_watchdog", lambda deadline_s: armed.append(deadline_s))
    health = Health(stall_timeout_s=60)
    health.stop_worker("counting agent", Exception(ROCKSDB_ENOSPC))
    # Faust restarts the crashed agent, which fails again on the same store: no second stop.
    health.stop_worker("counting agent", Exception(ROCKSDB_ENOSPC))
    assert signals == [(os.getpid(), signal.SIGTERM)]
    assert armed == [health.storage_stop_deadline_s]
    assert health.liveness() == (False, "fatal: counting agent: data directory not writable")
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    assert critical[0].exc_info is None  # one line, no traceback
    assert "No space left on device" in critical[0].getMessage()
    assert "data directory" in critical[0].getMessage()


def test_a_storage_failure_ends_a_worker_whose_stop_hangs_sooner() -> None:
    """Faust's stop waits for the acks of the agent that died until the 50 s watchdog; a storage failure
    arms its own, shorter one (here 0.5 s), and the process exits 70."""
    code = (
        "import logging, os, signal, time\n"
        "from streams.runtime.health import Health\n"
        "logging.basicConfig()\n"
        "signal.signal(signal.SIGTERM, lambda *a: None)  # a stop that never ends\n"
        "h = Health(stall_timeout_s=60, storage_stop_deadline_s=0.5)\n"
        "h.stop_worker('counting agent', OSError(28, os.strerror(28)))\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=100, check=False
    )
    assert proc.returncode == 70, proc.stderr
    assert "cannot write the data directory" in proc.stderr, proc.stderr


def test_the_stop_watchdog_ends_a_process_whose_stop_hangs() -> None:
    """Once a stop began, a worker still alive after the deadline exits 70 with a line saying why (Faust's
    own stop once waited for its streams for good after a broker restart)."""
    code = (
        "import logging, time\n"
        "from streams.runtime.health import arm_stop_watchdog\n"
        "logging.basicConfig()\n"
        "arm_stop_watchdog(0.5)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=100, check=False
    )
    assert proc.returncode == 70, proc.stderr
    assert "did not stop within" in proc.stderr, proc.stderr


def test_the_stop_watchdog_lets_a_process_that_stops_in_time_exit_as_it_would() -> None:
    code = "from streams.runtime.health import arm_stop_watchdog\narm_stop_watchdog(60)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=100, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_the_stop_watchdog_names_where_each_task_of_the_loop_waits() -> None:
    """The exit line alone says that the stop hung, not on what: the watchdog lists each pending task of the
    loop with its await chain down to the innermost wait."""
    code = (
        "import asyncio, logging, time\n"
        "from streams.runtime.health import arm_stop_watchdog\n"
        "logging.basicConfig()\n"
        "async def commit_that_never_ends():\n"
        "    await asyncio.Event().wait()\n"
        "async def stop():\n"
        "    await commit_that_never_ends()\n"
        "async def main():\n"
        "    task = asyncio.create_task(stop(), name='the-stop')\n"
        "    await asyncio.sleep(0)  # the task starts and reaches its wait\n"
        "    arm_stop_watchdog(0.5, loop=asyncio.get_running_loop())\n"
        "    time.sleep(120)  # the loop itself is stuck, as a hung stop would leave it\n"
        "    await task\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=100, check=False
    )
    assert proc.returncode == 70, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "task the-stop" in x)
    assert "stop > " in line, line
    assert "commit_that_never_ends > " in line, line
    assert " wait" in line, line
    assert "did not stop within" in proc.stderr.splitlines()[-1], proc.stderr
