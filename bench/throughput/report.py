"""What one harness run found: a :class:`Result` per mode, printed as a table and written as JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Result:
    mode: str
    ran: bool = True
    note: str = ""
    outputs: int = 0
    dead_letters: int = 0
    events_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s_per_100k: float = 0.0
    cpu_s_total: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_every_million: list[float] = field(default_factory=list)
    round: int = 1  # with --rounds: which pass over the modes


def percentile(sorted_vals: Sequence[int], q: float) -> float:
    if not sorted_vals:
        return 0.0
    return float(sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))])


def print_table(results: Sequence[Result], meta: dict[str, Any]) -> None:
    print(
        f"\n{meta['events']:,} events, {meta['partitions']} partitions, DB: {meta['db_source']}"
        + (
            f", rate {meta['rate']}/s, latency after {meta['warmup']} s warm-up"
            if meta["rate"]
            else " (preloaded backlog: latency = backlog)"
        )
    )
    hdr = (
        f"{'mode':<46}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU s/100k':>11}{'RSS MB':>15}"
        f"{'out':>9}{'dlq':>7}  note"
    )
    print(hdr)
    print("-" * len(hdr))
    rounds = len({r.round for r in results}) > 1
    for r in results:
        name = f"{r.mode} #{r.round}" if rounds else r.mode
        if not r.ran:
            print(f"{name:<46}{'skipped':>10}  {r.note}")
            continue
        print(
            f"{name:<46}{r.events_per_s:>10,.0f}{r.p50_ms:>9.0f}{r.p99_ms:>9.0f}{r.cpu_s_per_100k:>11.2f}"
            f"{f'{r.rss_start_mb:.0f}->{r.rss_end_mb:.0f}':>15}{r.outputs:>9}{r.dead_letters:>7}  {r.note}"
        )
    for name, per_round in ratios(results).items():
        if len(per_round) == 1:
            print(f"{name}: {per_round[0]:.2f}")
        else:
            each = ", ".join(f"{x:.2f}" for x in per_round)
            print(f"{name}: median {statistics.median(per_round):.2f} (each round: {each})")


def ratios(results: Sequence[Result]) -> dict[str, list[float]]:
    """shudi/raw, shudi/naive and two workers / one, each from modes of the same round (in round order)."""
    out: dict[str, list[float]] = {}
    for k in sorted({r.round for r in results}):
        by = {r.mode: r for r in results if r.round == k and r.ran and r.events_per_s}
        if "shudi" not in by:
            continue
        shudi = by["shudi"].events_per_s
        for base in ("raw", "naive"):
            if base in by:
                out.setdefault(f"shudi/{base}", []).append(shudi / by[base].events_per_s)
        if "shudi-x2" in by:
            out.setdefault("two workers / one", []).append(by["shudi-x2"].events_per_s / shudi)
    return out


def write_json(path: Path, results: Sequence[Result], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))


def unaccounted(results: Sequence[Result], events: int) -> list[str]:
    """One line per mode whose outputs and dead letters are not exactly the ``events`` it was given."""
    return [
        f"ACCOUNTING FAILED for {r.mode}: {r.outputs} outputs + {r.dead_letters} dead letters "
        f"!= {events} inputs"
        for r in results
        if r.ran and r.outputs + r.dead_letters != events
    ]
