"""streams.cli.detect_bursts: the `shudi detect-bursts` command."""

from __future__ import annotations

import csv
import io
from pathlib import Path

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
    assert bursts[:61] == [0] * 61
    assert bursts[61:66] == [1] * 5  # started on the 2nd window at 6x
    assert bursts[-5:] == [0] * 5
    assert float(rows[60]["score"]) > 5


def test_stdin_rfc3339_totals_and_verbose() -> None:
    result = CliRunner().invoke(detect_bursts, ["-v"], input=_csv(SERIES, totals=True, rfc3339=True))
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert list(rows[0]) == [
        "timestamp", "value", "score", "burst", "share_score", "baseline", "transition", "burst_id",
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
    quick = CliRunner().invoke(detect_bursts, ["--on-windows", "1", "--off-windows", "1"], input=data)
    assert [int(r["burst"]) for r in _rows(quick.output)][60:67] == [1, 1, 1, 1, 1, 1, 0]
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
    with pytest.raises(ValueError, match="whole second"):
        parse_timestamp("2026-01-01T00:00:00.5Z")
