"""streams.cli.send: the record key of a line, and reading a JSONL file for ``shudi send``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.cli.send import key_for, read_lines


def test_key_is_the_post_id_of_a_comment() -> None:
    line = json.dumps(
        {"event_id": "e1", "post_id": "p-5521093", "ip": "1.0.1.7", "text": "x", "extra": [1, {"a": 2}]}
    ).encode()
    assert key_for(line) == b"p-5521093"


def test_key_is_utf8_of_a_non_ascii_post_id() -> None:
    assert key_for(json.dumps({"post_id": "帖子-7"}, ensure_ascii=False).encode()) == "帖子-7".encode()
    assert key_for(b'{"post_id": "\\u5e16"}') == "帖".encode()


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"{",
        b"not json",
        b'{"post_id": "p1"',  # truncated
        b"[1, 2]",
        b'"p1"',
        b"{}",
        b'{"event_id": "e1"}',
        b'{"post_id": null}',
        b'{"post_id": 123}',
        b'{"post_id": ["p1"]}',
        b'{"post_id": {"id": "p1"}}',
        b'{"post_id": true}',
        b'{"post_id": "p\xff"}',  # not UTF-8
    ],
)
def test_no_key_for_lines_that_are_not_a_comment(line: bytes) -> None:
    assert key_for(line) is None


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
