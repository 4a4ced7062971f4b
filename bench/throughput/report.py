"""What one harness run found: a :class:`Result` per mode, printed as a table and written as JSON."""

from __future__ import annotations

import json
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
    for r in results:
        if not r.ran:
            print(f"{r.mode:<46}{'skipped':>10}  {r.note}")
            continue
        print(
            f"{r.mode:<46}{r.events_per_s:>10,.0f}{r.p50_ms:>9.0f}{r.p99_ms:>9.0f}{r.cpu_s_per_100k:>11.2f}"
            f"{f'{r.rss_start_mb:.0f}->{r.rss_end_mb:.0f}':>15}{r.outputs:>9}{r.dead_letters:>7}  {r.note}"
        )
    by = {r.mode: r for r in results if r.ran and r.events_per_s}
    if "shudi" in by:
        for base in ("raw", "naive"):
            if base in by:
                print(f"shudi/{base}: {by['shudi'].events_per_s / by[base].events_per_s:.2f}")
        if "shudi-x2" in by:
            print(f"two workers / one: {by['shudi-x2'].events_per_s / by['shudi'].events_per_s:.2f}")


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
