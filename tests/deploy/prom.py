"""A real Prometheus server for tests: Debian's ``prometheus`` binary on a free loopback port.

Used by tests/deploy to check rule files and dashboard queries against the real query engine (a PromQL
parse error is an HTTP 400 from ``/api/v1/query``), and meant to scrape real workers too::

    with run_prometheus(tmp_path, scrape_targets=["127.0.0.1:9464", "127.0.0.1:9465"],
                        rule_files=[RULES]) as prom:
        prom.wait_for_targets_up(timeout=30)
        body = prom.query("sum(shudi:events:rate1m)")

Each server gets a throwaway ``--storage.tsdb.path`` under the given directory and a config written as JSON
(which is YAML). It listens on 127.0.0.1 only and is stopped (SIGTERM, then SIGKILL) on exit. The binary
is required: CI installs Debian's ``prometheus`` package, so a missing binary is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.testing import free_port

JsonObj = dict[str, Any]


def find_binary(name: str) -> str:
    """Path of ``prometheus`` or ``promtool``; an AssertionError (a test failure) when absent."""
    path = shutil.which(name)
    assert path, f"{name} not found on PATH: install Debian's `prometheus` package (CI does)"
    return path


def write_config(
    path: Path,
    scrape_targets: Sequence[str] = (),
    rule_files: Sequence[Path] = (),
    *,
    job: str = "shudi",
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    scrape_self: bool = False,
    self_port: int | None = None,
) -> None:
    """A minimal prometheus.yml: the job ``job`` scraping ``scrape_targets`` (host:port, path /metrics)."""
    scrape_configs: list[JsonObj] = []
    if scrape_targets:
        scrape_configs.append(
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(scrape_targets)}],
            }
        )
    if scrape_self and self_port is not None:
        scrape_configs.append(
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{self_port}"]}]}
        )
    config: JsonObj = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
        "scrape_configs": scrape_configs,
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


@dataclass
class PrometheusServer:
    """A running server: ``url`` is ``http://127.0.0.1:PORT``; ``log_path`` holds its stderr."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    # --- HTTP API ---
    def api(self, path: str, params: Mapping[str, str] | None = None, *, post: bool = False) -> JsonObj:
        """The decoded JSON body of an API call, error bodies (4xx/5xx with a JSON body) included."""
        data = urllib.parse.urlencode(params or {}).encode()
        if post:
            req = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")  # noqa: S310 -- http URL we build
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        else:
            query = f"?{data.decode()}" if params else ""
            req = urllib.request.Request(f"{self.url}{path}{query}")  # noqa: S310 -- http URL we build
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 -- http URL we build
                body: JsonObj = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                body = json.loads(raw)
            except ValueError:
                text = raw.decode(errors="replace")
                body = {"status": "error", "errorType": f"http {err.code}", "error": text}
            body.setdefault("httpStatus", err.code)
        return body

    def query(self, expr: str, at: float | None = None) -> JsonObj:
        """``/api/v1/query`` (instant); ``status`` is ``success`` or ``error`` (a parse error is a 400)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("/api/v1/query", params, post=True)

    def query_range(self, expr: str, start: float, end: float, step: str = "15s") -> JsonObj:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step}
        return self.api("/api/v1/query_range", params, post=True)

    def series(self, match: str) -> list[JsonObj]:
        body = self.api("/api/v1/series", {"match[]": match})
        assert body["status"] == "success", body
        result: list[JsonObj] = body["data"]
        return result

    def rule_groups(self) -> list[JsonObj]:
        """Loaded rule groups as Prometheus parsed them: ``rules`` with name, query, labels, annotations."""
        body = self.api("/api/v1/rules")
        assert body["status"] == "success", body
        groups: list[JsonObj] = body["data"]["groups"]
        return groups

    def targets(self) -> list[JsonObj]:
        body = self.api("/api/v1/targets", {"state": "active"})
        assert body["status"] == "success", body
        active: list[JsonObj] = body["data"]["activeTargets"]
        return active

    # --- waiting ---
    def wait_for_targets_up(self, timeout: float = 30.0, job: str | None = None) -> list[JsonObj]:
        """Until every active target (of ``job``, if given) has been scraped successfully."""
        deadline = time.monotonic() + timeout
        while True:
            targets = [t for t in self.targets() if job is None or t["labels"].get("job") == job]
            if targets and all(t["health"] == "up" for t in targets):
                return targets
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not up after {timeout}s: {targets}")
            time.sleep(0.25)

    def wait_for_data(self, expr: str, timeout: float = 30.0) -> JsonObj:
        """Until an instant query of ``expr`` returns a non-empty result; the last response."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.query(expr)
            assert body["status"] == "success", (expr, body)
            if body["data"]["result"]:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"no data for {expr!r} after {timeout}s")
            time.sleep(0.5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait_ready(server: PrometheusServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"prometheus not ready after {timeout}s:\n{server.log_tail()}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    scrape_targets: Sequence[str] = (),
    rule_files: Sequence[Path] = (),
    *,
    job: str = "shudi",
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    scrape_self: bool = False,
    start_timeout: float = 30.0,
) -> Iterator[PrometheusServer]:
    """Start Prometheus in ``workdir`` (config, TSDB, log), wait until ready, yield it, stop it."""
    binary = find_binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "prometheus.yml"
    write_config(
        config,
        scrape_targets,
        rule_files,
        job=job,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
        scrape_self=scrape_self,
        self_port=port,
    )
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = PrometheusServer(
        url=f"http://127.0.0.1:{port}", port=port, process=process, workdir=workdir, log_path=log_path
    )
    try:
        _wait_ready(server, start_timeout)
        yield server
    finally:
        _stop(process)
