"""Burst detection across a worker restart, on the real broker: two real workers, the real simulator.

While a scripted regional burst is active, the worker that owns the bursting territory's counting partition
(the one exporting its gauges) is stopped with SIGTERM and started again (same app id, data dir and ports).
Its partitions move to the other worker and back; the tables (open windows' counts, detector states, clocks)
must follow them through their changelogs. Checked:

- nothing the simulator sent is missing from what the counting stage was sent (the counts topic's deltas,
  window by window: at least the simulator's counts; more only through at-least-once redelivery);
- the counting stage's own counts survive the moves: every window of the burst, as its burst events report
  it (``count``), holds at least the comments the simulator sent from the territory in that window;
- the detector does not fire again the burst it had already started: exactly one ``started`` event for the
  burst (``updated`` events may repeat after a replay), and it ends.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from streams.devtools.mmdbbuild import build_demo_db
from streams.testing import WorkerProcess
from tests.integration.test_bursts_e2e import (
    SCOPE,
    SPEEDUP,
    TERRITORY,
    ActiveWatch,
    Simulator,
    burst_events,
    burst_script,
    burst_validator,
    check_burst_against_truth,
    counting_settings,
    delta_counts,
    describe,
    gauge_exporters,
    poll_until,
    regional,
    running_workers,
    scrape_worker,
    summed,
    total,
)

pytestmark = pytest.mark.integration

BURST_START, BURST_DURATION, SIM_DURATION = 120.0, 300.0, 600.0  # simulated seconds: burst at 12-42 s wall
RATE = 500.0  # lighter than test_bursts_e2e: the counting stage keeps closer to the stream, so the burst
# is detected while the input still flows and the stop really happens in the middle of it
DOWN_S = 3.0  # how long the stopped worker stays down


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    return build_demo_db(tmp_path / "demo.mmdb")


def restart(worker: WorkerProcess, down_s: float, timeout: float = 60.0) -> tuple[int, float]:
    """SIGTERM the worker, wait ``down_s``, start it again and wait until it is ready once more.
    Returns the exit code of the stop and the seconds it took."""
    began = time.monotonic()
    code = worker.stop(timeout=60)
    stopped_in = time.monotonic() - began
    time.sleep(down_s)
    seen = worker.log().count("[^Worker]: Ready")
    worker.start()
    deadline = time.monotonic() + timeout
    while worker.log().count("[^Worker]: Ready") <= seen:
        assert worker.proc is not None
        assert worker.proc.poll() is None, f"restarted worker exited:\n{worker.log()[-4000:]}"
        assert time.monotonic() < deadline, f"restarted worker not ready after {timeout}s"
        time.sleep(0.2)
    return code, stopped_in


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_restart_during_a_burst_neither_loses_counts_nor_fires_again(
    kafka_bootstrap: str, uid: str, tmp_path: Path, demo_db: Path, store: str
) -> None:
    """With the in-memory store the restarted worker rebuilds its tables from the changelogs; with RocksDB
    it reopens its own files (its data dir is kept) and reads only what the changelogs have beyond them."""
    settings = {**counting_settings(kafka_bootstrap, uid, demo_db), "SHUDI_STORE": store}
    validate = burst_validator()
    with running_workers(tmp_path, settings) as workers:
        sim = Simulator.start(
            tmp_path, settings, burst_script(BURST_START, BURST_DURATION), duration=SIM_DURATION, rate=RATE
        )
        try:
            watch = ActiveWatch(workers, sim.started_at, allow_down=True)
            burst_end_wall = sim.wall_of(BURST_START + BURST_DURATION)
            # Wait for the burst to be active, with a few windows of the burst still to come.
            watch.wait_for(1.0, burst_end_wall - 8 - time.monotonic())
            owners = {
                i
                for (name, territory), ws in gauge_exporters(watch.last).items()
                for i in ws
                if name == "shudi_burst_active" and territory == TERRITORY
            }
            assert len(owners) == 1, owners
            (owner,) = owners
            stopped_at = time.monotonic() - sim.started_at
            stop_code, stop_s = restart(workers[owner], DOWN_S)
            stop_log = workers[owner].log()
            back_at = time.monotonic() - sim.started_at
            assert sim.running(), "the simulator ended before the restart: the test did not test a restart"
            # The burst goes on across the restart, and ends once the scripted burst is over.
            poll_until(
                lambda: bool(watch.scrape()) and not sim.running(),
                timeout=SIM_DURATION / SPEEDUP + 30 - (time.monotonic() - sim.started_at),
                what="the simulator's end",
            )
            watch.allow_down = False
            watch.wait_for(0.0, timeout=45)
            print(
                f"stopped worker {owner} at {stopped_at:.1f}s (exit {stop_code}, {stop_s:.1f}s), ready at "
                f"{back_at:.1f}s; burst at {BURST_START / SPEEDUP:.0f}-"
                f"{(BURST_START + BURST_DURATION) / SPEEDUP:.0f}s; sum of burst_active: {watch.timeline}"
            )
            sent, malformed = sim.wait(timeout=60)
            truth_counts = sim.counts()
            valid = sent - malformed
            assert sum(truth_counts.values()) == valid

            # Nothing lost on the way to the counting stage (duplicates are allowed: at-least-once).
            poll_until(
                lambda: (
                    total([scrape_worker(w) for w in workers], "shudi_consumer_lag_messages") == 0
                    and summed([scrape_worker(w) for w in workers], "shudi_events_total", outcome="enriched")
                    > 0
                ),
                timeout=30,
                what="the input consumed",
            )
            time.sleep(2.0)
            got = delta_counts(kafka_bootstrap, settings["SHUDI_COUNTS_TOPIC"])
            short = {k: (got[k], n) for k, n in truth_counts.items() if got[k] < n}
            assert not short, f"windows with fewer counts than sent (got, sent): {short}"
            final = [scrape_worker(w) for w in workers]
            late = summed(final, "shudi_late_events_total")
            events = burst_events(kafka_bootstrap, settings["SHUDI_BURSTS_TOPIC"])
        finally:
            sim.kill()
        log_tail = describe(workers)

    for event in events:
        validate.validate(event)
    started = regional(events, "started", TERRITORY)
    assert len(started) == 1, (
        f"{len(started)} started events for {TERRITORY}: {[e['burst_id'] for e in started]} "
        f"(timeline {watch.timeline})\n{log_tail}"
    )
    burst_id = started[0]["burst_id"]
    ours = [e for e in events if e["burst_id"] == burst_id]
    kinds = Counter(e["kind"] for e in ours)
    assert kinds["started"] == 1, kinds
    assert kinds["ended"] >= 1, kinds
    ended = [e for e in ours if e["kind"] == "ended"]
    assert {e["window_start"] for e in ended} == {ended[0]["window_start"]}, ended
    others = [e for e in regional(events, "started") if e["territory"]["code"] != TERRITORY]
    assert not others, others
    (truth,) = sim.truth()
    check_burst_against_truth(started[0], ended[0], truth)

    # The counting stage's own counts, as the burst events of each window report them, survived the moves.
    reported: dict[int, int] = {}
    for e in ours:
        start = int(datetime.fromisoformat(e["window_start"]).timestamp())
        reported[start] = max(reported.get(start, 0), e["count"])
    lower = {
        start: (count, truth_counts[(TERRITORY, start)])
        for start, count in sorted(reported.items())
        if count < truth_counts[(TERRITORY, start)]
    }
    # A graceful restart loses no comment and closes no window early: a source is idle only once its
    # consumer has caught up (EnrichmentService._caught_up), so no window closes while its comments wait.
    print(f"burst windows counted lower than sent: {lower}; late events {late:.0f}")
    assert not lower, (
        f"burst windows counted lower than sent (counted, sent) after the restart: {lower} "
        f"(late events: {late:.0f})\n{log_tail}"
    )
    assert summed(final, "shudi_burst_active", territory=TERRITORY, scope=SCOPE) == 0
    # A SIGTERM is a graceful stop: the worker finishes its batch and exits 0 (70 means it took the stop
    # for a failure of its consuming loop).
    assert stop_code == 0, f"the stopped worker exited with {stop_code}:\n{stop_log[-3000:]}"
