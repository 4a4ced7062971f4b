"""``shudi detect-bursts``: run the burst detector over a CSV history, to tune its parameters offline."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from streams.cli.errors import CommandError
from streams.pipeline.detector import DetectorParams, TerritoryState, fill_gaps, step

_DEFAULTS = DetectorParams()
_DOCS = {
    "window_s": "Window length in seconds; default: the smallest step between input timestamps.",
    "warmup_windows": "Windows before the detector may fire.",
    "alpha": "EWMA weight of a window in the level.",
    "var_alpha": "EWMA weight of a window in the over-dispersion estimate.",
    "huber_k": "Residuals are clipped to this many sd before they update the level.",
    "min_count": "Fewest comments in a window that can start a burst.",
    "min_ratio": "A window must have at least this times the expected count to start a burst.",
    "on_threshold": "Mean own score of the last on-windows windows that starts a burst.",
    "share_threshold": "Mean share score of those windows that starts a burst (with a total column).",
    "off_threshold": "A window below this own or share score is cool; also the least score of a candidate.",
    "on_windows": "Consecutive candidate windows that start a burst.",
    "off_windows": "Consecutive cool windows that end a burst.",
    "adapt_after": "Windows after which a burst is taken for a new normal.",
    "seasonal": "Add a per-slot-of-day profile to the baseline.",
    "seasonal_slots": "Slots per day of the seasonal profile.",
    "seasonal_alpha": "EWMA weight of a window in its slot's offset.",
}


class InputError(Exception):
    """A bad line of the input CSV; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def parse_timestamp(text: str) -> int:
    """Epoch seconds (an integer) or an RFC 3339 date-time with an offset, as epoch seconds."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"not epoch seconds or RFC 3339: {t[:40]!r}") from None
    if dt.tzinfo is None:
        raise ValueError(f"RFC 3339 timestamp without an offset: {t[:40]!r}")
    seconds = dt.timestamp()
    if seconds != math.floor(seconds):
        raise ValueError(f"timestamp is not a whole second: {t[:40]!r}")
    return int(seconds)


def _count(text: str, what: str) -> int:
    t = text.strip()
    if not t.isdigit():
        raise ValueError(f"{what} must be a non-negative integer, got {t[:40]!r}")
    return int(t)


Row = tuple[int, int, int | None, str]  # window start, value, total, timestamp text as given


def read_rows(stream: TextIO) -> list[Row]:
    """The data rows of a ``timestamp,value[,total]`` CSV with a header; raises InputError."""
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(1, "empty input: expected a header 'timestamp,value[,total]'") from None
    except csv.Error as e:
        raise InputError(1, str(e)) from None
    names = [h.strip().lower() for h in header]
    if names not in (["timestamp", "value"], ["timestamp", "value", "total"]):
        raise InputError(
            1, f"header must be 'timestamp,value' or 'timestamp,value,total', got {','.join(header)!r}"
        )
    with_total = len(names) == 3
    rows: list[Row] = []
    prev: int | None = None
    while True:
        line = reader.line_num + 1
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise InputError(line, str(e)) from None
        line = reader.line_num
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != len(names):
            raise InputError(line, f"expected {len(names)} columns, got {len(rec)}")
        try:
            ts = parse_timestamp(rec[0])
            value = _count(rec[1], "value")
            total = _count(rec[2], "total") if with_total else None
        except ValueError as e:
            raise InputError(line, str(e)) from None
        if total is not None and total < value:
            raise InputError(line, f"total {total} is less than value {value}")
        if prev is not None and ts <= prev:
            raise InputError(line, "timestamps must increase strictly")
        rows.append((ts, value, total, rec[0].strip()))
        prev = ts
    return rows


def infer_window(rows: list[Row]) -> int:
    """The smallest step between consecutive timestamps (60 with fewer than two rows)."""
    steps = [b[0] - a[0] for a, b in itertools.pairwise(rows)]
    return min(steps) if steps else _DEFAULTS.window_s


def run(rows: list[Row], params: DetectorParams, out: TextIO, *, verbose: bool = False) -> int:
    """Write the output CSV for ``rows``; returns the number of bursts started."""
    text = {ts: given for ts, _, _, given in rows}
    writer = csv.writer(out, lineterminator="\n")
    header = ["timestamp", "value", "score", "burst"]
    if verbose:
        header += ["share_score", "baseline", "transition", "burst_id"]
    writer.writerow(header)
    state: TerritoryState | None = None
    started = 0
    triples: Iterable[tuple[int, int, int | None]] = ((ts, v, t) for ts, v, t, _ in rows)
    for ts, value, total, filled in fill_gaps(triples, params.window_s):
        state, verdict = step(state, key="series", window_start=ts, count=value, total=total, params=params)
        started += verdict.transition == "started"
        row: list[Any] = [
            str(ts) if filled else text[ts],
            value,
            f"{verdict.score:.3f}",
            int(verdict.active),
        ]
        if verbose:
            share = "" if verdict.share_score is None else f"{verdict.share_score:.3f}"
            row += [share, f"{verdict.baseline:.1f}", verdict.transition, verdict.burst_id or ""]
        writer.writerow(row)
    return started


_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool}


def _param_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for f in reversed(dataclasses.fields(DetectorParams)):
        flag = "--" + f.name.replace("_", "-")
        doc = _DOCS[f.name]
        kind = _TYPES[str(f.type)]
        if kind is bool:
            fn = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=f"{doc} [default: off]")(
                fn
            )
            continue
        shown = "inferred" if f.name == "window_s" else f.default
        fn = click.option(flag, f.name, type=kind, default=None, help=f"{doc} [default: {shown}]")(fn)
    return fn


@click.command("detect-bursts")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-v", "--verbose", is_flag=True, help="Add share_score, baseline, transition, burst_id columns."
)
@_param_options
def detect_bursts(file: Path | None, verbose: bool, **options: Any) -> None:
    """Run the burst detector over a CSV history (FILE, or stdin) and print its verdicts as CSV.

    Input: a header 'timestamp,value' or 'timestamp,value,total', then one row per window in increasing
    time order; timestamp as epoch seconds or RFC 3339 with an offset, value the window's count, total
    (optional) the count of all territories in that window, which turns on the share test. Missing
    windows (a whole number of --window-s apart) are fed as 0 and printed. Output:
    'timestamp,value,score,burst' with burst 1 while a burst is active. Exit status 2 on bad input, with
    the line number.
    """
    try:
        if file is None:
            rows = read_rows(click.get_text_stream("stdin", encoding="utf-8"))
        else:
            with file.open(encoding="utf-8", newline="") as fh:
                rows = read_rows(fh)
    except InputError as e:
        raise CommandError(str(e)) from None
    except UnicodeDecodeError as e:
        raise CommandError(f"input is not UTF-8: {e.reason}") from None
    given = {k: v for k, v in options.items() if v is not None}
    if "window_s" not in given:
        given["window_s"] = infer_window(rows)
    try:
        params = dataclasses.replace(_DEFAULTS, **given)
    except ValueError as e:
        raise CommandError(str(e)) from None
    run(rows, params, click.get_text_stream("stdout"), verbose=verbose)
