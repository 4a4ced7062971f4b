"""``shudi detect-bursts``: run the burst detector over a CSV history, to tune its parameters offline."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from streams.cli.errors import CommandError
from streams.pipeline.detector import DetectorParams, TerritoryState, fill_gaps, step

_DEFAULTS = DetectorParams()
_DOCS = {
    "window_s": "Window length in seconds; default: the smallest step between input timestamps.",
    "warmup_windows": "Windows before the detector may fire.",
    "pseudo_count": "Added to the rate before the log: counts this small are counting noise.",
    "rate_alpha": "EWMA weight of a window's count in the current rate.",
    "alpha": "EWMA weight of a window in the own baseline level.",
    "share_alpha": "EWMA weight of a window in the share baseline (with a total column).",
    "var_alpha": "EWMA weight of a window in the baselines' variance.",
    "huber_k": "Residuals are clipped to this many sd before they move a baseline.",
    "var_clip": "Residuals are clipped to this many sd before they enter a variance.",
    "on_threshold": "Floor of the threshold (sd) that starts a burst.",
    "false_alarm": "Probability per window of the series' own tail threshold.",
    "tail_u": "Level (sd) above which the tail is modelled.",
    "tail_alpha": "EWMA weight of a window in the tail estimates.",
    "own_threshold": "Own score a burst also needs when a total column is given.",
    "off_threshold": "A window below this score is cool.",
    "off_windows": "Consecutive cool windows that end a burst.",
    "min_count": "Fewest comments in a window that can start a burst.",
    "adapt_after": "Windows after which a burst is taken for a new normal.",
    "cooldown_windows": "Windows after a burst before another may start.",
    "breadth": "Global surge: share of the traffic that must be up together (not used here).",
    "breadth_ratio": "Global surge: count / expected that makes a territory up (not used here).",
}


class InputError(Exception):
    """A bad line of the input CSV; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def parse_timestamp(text: str, tz: tzinfo | None = None) -> int:
    """Epoch seconds (an integer), or an ISO 8601 / RFC 3339 date-time (``T`` or a space between date and
    time, fractional seconds allowed), as whole epoch seconds (rounded down). A date-time without an offset
    is read in ``tz``; without ``tz`` it is an error that names ``--tz``."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"not epoch seconds or RFC 3339: {t[:40]!r}") from None
    if dt.tzinfo is None:
        if tz is None:
            raise ValueError(f"timestamp without an offset: {t[:40]!r}; give its time zone with --tz NAME")
        dt = dt.replace(tzinfo=tz)
    return math.floor(dt.timestamp())


def _count(text: str, what: str) -> int:
    t = text.strip()
    if not t.isdigit():
        raise ValueError(f"{what} must be a non-negative integer, got {t[:40]!r}")
    return int(t)


Row = tuple[int, int, int | None, str]  # window start, value, total, timestamp text as given


def read_rows(stream: TextIO, tz: tzinfo | None = None) -> list[Row]:
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
            ts = parse_timestamp(rec[0], tz)
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
        header += ["share_score", "baseline", "threshold", "transition", "burst_id"]
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
            row += [
                share,
                f"{verdict.baseline:.1f}",
                f"{verdict.threshold:.3f}",
                verdict.transition,
                verdict.burst_id or "",
            ]
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
    "-v",
    "--verbose",
    is_flag=True,
    help="Add share_score, baseline, threshold, transition, burst_id columns.",
)
@click.option(
    "--tz",
    "tz_name",
    metavar="NAME",
    default=None,
    help="Time zone (e.g. UTC, Asia/Shanghai) of timestamps written without an offset.",
)
@_param_options
def detect_bursts(file: Path | None, verbose: bool, tz_name: str | None, **options: Any) -> None:
    """Run the burst detector over a CSV history (FILE, or stdin) and print its verdicts as CSV.

    Input: a header 'timestamp,value' or 'timestamp,value,total', then one row per window in increasing
    time order; timestamp as epoch seconds or an ISO 8601 date-time ('T' or a space, fractional seconds
    allowed; without an offset it needs --tz), value the window's count, total
    (optional) the count of all territories in that window, which turns on the share test. Missing
    windows (a whole number of --window-s apart) are fed as 0 and printed. Output:
    'timestamp,value,score,burst' with burst 1 while a burst is active. Exit status 2 on bad input, with
    the line number.
    """
    tz: tzinfo | None = None
    if tz_name is not None:
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise CommandError(f"--tz: unknown time zone {tz_name!r}") from None
    try:
        if file is None:
            rows = read_rows(click.get_text_stream("stdin", encoding="utf-8"), tz)
        else:
            with file.open(encoding="utf-8", newline="") as fh:
                rows = read_rows(fh, tz)
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
