"""Micro-benchmark (not a test): the CPU cost of one ``streams.pipeline.detector.step``, in µs.

    python -m bench.detector_step [--windows 200000]

Three uses, each over ``--windows`` windows of NB traffic with a daily cycle and occasional bursts, with the
state encoded and decoded every window as the counting agent does (its table holds bytes): a territory with
a total (the share test), a series without one (``detect-bursts``), and the global detector with the
breadth test over 43 territories. Reports the median of 5 runs of the step alone and of step + msgpack
round trip, and the encoded size.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence

from streams.pipeline.detector import (
    GLOBAL_KEY,
    DetectorParams,
    TerritoryState,
    decode_state,
    encode_state,
    step,
)

T0 = 1_767_225_600
TERRITORIES = 43


def traffic(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        mean = 200 * math.exp(0.7 * math.cos(2 * math.pi * i / 1440)) * (5 if i % 997 < 4 else 1)
        out.append(max(0, int(rng.gauss(mean, math.sqrt(mean + mean * mean / 20)))))
    return out


def timed(counts: Sequence[int], total: int | None, *, key: str, roundtrip: bool, territories: bool) -> float:
    params = DetectorParams()
    state: TerritoryState | None = None
    mapping = {f"T{k}": 0 for k in range(TERRITORIES)}
    started = time.perf_counter()
    for i, c in enumerate(counts):
        if territories:
            mapping = {code: c // TERRITORIES + k for k, code in enumerate(mapping)}
        state, _ = step(
            state,
            key=key,
            window_start=T0 + 60 * i,
            count=c,
            total=None if total is None else c + total,
            params=params,
            territories=mapping if territories else None,
        )
        if roundtrip:
            state = decode_state(encode_state(state))
    return (time.perf_counter() - started) / len(counts) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=200_000)
    args = ap.parse_args(argv)
    counts = traffic(args.windows, 1)
    cases = [
        ("territory with a total (share test)", "CN-GD", 20_000, False),
        ("series without a total (detect-bursts)", "series", None, False),
        ("global detector, breadth over 43 territories", GLOBAL_KEY, None, True),
    ]
    print(f"detector step, {args.windows} windows, median of 5 runs (µs per window):")
    for label, key, total, territories in cases:
        bare = statistics.median(
            timed(counts, total, key=key, roundtrip=False, territories=territories) for _ in range(5)
        )
        trip = statistics.median(
            timed(counts, total, key=key, roundtrip=True, territories=territories) for _ in range(5)
        )
        print(f"  {label}: step {bare:.2f} µs; step + msgpack round trip {trip:.2f} µs")
    state: TerritoryState | None = None
    for i, c in enumerate(counts[:5000]):
        state, _ = step(
            state, key="CN-GD", window_start=T0 + 60 * i, count=c, total=c + 20_000, params=DetectorParams()
        )
    assert state is not None
    print(f"encoded state of a territory: {len(encode_state(state))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
