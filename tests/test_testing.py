"""streams.testing: the child processes, ports and per-run settings the tests, the demo and the benchmarks
share."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from streams.testing import (
    ChildProcess,
    WorkerProcess,
    child_env,
    free_port,
    port_in_use,
    run_settings,
    stop_all,
)


def _python(tmp_path: Path, name: str, code: str) -> ChildProcess:
    return ChildProcess(name, [sys.executable, "-c", code], child_env(), tmp_path / f"{name}.log")


def test_run_settings_name_every_topic_and_the_app_after_the_run() -> None:
    s = run_settings("127.0.0.1:9", "run-7", partitions=3)
    assert s["SHUDI_BROKER"] == "127.0.0.1:9"
    assert s["SHUDI_APP_ID"] == "run-7"
    assert s["SHUDI_PARTITIONS"] == "3"
    topics = [v for k, v in s.items() if k.endswith("_TOPIC")]
    assert len(topics) == len(set(topics)) == 5
    assert all(t.endswith("-run-7") for t in topics)


def test_child_env_drops_the_callers_shudi_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHUDI_APP_ID", "mine")
    monkeypatch.setenv("SHUDI_TEST_OTHER", "x")
    env = child_env({"SHUDI_BROKER": "b:1"})
    assert env["SHUDI_BROKER"] == "b:1"
    assert not {"SHUDI_APP_ID", "SHUDI_TEST_OTHER"} & set(env)
    assert env["PATH"] == os.environ["PATH"]


def test_port_in_use_and_free_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_in_use(s.getsockname()[1])
    assert not port_in_use(free_port())


def test_child_process_logs_and_a_restart_appends(tmp_path: Path) -> None:
    p = _python(tmp_path, "hello", "print('hello', flush=True)")
    for _ in range(2):
        p.start()
        assert p.proc is not None
        assert p.proc.wait(30) == 0
        assert p.stop() == 0  # already gone: its exit code
    assert p.log().split() == ["hello", "hello"]
    fresh = _python(tmp_path, "hello", "print('again', flush=True)")  # a new object: a fresh log
    fresh.start()
    assert fresh.proc is not None
    fresh.proc.wait(30)
    assert fresh.tail() == "again"


def test_stop_signals_then_kills_after_the_timeout(tmp_path: Path) -> None:
    stubborn = _python(
        tmp_path,
        "stubborn",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n",
    )
    polite = _python(tmp_path, "polite", "import time; time.sleep(60)")
    stubborn.start()
    polite.start()
    while "up" not in stubborn.log():
        assert stubborn.running()
        time.sleep(0.05)
    stop_all([stubborn, polite], timeout=1)
    assert not stubborn.running()
    assert not polite.running()
    assert stubborn.returncode() == -signal.SIGKILL
    assert polite.returncode() == -signal.SIGTERM


def test_worker_process_takes_its_metrics_port_from_the_settings(tmp_path: Path) -> None:
    w = WorkerProcess.configure(tmp_path, "w", {"SHUDI_METRICS_PORT": "9999", "SHUDI_APP_ID": "a"})
    assert w.metrics_port == 9999
    assert w.metrics_url == "http://127.0.0.1:9999/metrics"
    assert w.env["SHUDI_DATA_DIR"] == str(tmp_path / "w-data")
    assert w.log_path == tmp_path / "w.log"
    assert w.args[-1] == "worker"
    auto = WorkerProcess.configure(tmp_path, "v", {})
    assert auto.metrics_port == int(auto.env["SHUDI_METRICS_PORT"]) > 0


def test_stop_all_skips_processes_never_started(tmp_path: Path) -> None:
    never = _python(tmp_path, "never", "pass")
    stop_all([never])
    assert never.returncode() is None
