"""streams.cli.detect_bursts: the `shudi detect-bursts` command."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from streams.cli.detect_bursts import detect_bursts, parse_timestamp

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _csv(values: list[int], *, totals: bool = False, rfc3339: bool = False, start: int = 0) -> str:
    lines = ["timestamp,value,total" if totals else "timestamp,value"]
    for i, v in enumerate(values, start):
        ts = f"2026-01-01T{i // 60:02d}:{i % 60:02d}:00+00:00" if rfc3339 else str(T0 + 60 * i)
        lines.append(f"{ts},{v},{v + 5000}" if totals else f"{ts},{v}")
    return "\n".join(lines) + "\n"


def _rows(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


SERIES = [100, 104, 97, 99, 102] * 12 + [600] * 6 + [100, 98, 103] * 5  # 60 quiet, 6 at 6x, 15 quiet


def test_file_in_csv_out(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text(_csv(SERIES))
    result = CliRunner().invoke(detect_bursts, [str(f)])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert list(rows[0]) == ["timestamp", "value", "score", "burst"]
    assert len(rows) == len(SERIES)
    assert rows[0]["timestamp"] == str(T0)
    assert [int(r["value"]) for r in rows] == SERIES
    bursts = [int(r["burst"]) for r in rows]
    assert bursts[:60] == [0] * 60
    assert bursts[60:66] == [1] * 6  # started on the first window at 6x
    assert bursts[-3:] == [0] * 3
    assert float(rows[60]["score"]) > 5


def test_stdin_rfc3339_totals_and_verbose() -> None:
    result = CliRunner().invoke(detect_bursts, ["-v"], input=_csv(SERIES, totals=True, rfc3339=True))
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert list(rows[0]) == [
        "timestamp", "value", "score", "burst",
        "share_score", "baseline", "threshold", "transition", "burst_id",
    ]  # fmt: skip
    assert rows[0]["timestamp"] == "2026-01-01T00:00:00+00:00"  # echoed as given
    transitions = [r["transition"] for r in rows]
    assert transitions.count("started") == 1
    assert transitions.count("ended") == 1
    started = rows[transitions.index("started")]
    assert started["burst_id"] == f"series@{T0 + 60 * 60}"
    assert float(started["share_score"]) > 3


def test_options_reach_the_detector() -> None:
    data = _csv(SERIES)
    never = CliRunner().invoke(detect_bursts, ["--min-count", "1000"], input=data)
    assert never.exit_code == 0, never.output
    assert all(r["burst"] == "0" for r in _rows(never.output))
    late = CliRunner().invoke(detect_bursts, ["--warmup-windows", "100"], input=data)
    assert all(r["burst"] == "0" for r in _rows(late.output))
    high = CliRunner().invoke(detect_bursts, ["--on-threshold", "100", "--false-alarm", "0.5"], input=data)
    assert all(r["burst"] == "0" for r in _rows(high.output))
    bad = CliRunner().invoke(detect_bursts, ["--off-threshold", "9"], input=data)
    assert bad.exit_code == 2
    assert "off_threshold" in bad.output


def test_every_param_is_an_option() -> None:
    from dataclasses import fields

    from streams.pipeline.detector import DetectorParams

    names = {o for p in detect_bursts.params for o in p.opts}
    for f in fields(DetectorParams):
        assert "--" + f.name.replace("_", "-") in names


def test_gaps_are_filled_with_zeros() -> None:
    data = "timestamp,value\n" + "".join(f"{T0 + 60 * i},{50}\n" for i in (0, 1, 2, 5))
    result = CliRunner().invoke(detect_bursts, [], input=data)
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert [int(r["timestamp"]) - T0 for r in rows] == [0, 60, 120, 180, 240, 300]
    assert [r["value"] for r in rows] == ["50", "50", "50", "0", "0", "50"]


@pytest.mark.parametrize(
    ("data", "line", "words"),
    [
        ("", 1, "empty"),
        ("time,count\n1,2\n", 1, "header"),
        ("timestamp,value\n1,2\nx,3\n", 3, "RFC 3339"),
        ("timestamp,value\n1,2\n2,-3\n", 3, "non-negative"),
        ("timestamp,value\n1,2\n2,3.5\n", 3, "non-negative"),
        ("timestamp,value\n1,2\n2\n", 3, "columns"),
        ("timestamp,value\n60,2\n\n60,3\n", 4, "increase"),
        ("timestamp,value\n2026-01-01T00:00:00,3\n", 2, "offset"),
        ("timestamp,value,total\n60,5,4\n", 2, "less than"),
    ],
)
def test_bad_input_exits_2_with_the_line(data: str, line: int, words: str) -> None:
    result = CliRunner().invoke(detect_bursts, [], input=data)
    assert result.exit_code == 2
    assert f"line {line}:" in result.output
    assert words in result.output
    assert "Traceback" not in result.output


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(detect_bursts, [str(tmp_path / "nope.csv")])
    assert result.exit_code == 2


def test_parse_timestamp() -> None:
    assert parse_timestamp("1767225600") == T0
    assert parse_timestamp("2026-01-01T08:00:00+08:00") == T0
    assert parse_timestamp("2026-01-01T00:00:00Z") == T0
    assert parse_timestamp("2026-01-01 00:00:00+00:00") == T0  # a space instead of T
    assert parse_timestamp("2026-01-01T00:00:00.75Z") == T0  # fractional seconds, rounded down
    assert parse_timestamp("2026-01-01 08:00:00", ZoneInfo("Asia/Shanghai")) == T0
    assert parse_timestamp("2026-01-01T00:00:00.5", ZoneInfo("UTC")) == T0
    # an explicit offset wins over --tz
    assert parse_timestamp("2026-01-01T00:00:00+00:00", ZoneInfo("Asia/Shanghai")) == T0
    with pytest.raises(ValueError, match="--tz"):
        parse_timestamp("2026-01-01 00:00:00")


NAB_LIKE = "timestamp,value\n" + "".join(
    f"2026-01-01 {i // 12:02d}:{i % 12 * 5:02d}:53,{v}\n" for i, v in enumerate([20, 22, 19, 21] * 12)
)


def test_timestamps_without_offset_need_tz_and_the_error_names_it() -> None:
    result = CliRunner().invoke(detect_bursts, ["-v"], input=NAB_LIKE)
    assert result.exit_code == 2
    assert "line 2:" in result.output
    assert "--tz" in result.output


def test_tz_reads_timestamps_without_offset_and_keeps_them_as_given() -> None:
    utc = CliRunner().invoke(detect_bursts, ["-v", "--tz", "UTC"], input=NAB_LIKE)
    assert utc.exit_code == 0, utc.output
    rows = _rows(utc.output)
    assert rows[0]["timestamp"] == "2026-01-01 00:00:53"  # echoed as given, for scorers that join on it
    assert "transition" in rows[0]
    assert len(rows) == 48  # 5-minute steps: the window is inferred as 300 s, so no gap is filled
    shanghai = CliRunner().invoke(detect_bursts, ["--tz", "Asia/Shanghai"], input=NAB_LIKE)
    assert shanghai.exit_code == 0, shanghai.output


def test_unknown_tz_is_a_usage_error_naming_the_option() -> None:
    result = CliRunner().invoke(detect_bursts, ["--tz", "Mars/Olympus"], input=NAB_LIKE)
    assert result.exit_code == 2
    assert "--tz" in result.output
