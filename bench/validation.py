"""Benchmark (not a test): decode + validate one comment event, per approach.

    python -m bench.validation [--events 20000] [--repeat 5] [--seed 7]

Events are ~600-byte realistic comments (Chinese text, IPv4/IPv6, offsets), 90% valid and 10% invalid in
the ways producers get it wrong. Each approach must turn bytes into "valid object" or "rejected"; the best
of --repeat runs over the whole set is reported, per event. pydantic, orjson and fastjsonschema are
bench-only dependencies (the `bench` extra).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import click
import fastjsonschema
import msgspec
import orjson
import pydantic
from jsonschema import Draft202012Validator, FormatChecker

from streams.devtools.sample import comment
from streams.pipeline.events import (
    LANG_PATTERN,
    RFC3339_PATTERN,
    Comment,
    InvalidEvent,
    decode_comment,
    load_schema,
)

PHRASES = [
    "这家店的服务态度真的需要改进",
    "排队等了四十分钟才拿到",
    "同意楼上的说法",
    "价格还算合理，味道一般",
    "客服回复很及时，点赞 👍",
    "物流太慢了，下次不会再买",
    "Great write-up, thanks!",
    "香港这边也是一样的情况",
]
OFFSETS = [
    timezone(timedelta(hours=8)),
    UTC,
    timezone(timedelta(hours=5, minutes=45)),
    timezone(timedelta(hours=-5)),
]


def realistic(rng: random.Random, i: int) -> dict[str, Any]:
    when = datetime(2026, 11, 25, 10, tzinfo=UTC) + timedelta(milliseconds=137 * i)
    ip = (
        f"{rng.choice([113, 223, 27, 39])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if rng.random() < 0.7
        else f"240e:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
    )
    # Drawn in this order (the corpus of a seed stays the same), then shaped by devtools.sample.comment.
    event_id = f"evt-{rng.getrandbits(80):020x}"
    user_id = f"u-{rng.randint(1, 10**9)}"
    post_id = f"p-{rng.randint(1, 500)}"
    text = "，".join(rng.choice(PHRASES) for _ in range(rng.randint(8, 13)))
    local = when.astimezone(rng.choice(OFFSETS))
    platform = rng.choice(["android", "ios", "web"])
    lang = rng.choice(["zh-CN", "zh-Hans", "en-US"])
    obj: dict[str, Any] = comment(
        rng, event_id, ip, local, text=text, user_id=user_id, post_id=post_id, platform=platform, lang=lang
    )
    if rng.random() < 0.3:
        obj["client_version"] = "9.3.1"  # an unknown field: tolerated
    return obj


def broken(rng: random.Random, obj: dict[str, Any]) -> bytes:
    good = json.dumps(obj, ensure_ascii=False).encode()
    kind = rng.randrange(8)
    if kind == 0:
        return good[: len(good) // 2]  # truncated
    if kind == 1:
        return good.replace(b'"text": "', b'"text": "\xff', 1)  # not UTF-8
    if kind == 2:
        return good.replace(b'"text": "', b'"text": "\\ud800', 1)  # lone surrogate
    if kind == 3:
        return json.dumps({**obj, "created_at": obj["created_at"][:19]}).encode()  # no offset
    if kind == 4:
        return json.dumps({**obj, "created_at": obj["created_at"].replace("T", " ")}).encode()
    if kind == 5:
        return json.dumps({k: v for k, v in obj.items() if k != "post_id"}).encode()  # missing
    if kind == 6:
        return json.dumps({**obj, "event_id": 12345}).encode()  # wrong type
    return json.dumps([obj]).encode()  # array


def corpus(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        obj = realistic(rng, i)
        out.append(broken(rng, obj) if rng.random() < 0.1 else json.dumps(obj, ensure_ascii=False).encode())
    return out


# --- the approaches: each returns True (valid) or False (rejected) --------------------------------------

_Id = Annotated[str, pydantic.Field(min_length=1, max_length=128)]


class PydanticComment(pydantic.BaseModel):
    # python-re: the schema patterns use a look-ahead, which pydantic-core's Rust regex lacks.
    model_config = pydantic.ConfigDict(extra="ignore", strict=True, frozen=True, regex_engine="python-re")

    event_id: _Id
    user_id: _Id
    post_id: _Id
    text: Annotated[str, pydantic.Field(max_length=10_000)]
    ip: Annotated[str, pydantic.Field(min_length=1, max_length=64)]
    created_at: Annotated[str, pydantic.Field(max_length=35, pattern=RFC3339_PATTERN)]
    platform: Annotated[str, pydantic.Field(max_length=64)] | None = None
    lang: Annotated[str, pydantic.Field(max_length=35, pattern=LANG_PATTERN)] | None = None

    @pydantic.field_validator("created_at")
    @classmethod
    def _calendar(cls, value: str) -> str:
        datetime.fromisoformat(value)  # same calendar check as streams.pipeline.events
        return value


def a_msgspec(raw: bytes) -> bool:
    try:
        decode_comment(raw)
    except InvalidEvent:
        return False
    return True


_LENIENT = msgspec.json.Decoder(Comment)


def a0_msgspec_lenient(raw: bytes) -> bool:
    # msgspec's own datetime parsing, without the strict RFC 3339 pattern: the cost of strictness.
    try:
        _LENIENT.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return True


def b_pydantic(raw: bytes) -> bool:
    try:
        PydanticComment.model_validate(json.loads(raw))
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError and ValidationError are ValueErrors
        return False
    return True


_SCHEMA = load_schema("comment")
_JSONSCHEMA = Draft202012Validator(_SCHEMA, format_checker=FormatChecker())
# fastjsonschema knows drafts 4/6/7; the comment schema uses nothing newer, so compile it as draft 7.
_FAST = fastjsonschema.compile({**_SCHEMA, "$schema": "http://json-schema.org/draft-07/schema#"})


def c_jsonschema(raw: bytes) -> bool:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return bool(_JSONSCHEMA.is_valid(obj))


def d_fastjsonschema(raw: bytes) -> bool:
    try:
        _FAST(orjson.loads(raw))
    except (orjson.JSONDecodeError, fastjsonschema.JsonSchemaValueException):
        return False
    return True


def e_json_only(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


APPROACHES: list[tuple[str, Callable[[bytes], bool]]] = [
    ("(a) msgspec typed decode (streams.pipeline.events.decode_comment)", a_msgspec),
    ("(a0) msgspec Decoder(Comment), lenient timestamps", a0_msgspec_lenient),
    ("(b) json.loads + pydantic v2 (strict)", b_pydantic),
    ("(c) orjson + jsonschema Draft202012Validator", c_jsonschema),
    ("(d) orjson + fastjsonschema (compiled)", d_fastjsonschema),
    ("(e) json.loads only, no validation (floor)", e_json_only),
]


@click.command(help=__doc__)
@click.option("--events", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
def main(events: int, repeat: int, seed: int) -> None:
    corpus_ = corpus(events, seed)
    sizes = sorted(len(e) for e in corpus_)
    print(f"{len(corpus_)} events, median {sizes[len(sizes) // 2]} bytes, best of {repeat} (CPU time)")
    print(f"{'approach':58} {'µs/event':>9} {'events/s':>11} {'valid':>6}")
    for name, check in APPROACHES:
        n = len(corpus_) if name[:3] != "(c)" else max(1, len(corpus_) // 10)  # jsonschema is slow
        sample = corpus_[:n]
        best = float("inf")
        valid = 0
        for _ in range(repeat):
            # CPU time of this process, not wall time: shared CI/dev machines preempt us, which is noise here.
            start = time.process_time()
            valid = sum(check(raw) for raw in sample)
            best = min(best, time.process_time() - start)
        per = best / n
        print(f"{name:58} {per * 1e6:9.2f} {1 / per:11,.0f} {valid / n:6.1%}")


if __name__ == "__main__":
    main()
