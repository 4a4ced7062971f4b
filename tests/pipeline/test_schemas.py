"""schemas/*.schema.json and streams/pipeline/events.py must agree, both ways.

Examples in the schemas are valid and accepted by the code; what the code emits is valid; what the schema
accepts the decoder accepts, and what the schema rejects the decoder rejects.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from streams.pipeline.events import (
    DEAD_LETTER_REASONS,
    LANG_PATTERN,
    DeadLetter,
    EnrichedComment,
    InvalidEvent,
    Source,
    decode_comment,
    encode_dead_letter,
    encode_enriched,
    ip_hash,
    load_schema,
)
from streams.pipeline.territory import SCOPES, UNKNOWN, Territory

NAMES = ("comment", "enriched_comment", "dead_letter")
MODELS: dict[str, type[msgspec.Struct]] = {"enriched_comment": EnrichedComment, "dead_letter": DeadLetter}
REQUIRED = ("event_id", "user_id", "post_id", "text", "ip", "created_at")


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), format_checker=FormatChecker())


COMMENT = validator("comment")
ENRICHED = validator("enriched_comment")
DEAD = validator("dead_letter")


def to_bytes(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def accepted(obj: object) -> bool:
    try:
        decode_comment(to_bytes(obj), max_bytes=1 << 20)
    except InvalidEvent as exc:
        reason = exc.reason
    else:
        return True
    assert reason == "schema"  # valid JSON, UTF-8 by construction: only the schema can fail
    return False


# --- the schemas themselves ----------------------------------------------------------------------------


def test_format_checking_is_really_on() -> None:
    # jsonschema silently skips date-time unless rfc3339-validator is installed: prove it is checking.
    assert not Draft202012Validator({"format": "date-time"}, format_checker=FormatChecker()).is_valid(
        "2026-11-25 10:00:00"
    )


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_well_formed_and_documented(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"https://shudi.dev/schemas/{name}.schema.json"
    assert schema["title"]
    assert schema["description"]
    assert len(schema["examples"]) >= 3

    def walk(node: dict[str, Any], path: str) -> None:
        for prop, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{prop} has no description"
            walk(sub, f"{path}.{prop}")

    walk(schema, "$")


def test_load_schema_missing_is_clear() -> None:
    with pytest.raises(FileNotFoundError, match="repository root"):
        load_schema("nope")


def test_vocabularies_agree() -> None:
    dl = load_schema("dead_letter")
    assert tuple(dl["properties"]["reason"]["enum"]) == DEAD_LETTER_REASONS
    scope = load_schema("enriched_comment")["properties"]["territory"]["properties"]["scope"]
    assert tuple(scope["enum"]) == SCOPES
    assert tuple(load_schema("comment")["required"]) == REQUIRED


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_valid_and_accepted_by_the_code(name: str) -> None:
    v = validator(name)
    for example in load_schema(name)["examples"]:
        errors = [e.message for e in v.iter_errors(example)]
        assert not errors, errors
        if name == "comment":
            comment = decode_comment(to_bytes(example))
            assert comment.event_id == example["event_id"]
        else:
            msgspec.json.decode(to_bytes(example), type=MODELS[name])
        if name == "dead_letter":
            for field in ("original_b64", "original_key_b64"):
                if example[field] is not None:
                    base64.b64decode(example[field], validate=True)


# --- strategies ------------------------------------------------------------------------------------------

ids = st.text(min_size=1, max_size=128)
offsets = st.sampled_from([0, 345, -300, 480, 330, 765, -570, -720, 840, 23 * 60 + 59]).map(
    lambda m: timezone(timedelta(minutes=m))
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    dt = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets))
    text = dt.isoformat()
    if dt.utcoffset() == timedelta(0):
        text = text[: -len("+00:00")] + draw(st.sampled_from(["Z", "+00:00", "-00:00"]))
    return text


langs = st.from_regex(LANG_PATTERN.replace("(?!\\n)", ""), fullmatch=True).filter(lambda s: len(s) <= 35)


@st.composite
def comments(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": draw(ids),
        "user_id": draw(ids),
        "post_id": draw(ids),
        "text": draw(st.text(max_size=300)),
        "ip": str(draw(st.ip_addresses())),
        "created_at": draw(rfc3339()),
    }
    for key, values in (("platform", st.text(max_size=64)), ("lang", langs)):
        choice = draw(st.sampled_from(["absent", "null", "value"]))
        if choice != "absent":
            obj[key] = None if choice == "null" else draw(values)
    extra = draw(
        st.dictionaries(st.text(min_size=1).filter(lambda k: k not in obj), st.integers(), max_size=2)
    )
    return {**obj, **extra}


territories = st.builds(
    Territory,
    code=st.sampled_from(["CN-GD", "CN-XZ", "HK", "MO", "TW", "US", "NP", "ZZ"]),
    name_zh=st.sampled_from(["广东", "西藏", "中国香港", "美国", "未知"]),
    name_en=st.sampled_from(["Guangdong", "Tibet", "Hong Kong", "United States", "Unknown"]),
    scope=st.sampled_from(SCOPES),
    country_code=st.one_of(st.none(), st.sampled_from(["CN", "HK", "US", "NP"])),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the code's output is valid ---------------------------------------------------------------------


@FAST
@given(comments(), territories, st.binary(max_size=8), st.booleans())
def test_emitted_events_are_valid(
    obj: dict[str, Any], territory: Territory, key: bytes, hashed: bool
) -> None:
    assert COMMENT.is_valid(obj)
    raw = to_bytes(obj)
    comment = decode_comment(raw, max_bytes=1 << 20)
    address = ipaddress.ip_address(comment.ip)
    digest = ip_hash(key, address) if hashed else None
    out = encode_enriched(comment, territory, datetime.now(UTC), "2026-11-21T00:00:00Z", digest)
    enriched = json.loads(out)
    assert not [e.message for e in ENRICHED.iter_errors(enriched)]
    assert "ip" not in enriched
    assert set(enriched) <= set(load_schema("enriched_comment")["properties"])
    assert enriched["created_at"] == obj["created_at"]  # passed through as written

    src = Source(topic="comments", partition=3, offset=12345, timestamp_ms=None)
    for reason in DEAD_LETTER_REASONS:
        dead = json.loads(encode_dead_letter(reason, obj["text"], raw, key or None, src, datetime.now(UTC)))
        assert not [e.message for e in DEAD.iter_errors(dead)]
        assert base64.b64decode(dead["original_b64"]) == raw


def test_enriched_of_unknown_territory_is_valid() -> None:
    comment = decode_comment(to_bytes(load_schema("comment")["examples"][0]))
    out = json.loads(encode_enriched(comment, UNKNOWN, datetime.now(UTC), "b", None))
    assert ENRICHED.is_valid(out)
    assert "ip_hash" not in out


def test_dead_letter_of_null_value_and_long_detail_is_valid() -> None:
    src = Source(topic="comments", partition=0, offset=0, timestamp_ms=1795600800000)
    dead = json.loads(encode_dead_letter("empty", "x" * 5000, None, None, src, datetime.now(UTC)))
    assert not [e.message for e in DEAD.iter_errors(dead)]
    assert dead["original_b64"] is None
    assert len(dead["detail"]) <= 500


# --- schema-accepted <=> decoder-accepted -------------------------------------------------------------


@FAST
@given(comments())
def test_schema_valid_comments_are_accepted(obj: dict[str, Any]) -> None:
    assert COMMENT.is_valid(obj)
    assert accepted(obj)


@FAST
@given(
    comments(), st.sampled_from([*REQUIRED, "platform", "lang"]), st.one_of(json_values, st.just("<drop>"))
)
def test_schema_and_decoder_agree_on_mutated_comments(obj: dict[str, Any], field: str, value: object) -> None:
    if value == "<drop>":
        obj.pop(field, None)
    else:
        obj[field] = value
    assert COMMENT.is_valid(obj) == accepted(obj), obj


@st.composite
def almost_timestamps(draw: st.DrawFn) -> str:
    """RFC 3339-looking strings with one character changed: near the boundary of what is valid."""
    text = draw(rfc3339())
    i = draw(st.integers(0, len(text) - 1))
    ch = draw(st.sampled_from(string.digits + "TtZz :+-.\n"))
    return text[:i] + ch + text[i + 1 :] if draw(st.booleans()) else text[:i] + text[i + 1 :]


@FAST
@given(comments(), almost_timestamps())
def test_schema_and_decoder_agree_on_timestamps(obj: dict[str, Any], created_at: str) -> None:
    obj["created_at"] = created_at
    assert COMMENT.is_valid(obj) == accepted(obj), created_at


BASE: dict[str, Any] = {
    "event_id": "e-1",
    "user_id": "u-1",
    "post_id": "p-1",
    "text": "你好",
    "ip": "203.0.113.7",
    "created_at": "2026-11-25T10:00:00+08:00",
}
WRONG_TYPES: tuple[object, ...] = (1, 1.5, True, None, [], {}, ["a"])
BAD_LANGS: tuple[object, ...] = ("", "zh_CN", "abcdefghi", "zh-", "中文", "zh\n", 5, "a" * 36)
BAD_PLATFORMS: tuple[object, ...] = (5, "p" * 65, [])
REJECTED: list[tuple[str, object]] = [
    *[(f, "<drop>") for f in REQUIRED],
    *[(f, v) for f in REQUIRED for v in WRONG_TYPES],
    *[(f, "") for f in ("event_id", "user_id", "post_id", "ip")],
    *[(f, "x" * 129) for f in ("event_id", "user_id", "post_id")],
    ("text", "字" * 10_001),
    ("text", "😀" * 10_001),
    ("ip", "1" * 65),
    *[
        ("created_at", ts)
        for ts in (
            "2026-11-25 10:00:00",
            "2026-11-25T10:00:00",
            "2026-11-25 10:00:00Z",
            "2026-11-25t10:00:00Z",
            "2026-11-25T10:00:00z",
            "2026-11-25T10:00:00+0800",
            "2026-11-25T10:00:00+08",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:60Z",
            "2026-11-25T23:59:60Z",
            "2026-11-25T24:00:00Z",
            "2026-02-30T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "2026-11-25T10:00:00+24:00",
            "2026-11-25T10:00:00+05:60",
            "2026-11-25T10:00:00Z\n",
            "2026-11-25T10:00:00,5Z",
            "20261125T100000Z",
            "1795600800",
            "",
        )
    ],
    *[("lang", v) for v in BAD_LANGS],
    *[("platform", v) for v in BAD_PLATFORMS],
]


@pytest.mark.parametrize(("field", "value"), REJECTED)
def test_schema_rejected_is_decoder_rejected(field: str, value: object) -> None:
    obj = dict(BASE)
    if value == "<drop>":
        del obj[field]
    else:
        obj[field] = value
    assert not COMMENT.is_valid(obj)
    assert not accepted(obj)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("text", "字" * 10_000),
        ("text", "😀" * 10_000),  # code points, not UTF-16 units or bytes
        ("text", ""),
        ("event_id", "x" * 128),
        ("created_at", "2026-11-25T10:00:00.123456789-00:00"),
        ("created_at", "2024-02-29T23:59:59+05:45"),
        ("created_at", "0001-01-01T00:00:00Z"),
        ("lang", "zh-Hans-CN"),
        ("lang", None),
        ("platform", ""),
        ("platform", None),
        ("ip", "not an ip"),  # the schema only bounds it; the labeller dead-letters invalid_ip
    ],
)
def test_schema_accepted_is_decoder_accepted(field: str, value: object) -> None:
    obj = {**BASE, field: value}
    assert COMMENT.is_valid(obj)
    assert accepted(obj)
