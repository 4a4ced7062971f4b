"""The short form of the fault matrix's rows about what a worker reads and writes besides Kafka
(``bench.faults_input``): hostile input, the GeoIP database file replaced under the worker, the data
directory full. Each starts a broker of its own, as ``test_faults`` does, and checks the common invariants
(``test_faults.check``) and the row's own (``RowResult.notes``, problems)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import RowOptions, run_row
from streams.devtools.localkafka import kafka_version
from tests.integration.test_faults import check

pytestmark = pytest.mark.integration


def test_poison_pills(tmp_path: Path) -> None:
    # 3,000 hostile messages (every kind, the 1 MB value and the huge header among them) into a live
    # worker while 3,000 ordinary comments flow.
    result = run_row(
        RowOptions("poison-pills", events=3000, rate=1500.0, batch_size=500, flush_events=2000),
        kafka_version(),
        tmp_path,
    )
    check(result)
    poison = result.notes["poison"]
    assert poison["sent"] == 3000
    assert poison["lost"] == 0
    assert poison["wrong"] == {}
    assert poison["enriched"] + sum(poison["dead_lettered"].values()) == poison["sent"]
    assert "internal_error" not in poison["dead_lettered"]
    assert result.notes["tracebacks"] == 0


def test_geodb_swap(tmp_path: Path) -> None:
    # The database file replaced (another build, random bytes, its first half, removed, restored), by rename
    # and in place, while events flow (120/s: the stream outlasts the ten steps).
    result = run_row(
        RowOptions("geodb-swap", events=6000, rate=120.0, batch_size=500, flush_events=2000),
        kafka_version(),
        tmp_path,
    )
    check(result)
    geodb = result.notes["geodb"]
    assert geodb["mislabelled"] == 0
    assert geodb["builds"].get("B", 0) > 0  # the other build was used
    assert len(geodb["steps"]) == 10
    assert result.notes["tracebacks"] == 0


def test_disk_full(tmp_path: Path) -> None:
    # The worker's data dir (RocksDB tables) on a 64 MiB tmpfs, filled while the worker runs, then
    # read-only when the next one starts (CI runs as root, as mount needs).
    result = run_row(
        RowOptions("disk-full", events=6000, rate=300.0, batch_size=500, flush_events=2000),
        kafka_version(),
        tmp_path,
    )
    check(result)
    phases = {p["fault"]: p for p in result.notes["disk"]}
    assert phases["full"]["exit"] == 70
    assert "cannot write the data directory" in phases["full"]["line"]
    assert phases["read-only at start"]["exit"] == 2
    assert "not writable" in phases["read-only at start"]["line"]
