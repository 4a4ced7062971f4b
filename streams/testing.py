"""What the tests, the demo and the benchmarks share: worker processes, free ports, caches, reading topics."""

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


@dataclass
class WorkerProcess:
    """One ``shudi worker`` subprocess with its own ports, data dir and log file."""

    env: dict[str, str]
    log_path: Path
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def configure(cls, tmp: Path, name: str, settings: Mapping[str, str]) -> WorkerProcess:
        metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHUDI_")}
        env.update(
            {
                "SHUDI_METRICS_HOST": "127.0.0.1",
                "SHUDI_METRICS_PORT": str(metrics_port),
                "SHUDI_WEB_PORT": str(free_port()),
                "SHUDI_DATA_DIR": str(tmp / f"{name}-data"),
                "SHUDI_GEOIP_RELOAD_INTERVAL_S": "1",
                **settings,
            }
        )
        return cls(env=env, log_path=tmp / f"{name}.log", metrics_port=metrics_port)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``, then -9)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
        return body.decode()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until Faust logs that the worker is ready (partitions assigned, recovery done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if "[^Worker]: Ready" in self.log():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-4000:]}")


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
