"""streams.pipeline.events: the validating decoder's bad-input matrix, the encoders, ip_hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from streams.pipeline.events import (
    DEAD_LETTER_REASONS,
    MAX_DETAIL_CHARS,
    Comment,
    DeadLetter,
    EnrichedComment,
    InvalidEvent,
    Source,
    decode_comment,
    encode_dead_letter,
    encode_enriched,
    event_seconds,
    ip_hash,
    post_id_key,
)
from streams.pipeline.territory import Territory

IP = "240e:3b4:38e4:5a30:8d1:1b7b:c0de:beef"
GOOD: dict[str, Any] = {
    "event_id": "evt-01JDXK3Q9Z8W7V6T5S4R3P2N1M",
    "user_id": "u-88231907",
    "post_id": "p-5521093",
    "text": "这家店的服务态度真的需要改进 👍",
    "ip": IP,
    "created_at": "2026-11-25T18:04:05.123+08:00",
    "platform": "android",
    "lang": "zh-CN",
}
GD = Territory(code="CN-GD", name_zh="广东", name_en="Guangdong", scope="domestic", country_code="CN")
NOW = datetime(2026, 11, 25, 10, 4, 5, tzinfo=UTC)


def dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def good_with(**changes: object) -> bytes:
    return dumps({**GOOD, **changes})


def without(field: str) -> bytes:
    return dumps({k: v for k, v in GOOD.items() if k != field})


def reason_of(raw: bytes | None, max_bytes: int = 65_536) -> tuple[str, str]:
    with pytest.raises(InvalidEvent) as info:
        decode_comment(raw, max_bytes=max_bytes)
    return info.value.reason, info.value.detail


def test_good_comment_decodes() -> None:
    comment = decode_comment(dumps(GOOD))
    assert comment == Comment(
        event_id=GOOD["event_id"],
        user_id=GOOD["user_id"],
        post_id=GOOD["post_id"],
        text=GOOD["text"],
        ip=IP,
        created_at="2026-11-25T18:04:05.123+08:00",
        platform="android",
        lang="zh-CN",
    )
    instant = datetime(2026, 11, 25, 18, 4, 5, 123000, tzinfo=timezone(timedelta(hours=8)))
    assert event_seconds(comment.created_at) == instant.timestamp()


def test_optional_fields_may_be_absent_or_null() -> None:
    assert decode_comment(without("platform")).platform is None
    assert decode_comment(good_with(lang=None)).lang is None


BAD: list[tuple[str, bytes | None, str]] = [
    ("null value", None, "empty"),
    ("empty value", b"", "empty"),
    ("not json", b"hello", "invalid_json"),
    ("truncated", dumps(GOOD)[:-10], "invalid_json"),
    ("trailing garbage", dumps(GOOD) + b"}", "invalid_json"),
    ("whitespace only", b"   ", "invalid_json"),
    ("NaN", good_with().replace(b'"text"', b'"n":NaN,"text"'), "invalid_json"),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + dumps(GOOD), "invalid_encoding"),  # RFC 8259 §8.1: no BOM
    ("array", b"[1, 2]", "schema"),
    ("number", b"42", "schema"),
    ("string", b'"a comment"', "schema"),
    ("json null", b"null", "schema"),
    ("invalid utf-8 in text", good_with(text="X").replace(b'"X"', b'"\xff\xfe"'), "invalid_encoding"),
    (
        "latin-1 text",
        good_with(text="X").replace(b'"X"', b'"' + "café".encode("latin-1") + b'"'),
        "invalid_encoding",
    ),
    ("raw surrogate bytes", good_with(text="X").replace(b'"X"', b'"\xed\xa0\x80"'), "invalid_encoding"),
    ("escaped lone high surrogate", good_with(text="X").replace(b'"X"', b'"\\ud800"'), "invalid_encoding"),
    ("escaped lone low surrogate", good_with(text="X").replace(b'"X"', b'"a\\udc00b"'), "invalid_encoding"),
    ("escaped reversed pair", good_with(text="X").replace(b'"X"', b'"\\udc00\\ud800"'), "invalid_encoding"),
    (
        "lone surrogate in unknown field",
        good_with(extra="X").replace(b'"X"', b'"\\ud800"'),
        "invalid_encoding",
    ),
    (
        "invalid utf-8 in unknown field",
        good_with(extra="X").replace(b'"X"', b'"\xff\xfe"'),
        "invalid_encoding",
    ),
    ("lone surrogate last in object", b'{"text":"\\ud800"}', "invalid_encoding"),
    ("utf-16 json", json.dumps(GOOD).encode("utf-16"), "invalid_encoding"),
    ("event_id int", good_with(event_id=123), "schema"),
    ("text list", good_with(text=["a", "b"]), "schema"),
    ("ip number", good_with(ip=3232235777), "schema"),
    ("created_at epoch", good_with(created_at=1795600800), "schema"),
    ("platform object", good_with(platform={"os": "ios"}), "schema"),
    *[
        (f"missing {f}", without(f), "schema")
        for f in ("event_id", "user_id", "post_id", "text", "ip", "created_at")
    ],
    ("empty event_id", good_with(event_id=""), "schema"),
    ("long post_id", good_with(post_id="p" * 129), "schema"),
    ("text 10001 chars", good_with(text="字" * 10_001), "schema"),
    ("ip too long", good_with(ip="9" * 65), "schema"),
    ("space, no offset", good_with(created_at="2026-11-25 10:00:00"), "schema"),
    ("no offset", good_with(created_at="2026-11-25T10:00:00"), "schema"),
    ("space separator", good_with(created_at="2026-11-25 10:00:00+08:00"), "schema"),
    ("offset without colon", good_with(created_at="2026-11-25T10:00:00+0800"), "schema"),
    ("date only", good_with(created_at="2026-11-25"), "schema"),
    ("Feb 30", good_with(created_at="2026-02-30T10:00:00Z"), "schema"),
    ("bad lang", good_with(lang="zh_CN"), "schema"),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [(raw, reason) for _, raw, reason in BAD], ids=[n for n, _, _ in BAD]
)
def test_bad_input_matrix(raw: bytes | None, reason: str) -> None:
    got, detail = reason_of(raw)
    assert got == reason, detail
    assert got in DEAD_LETTER_REASONS
    assert detail
    assert len(detail) <= MAX_DETAIL_CHARS
    assert IP not in detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (without("post_id"), "missing required field `post_id`"),
        (
            good_with(created_at="2026-11-25T10:00:00"),
            "created_at: expected RFC 3339 date-time with timezone offset",
        ),
        (good_with(created_at="2026-11-25 10:00:00Z"), "created_at: expected RFC 3339 date-time"),
        (good_with(event_id=5), "event_id: Expected `str`, got `int`"),
        (good_with(text="x" * 10_001), "text: Expected `str` of length <= 10000"),
        (b"[]", "Expected `object`, got `array`"),
    ],
)
def test_detail_is_useful(raw: bytes, expected: str) -> None:
    assert expected in reason_of(raw)[1]


@pytest.mark.parametrize("bad_ip", ["9" * 65, "300.1.1.1" * 8])
def test_detail_never_quotes_the_ip(bad_ip: str) -> None:
    for raw in (good_with(ip=bad_ip), good_with(ip=bad_ip, created_at="yesterday"), good_with(ip=[bad_ip])):
        _, detail = reason_of(raw)
        assert bad_ip not in detail
        assert "300.1.1.1" not in detail


def test_size_limit_is_a_parameter() -> None:
    raw = dumps(GOOD)
    assert decode_comment(raw, max_bytes=len(raw)).event_id == GOOD["event_id"]
    reason, detail = reason_of(raw, max_bytes=len(raw) - 1)
    assert reason == "too_large"
    assert str(len(raw)) in detail


def test_one_megabyte_message_is_too_large() -> None:
    raw = good_with(text="x" * (1 << 20))
    assert reason_of(raw)[0] == "too_large"
    # with a higher byte limit, the text limit still applies
    assert reason_of(raw, max_bytes=2 << 20)[0] == "schema"


@pytest.mark.parametrize("depth", [3_000, 10_000])
@pytest.mark.parametrize("nest", ["array", "object"])
def test_deep_nesting_is_invalid_json_not_a_crash(depth: int, nest: str) -> None:
    # Under the byte limit, but deeper than the interpreter's stack lets msgspec go, in an unknown field it
    # skips (a RecursionError escaped decode_comment: the message became internal_error with a traceback
    # logged per message).
    nested = b"[" * depth + b"]" * depth if nest == "array" else b'{"a":' * depth + b"1" + b"}" * depth
    raw = dumps(GOOD)[:-1] + b', "x": ' + nested + b"}"
    assert len(raw) < 65_536
    reason, detail = reason_of(raw)
    assert reason == "invalid_json"
    assert "deep" in detail


def test_text_length_counts_code_points() -> None:
    astral = "😀" * 10_000  # 40000 UTF-8 bytes, 20000 UTF-16 units, 10000 code points
    assert decode_comment(good_with(text=astral), max_bytes=1 << 20).text == astral
    escaped = json.dumps({**GOOD, "text": astral}).encode()  # as \ud83d\ude00 pairs
    assert decode_comment(escaped, max_bytes=1 << 20).text == astral
    assert reason_of(good_with(text=astral + "a"), max_bytes=1 << 20)[0] == "schema"


def test_unknown_fields_are_dropped() -> None:
    comment = decode_comment(good_with(client_version="9.3.1", geo={"lat": 1.0}, 额外="x"))
    out = encode_enriched(comment, GD, NOW, "b", None)
    for name in (b"client_version", b"geo", "额外".encode()):
        assert name not in out


@pytest.mark.parametrize("ip", [IP, "203.0.113.7", "::ffff:203.0.113.7", "2001:db8::1"])
def test_enriched_output_never_carries_the_ip(ip: str) -> None:
    comment = decode_comment(good_with(ip=ip))
    for digest in (None, ip_hash(b"secret", ipaddress.ip_address(ip))):
        out = encode_enriched(comment, GD, NOW, "2026-11-21T00:00:00Z", digest)
        assert b'"ip"' not in out
        assert ip.encode() not in out
        assert str(ipaddress.ip_address(ip)).encode() not in out
        decoded = msgspec.json.decode(out, type=EnrichedComment)
        assert decoded.ip_hash == digest


def test_enriched_round_trip() -> None:
    comment = decode_comment(good_with(created_at="2026-11-25T10:00:00-00:00"))
    out = json.loads(encode_enriched(comment, GD, NOW, "build-1", None))
    assert out == {
        "schema_version": 1,
        "event_id": GOOD["event_id"],
        "user_id": GOOD["user_id"],
        "post_id": GOOD["post_id"],
        "text": GOOD["text"],
        "created_at": "2026-11-25T10:00:00-00:00",  # passed through as written
        "platform": "android",
        "lang": "zh-CN",
        "territory": {
            "code": "CN-GD",
            "name_zh": "广东",
            "name_en": "Guangdong",
            "scope": "domestic",
            "country_code": "CN",
        },
        "enriched_at": "2026-11-25T10:04:05Z",
        "db_build": "build-1",
    }


def test_dead_letter_keeps_the_original_bytes() -> None:
    original = b'{"text":"\xff"}'
    src = Source(topic="comments", partition=2, offset=7, timestamp_ms=1795600800000)
    out = encode_dead_letter("invalid_encoding", "y" * 2000, original, b"p-1", src, NOW)
    dead = msgspec.json.decode(out, type=DeadLetter)
    assert dead.original_b64 is not None
    assert base64.b64decode(dead.original_b64) == original
    assert dead.original_key_b64 == base64.b64encode(b"p-1").decode()
    assert dead.source == src
    assert len(dead.detail) <= MAX_DETAIL_CHARS
    assert dead.schema_version == 1


def test_ip_hash_is_keyed_and_normalised() -> None:
    v4 = ipaddress.IPv4Address("203.0.113.7")
    mapped = ipaddress.IPv6Address("::ffff:203.0.113.7")
    digest = ip_hash(b"k1", v4)
    assert digest == hmac.new(b"k1", v4.packed, hashlib.sha256).hexdigest()
    assert len(digest) == 64
    assert digest == ip_hash(b"k1", mapped)
    assert digest != ip_hash(b"k2", v4)
    assert digest != hashlib.sha256(v4.packed).hexdigest()
    assert ip_hash(b"k1", ipaddress.IPv6Address("2001:db8::1")) == ip_hash(
        b"k1", ipaddress.IPv6Address("2001:0db8:0:0::0001")
    )


def test_invalid_event_bounds_its_detail() -> None:
    exc = InvalidEvent("schema", "z" * 10_000)
    assert len(exc.detail) <= MAX_DETAIL_CHARS
    assert exc.reason == "schema"


def test_created_at_and_lang_are_checked_every_time_but_remembered_only_when_good() -> None:
    """decode_comment remembers good created_at and lang values to skip their regex; a bad one is never
    remembered, so it is refused however often it comes, and a good one keeps being accepted."""
    for _ in range(3):
        assert reason_of(good_with(created_at="2026-02-30T10:00:00Z"))[0] == "schema"
        assert reason_of(good_with(created_at="2026-11-25 10:00:00Z"))[0] == "schema"
        assert reason_of(good_with(lang="zh_CN")) == (
            "schema",
            "lang: value does not match the schema's pattern",
        )
        assert (
            decode_comment(good_with(created_at="2026-11-25T10:00:00Z", lang="zh-Hans-CN")).lang
            == "zh-Hans-CN"
        )
    assert (
        event_seconds("2026-11-25T10:00:00Z") == event_seconds("2026-11-25T18:00:00+08:00") == 1_795_600_800
    )


# --- post_id_key: the record key of a comment value (shudi send, the simulator) ---


def test_key_is_the_post_id_of_a_comment() -> None:
    line = json.dumps(
        {"event_id": "e1", "post_id": "p-5521093", "ip": "1.0.1.7", "text": "x", "extra": [1, {"a": 2}]}
    ).encode()
    assert post_id_key(line) == b"p-5521093"


def test_key_is_utf8_of_a_non_ascii_post_id() -> None:
    assert post_id_key(json.dumps({"post_id": "帖子-7"}, ensure_ascii=False).encode()) == "帖子-7".encode()
    assert post_id_key(b'{"post_id": "\\u5e16"}') == "帖".encode()


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
    assert post_id_key(line) is None
