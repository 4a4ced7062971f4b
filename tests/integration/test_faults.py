"""The fault matrix's short form (``bench.faults``): each row once, with few events and short faults.

Each row starts a broker of its own (a broker kill must not take the session's broker down), runs real
``shudi worker`` processes, injects the fault mid-stream, waits until the enrichment group has committed
every input record, reads every output topic from its beginning and checks the invariants: nothing lost,
every bad event dead-lettered with its reason, duplicates within the row's bound, no input address outside
the dead-letter topic, every worker exiting 0 on SIGTERM within ``bench.faults.STOP_BOUND_S``. The full
matrix (30,000 events, 60 s pauses, repetitions, several Kafka versions) is ``python -m bench.faults``;
``KAFKA_LOCAL_VERSION`` picks the broker's version here too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import RowOptions, RowResult, run_row
from streams.devtools.localkafka import kafka_version

pytestmark = pytest.mark.integration

EVENTS = 6000
RATE = 1500.0  # the stream lasts ~4 s, so the fault lands while events still arrive
SLOW = 300.0


def check(result: RowResult) -> None:
    print(result)
    assert result.ok, f"{result.fault}: {result.problems}\n{result}"
    assert result.lost == 0
    assert result.dlq_wrong == 0
    assert result.leaked_ips == 0
    assert result.lag_end == 0
    assert result.recover_s is not None


# The harness's own producer (streams.cli.send.produce_lines) is left unclosed when its start fails while the
# broker is away; aiokafka warns from __del__. That is the test's client, not the worker's.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*AIOKafkaProducer:pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.parametrize(
    "options",
    [
        RowOptions("broker-kill", events=EVENTS, rate=RATE, batch_size=500, flush_events=2000),
        # Away longer than the producer's 40 s request timeout: the loop's batches and ticks fail, it resets
        # its clients with a backoff until the broker answers, and resumes without a restart.
        RowOptions("broker-kill", events=EVENTS, rate=RATE, down_s=45.0, batch_size=500, flush_events=2000),
        RowOptions("broker-pause", events=EVENTS, rate=RATE, pause_s=15.0, batch_size=500, flush_events=2000),
        RowOptions("worker-kill", events=EVENTS, rate=RATE, batch_size=500, flush_events=2000),
        RowOptions("rolling-restart", events=EVENTS, rate=RATE, batch_size=500, flush_events=2000),
        # The workers' network blackholed for 12 s with a 3 s stall timeout: /healthz must fail during the cut
        # (stuck longer than 3 s + bench.faultrows.HEALTHZ_MARGIN_S) and pass again at the end.
        RowOptions(
            "network-cut",
            events=EVENTS,
            rate=RATE,
            cut_s=12.0,
            stall_timeout_s=3.0,
            batch_size=500,
            flush_events=2000,
        ),
        # Slower (~20 s of stream): new workers take seconds to join, and the rebalances must land while
        # events still arrive.
        # Every connection reset and new ones refused for 8 s: aiokafka's producer died of it under uvloop
        # (exit 70) until a dead sender counted as transient (streams/runtime/enrichment.py, dead_sender).
        RowOptions(
            "network-cut",
            events=EVENTS,
            rate=RATE,
            cut_s=8.0,
            cut_mode="reset",
            batch_size=500,
            flush_events=2000,
        ),
        RowOptions("rebalance-storm", events=EVENTS, rate=SLOW, batch_size=500, flush_events=2000),
        RowOptions("worker-kill-rebalance", events=EVENTS, rate=SLOW, batch_size=500, flush_events=2000),
    ],
    ids=lambda o: (
        f"{o.fault}-down-{o.down_s:.0f}s"
        if o.fault == "broker-kill"
        else f"{o.fault}-{o.cut_mode}"
        if o.fault == "network-cut"
        else o.fault
    ),
)
def test_fault_row(options: RowOptions, tmp_path: Path) -> None:
    check(run_row(options, kafka_version(), tmp_path))
