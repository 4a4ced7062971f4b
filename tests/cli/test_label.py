"""streams.cli.label: the `shudi label` command."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from streams.cli.label import label


def test_plain_lines(fixture_db_path: Path) -> None:
    result = CliRunner().invoke(label, ["--db", str(fixture_db_path), "1.0.1.7", "36.1.1.7", "10.0.0.1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "1.0.1.7  CN-GD  广东  Guangdong  domestic",
        "36.1.1.7  US  美国  United States  overseas",
        "10.0.0.1  ZZ  未知  Unknown  unknown  (private)",
    ]


def test_json_lines_and_errors(fixture_db_path: Path) -> None:
    args = ["--db", str(fixture_db_path), "--json", "1.0.9.7", "127.1", "36.0.1.7", "9.9.9.9"]
    result = CliRunner().invoke(label, args)
    assert result.exit_code == 1  # after printing every line
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert lines[0] == {
        "ip": "1.0.9.7",
        "code": "CN-NM",
        "name_zh": "内蒙古",
        "name_en": "Inner Mongolia",
        "scope": "domestic",
        "country_code": "CN",
    }
    assert lines[1]["ip"] == "127.1"
    assert "error" in lines[1]
    assert set(lines[1]) == {"ip", "error"}
    assert lines[2]["code"] == "HK"
    assert lines[2]["name_zh"] == "中国香港"
    assert lines[3] == {
        "ip": "9.9.9.9",
        "code": "ZZ",
        "name_zh": "未知",
        "name_en": "Unknown",
        "scope": "unknown",
        "country_code": None,
        "reason": "not_found",
    }
    assert "内蒙古" in result.output  # not \\u escaped


def test_stdin(fixture_db_path: Path) -> None:
    result = CliRunner().invoke(
        label, ["--db", str(fixture_db_path), "--json"], input="1.0.1.7\n2400:da00::1\r\n\n"
    )
    assert result.exit_code == 1  # the empty line is not an address
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert [x.get("code") for x in lines] == ["CN-GD", "CN-SH", None]
    assert lines[2] == {"ip": "", "error": "empty address"}


def test_stdin_all_good(fixture_db_path: Path) -> None:
    result = CliRunner().invoke(label, ["--db", str(fixture_db_path)], input="36.0.3.7\n")
    assert result.exit_code == 0
    assert result.output == "36.0.3.7  TW  中国台湾  Taiwan  special_region\n"


def test_missing_or_corrupt_db(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mmdb"
    result = CliRunner().invoke(label, ["--db", str(missing), "1.2.3.4"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"shudi: GeoIP database {missing}: no such file"
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"junk")
    result = CliRunner().invoke(label, ["--db", str(junk), "1.2.3.4"])
    assert result.exit_code == 2
    assert str(junk) in result.stderr
    assert len(result.stderr.splitlines()) == 1
