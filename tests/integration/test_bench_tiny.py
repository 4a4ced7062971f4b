"""The throughput benchmark in its tiny mode: not a timing test, only that it still runs and accounts for
every event (bench/ must not rot between the runs someone does on demand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_throughput_bench_tiny_accounts_for_every_event(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.throughput",
            "--tiny",
            "--bootstrap",
            kafka_bootstrap,
            "--networks",
            "5000",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert {"raw", "naive", "shudi"} <= {r["mode"] for r in results}, results
    for r in results:
        assert r["ran"], r
        assert r["outputs"] + r["dead_letters"] == report["meta"]["events"], r
