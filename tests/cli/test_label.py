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


def _xdb_files(tmp_path: Path) -> dict[str, Path]:
    from tests.geodb_fixtures import write_ipdb_files, write_xdb_files

    return {**write_xdb_files(tmp_path), **write_ipdb_files(tmp_path)}


def test_an_xdb_file_and_an_ordered_list(tmp_path: Path, fixture_db_path: Path) -> None:
    files = _xdb_files(tmp_path)
    result = CliRunner().invoke(label, ["--db", str(files["old"]), "1.0.11.7", "1.0.16.7"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "1.0.11.7  HK  中国香港  Hong Kong  special_region",
        "1.0.16.7  JP  日本  Japan  overseas",
    ]
    # 36.1.1.7 is in no xdb row: the mmdb behind answers
    both = f"{files['v4']},{fixture_db_path}"
    result = CliRunner().invoke(label, ["--db", both, "--json", "1.0.1.7", "36.1.1.7", "1.0.12.7"])
    assert result.exit_code == 0, result.output
    # 1.0.12.7: the xdb row says 0|0|0|0|0, so the mmdb behind answers there too
    assert [json.loads(x)["code"] for x in result.output.splitlines()] == ["CN-GD", "US", "CN-XJ"]


def test_explain_names_the_database_that_answered(tmp_path: Path, fixture_db_path: Path) -> None:
    files = _xdb_files(tmp_path)
    both = f"{files['v4']},{fixture_db_path}"
    result = CliRunner().invoke(label, ["--db", both, "--explain", "1.0.1.7", "36.1.1.7", "10.1.1.1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "1.0.1.7  CN-GD  广东  Guangdong  domestic"
    assert (
        lines[1] == "  v4.xdb [xdb, ip2region-xdb-v3-IPv4 2026-01-01T00:00:00Z]: "
        "中国|广东省|深圳市|电信|CN -> CN-GD  <- answered"
    )
    assert lines[2].startswith("  fixture.mmdb [mmdb, GeoIP2-City 2026-01-01T00:00:00Z]: country=CN")
    assert lines[2].endswith("-> CN-GD")
    us = lines.index("36.1.1.7  US  美国  United States  overseas")
    assert (
        lines[us + 1]
        == "  v4.xdb [xdb, ip2region-xdb-v3-IPv4 2026-01-01T00:00:00Z]: 0|0|0|0|0 -> ZZ (not_found)"
    )
    assert lines[us + 2].endswith("-> US  <- answered")
    assert "  answered by: the special-purpose ranges (before any database)" in lines

    result = CliRunner().invoke(label, ["--db", both, "--explain", "--json", "36.1.1.7"])
    out = json.loads(result.output)
    assert out["answered_by"] == "fixture.mmdb"
    assert [d["db"] for d in out["databases"]] == ["v4.xdb", "fixture.mmdb"]
    assert out["databases"][0]["answer"] == "0|0|0|0|0"


def test_unusable_file_in_the_list_exits_2(tmp_path: Path, fixture_db_path: Path) -> None:
    bad = tmp_path / "bad.xdb"
    bad.write_bytes(b"\x03\x00" + bytes(600_000))
    result = CliRunner().invoke(label, ["--db", f"{fixture_db_path},{bad}", "1.0.1.7"])
    assert result.exit_code == 2
    assert str(bad) in result.output
