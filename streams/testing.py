"""What the tests, the demo and the benchmarks share: child and worker processes, free ports, the env of a
run, caches, reading topics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from streams.runtime.kafka import KafkaConnection


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def user_cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/shudi``: what development tools keep between runs (jars, databases)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "shudi"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def child_env(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``SHUDI_*`` (a developer's own settings must not leak into a
    run), plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHUDI_")}
    env.update(settings or {})
    return env


def run_settings(bootstrap: str, run: str, *, partitions: int = 4, **extra: str) -> dict[str, str]:
    """The ``SHUDI_*`` settings of one run of the pipeline on ``bootstrap`` that no other run shares: the app
    id is ``run`` and every topic is named after it, so state or records of an earlier run never show up.
    ``extra`` adds or overrides settings (``SHUDI_GEOIP_DB=...``)."""
    return {
        "SHUDI_BROKER": bootstrap,
        "SHUDI_APP_ID": run,
        "SHUDI_INPUT_TOPIC": f"comments-{run}",
        "SHUDI_ENRICHED_TOPIC": f"comments.enriched-{run}",
        "SHUDI_DLQ_TOPIC": f"comments.dlq-{run}",
        "SHUDI_COUNTS_TOPIC": f"territory.counts-{run}",
        "SHUDI_BURSTS_TOPIC": f"territory.bursts-{run}",
        "SHUDI_PARTITIONS": str(partitions),
        **extra,
    }


@dataclass
class ChildProcess:
    """A subprocess whose output goes to a log file: started, watched and stopped by its parent.

    The first :meth:`start` of an object writes a fresh log; a restart appends to it. With ``new_session``
    the child gets its own session, so a Ctrl-C in the terminal reaches only the parent, which then stops it.
    """

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    new_session: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log_path.open("ab" if self.proc is not None else "wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.new_session,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def send_signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0, sig: signal.Signals = signal.SIGTERM) -> int:
        """``sig`` and wait; returns the exit code (SIGKILL after ``timeout``, then -9)."""
        assert self.proc is not None
        self.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().replace("\r", "\n").splitlines()[-lines:])


def stop_all(procs: Iterable[ChildProcess], timeout: float = 30.0) -> None:
    """SIGTERM every process first, then wait for each: they shut down side by side, not one by one.
    Processes never started are skipped."""
    procs = [p for p in procs if p.proc is not None]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.stop(timeout)


WORKER_READY = "[^Worker]: Ready"  # what Faust logs once partitions are assigned and recovery is done


@dataclass
class WorkerProcess(ChildProcess):
    """One ``shudi worker`` subprocess with its own ports, data dir and log file."""

    metrics_port: int = 0

    @classmethod
    def configure(
        cls, tmp: Path, name: str, settings: Mapping[str, str], *, new_session: bool = False
    ) -> WorkerProcess:
        """A worker named ``name`` whose data dir and log are in ``tmp``, its metrics and web ports free
        ones; ``settings`` add to and override that (``SHUDI_METRICS_PORT`` too)."""
        env = child_env(
            {
                "SHUDI_METRICS_HOST": "127.0.0.1",
                "SHUDI_METRICS_PORT": str(free_port()),
                "SHUDI_WEB_PORT": str(free_port()),
                "SHUDI_DATA_DIR": str(tmp / f"{name}-data"),
                "SHUDI_GEOIP_RELOAD_INTERVAL_S": "1",
                **settings,
            }
        )
        return cls(
            name,
            shudi_command("worker"),
            env,
            tmp / f"{name}.log",
            new_session=new_session,
            metrics_port=int(env["SHUDI_METRICS_PORT"]),
        )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def healthz_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/healthz"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
            body: bytes = resp.read()
        return body.decode()

    def ready(self, times: int = 1) -> bool:
        """Whether Faust logged ``times`` times that the worker is ready (a restart appends to the log)."""
        return self.log().count(WORKER_READY) >= times

    def wait_ready(self, timeout: float = 120.0, *, times: int = 1) -> None:
        """Until Faust logs that the worker is ready (partitions assigned, recovery done); after a restart,
        ``times`` is the number of starts so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"worker exited with {self.returncode()}:\n{self.log()[-4000:]}")
            if self.ready(times):
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-4000:]}")


def shudi_command(*args: str) -> list[str]:
    """The argv of ``shudi ARGS...`` run by this interpreter."""
    return [sys.executable, "-m", "streams.cli", *args]


def metric_value(exposition: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of one sample in a Prometheus text exposition."""
    wanted = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    head = f"{name}{{{wanted}}}" if wanted else name
    for line in exposition.splitlines():
        if line.startswith(head + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def read_topics(
    kafka: KafkaConnection | str,
    topics: Iterable[str],
    *,
    until: int,
    timeout: float = 180.0,  # noqa: ASYNC109 -- a plain deadline for a polling loop
    settle: float = 3.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topics`` from the start: reads until ``until`` records arrived (or ``timeout``),
    then ``settle`` seconds more so that duplicates, if any, show up too."""
    consumer = KafkaConnection.of(kafka).consumer(
        *topics,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for recs in batch.values():
                records.extend(recs)
            if settle_until is None and len(records) >= until:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        await consumer.stop()
    return records
