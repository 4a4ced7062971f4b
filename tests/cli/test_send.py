"""streams.cli.send: reading a JSONL file for ``shudi send`` (its record keys: test_events.py)."""

from __future__ import annotations

from pathlib import Path

from streams.cli.send import read_lines


def test_read_lines_skips_blank_lines_and_strips_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r\n{"b": 2}\n\n\n{"c": "\xe9 \xff"}\r\n  \nlast-without-newline')
    assert list(read_lines(path)) == [
        b'{"a": 1}',
        b'{"b": 2}',
        b'{"c": "\xe9 \xff"}',  # bytes as they are: not decoded, not validated
        b"  ",  # only \r and \n are stripped; a line of spaces is not blank
        b"last-without-newline",
    ]


def test_read_lines_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\r\n")
    assert list(read_lines(path)) == []


def test_read_lines_keeps_inner_carriage_returns(tmp_path: Path) -> None:
    path = tmp_path / "cr.jsonl"
    path.write_bytes(b'{"t": "a\rb"}\n')
    assert list(read_lines(path)) == [b'{"t": "a\rb"}']
