"""The event contract in code: msgspec models of schemas/*.schema.json, a validating decoder and encoders.

The JSON Schemas at the repository root are the source of truth; tests/pipeline/test_schemas.py checks that
these models accept and emit exactly what the schemas describe. Change both together.

Performance: a comment is decoded *and* validated in one pass by a ``msgspec.json.Decoder`` built once at
import; every constraint that msgspec checks in C (lengths, types, required fields) is expressed as
``msgspec.Meta``. The two patterns (``created_at``, ``lang``) are checked in Python once per distinct value,
which repeat from event to event, so the Python work per event is two dict lookups.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from streams.pipeline.territory import Territory

SCHEMA_VERSION: Final[Literal[1]] = 1
"""``schema_version`` of every event shudi writes (enriched and dead-letter); input comments carry none."""

DeadLetterReason = Literal[
    "empty",  # null (tombstone) or zero-length value
    "too_large",  # value over max_bytes
    "invalid_encoding",  # not UTF-8, or a lone UTF-16 surrogate escape
    "invalid_json",  # not JSON syntax
    "schema",  # JSON that breaks comment.schema.json
    "invalid_ip",  # `ip` is not an address (checked by the labeller, not here)
    "internal_error",  # a bug or failure inside shudi
]
# A fixed vocabulary: it is a metric label, and the dead-letter schema's enum (in this order).
DEAD_LETTER_REASONS: Final[tuple[DeadLetterReason, ...]] = get_args(DeadLetterReason)

MAX_TEXT_CHARS: Final = 10_000  # code points, as JSON Schema's maxLength and Python's len() count them
MAX_DETAIL_CHARS: Final = 500
CREATED_AT_DETAIL: Final = "created_at: expected RFC 3339 date-time with timezone offset (Z or ±hh:mm)"

# Same regex as the schemas' `created_at` pattern. msgspec's own datetime parser is lenient (space or
# lower-case `t` separator, `+0545` offsets) where RFC 3339 and the schema are not, so the text is checked
# against this first. `(?!\n)`: Python's `$` also matches before a final newline.
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"  # date; the calendar (no 02-30) is checked by datetime.fromisoformat
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"  # time; no leap second, as rfc3339-validator
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])(?!\n)$"  # offset, required
)
LANG_PATTERN: Final = r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*(?!\n)$"

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
_Ip = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Platform = Annotated[str, msgspec.Meta(max_length=64)]
_Lang = Annotated[str, msgspec.Meta(max_length=35, pattern=LANG_PATTERN)]
_Rfc3339Text = Annotated[str, msgspec.Meta(max_length=35, pattern=RFC3339_PATTERN)]
# The decoder checks only the length of created_at and lang: a regex per field in the decoder cost more than
# the rest of the decoding (1.9 of 3.5 µs), and both repeat from event to event, so decode_comment checks
# each distinct value once and remembers the good ones (see _event_seconds and _good_lang).
_ShortText = Annotated[str, msgspec.Meta(max_length=35)]
_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class InvalidEvent(ValueError):  # noqa: N818 -- the name the labeller and its tests use
    """An input message that cannot become a :class:`Comment`; ``reason`` is from DEAD_LETTER_REASONS."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        detail = _bounded(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason: DeadLetterReason = reason
        self.detail: str = detail


# gc=False: these hold only strings, numbers, datetimes and other gc=False structs, never cycles, and
# skipping GC tracking makes allocation cheaper and keeps millions of in-flight events out of GC passes.
class Comment(msgspec.Struct, frozen=True, gc=False):
    """A validated input comment (schemas/comment.schema.json); unknown input fields are dropped.

    ``created_at`` stays the text it came as (the enriched event carries it unchanged); its event time is
    :func:`event_seconds`. The decoder checks its length; :func:`decode_comment` checks the rest.
    """

    event_id: _Id
    user_id: _Id
    post_id: _Id
    text: _Text
    ip: _Ip  # raw text: the labeller parses it strictly and dead-letters `invalid_ip`
    created_at: _ShortText
    platform: _Platform | None = None
    lang: _ShortText | None = None


class EnrichedComment(msgspec.Struct, frozen=True, gc=False, omit_defaults=True, kw_only=True):
    """The labelled comment (schemas/enriched_comment.schema.json): no ``ip``; absent optionals omitted."""

    # Required with no default: omit_defaults (which drops None optionals, the schema has no nulls there)
    # would otherwise drop it too. kw_only lets required fields follow defaulted ones.
    schema_version: Literal[1]
    event_id: _Id
    user_id: _Id
    post_id: _Id
    text: _Text
    created_at: _Rfc3339Text  # as the input comment gave it
    territory: Territory
    enriched_at: _AwareDatetime
    db_build: str
    platform: _Platform | None = None
    lang: _Lang | None = None
    ip_hash: str | None = None


class Source(msgspec.Struct, frozen=True, gc=False):
    """Where a dead-lettered message was read."""

    topic: str
    partition: Annotated[int, msgspec.Meta(ge=0)]
    offset: Annotated[int, msgspec.Meta(ge=0)]
    timestamp_ms: int | None


class DeadLetter(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A message shudi could not process (schemas/dead_letter.schema.json)."""

    schema_version: Literal[1]
    reason: DeadLetterReason
    detail: Annotated[str, msgspec.Meta(max_length=MAX_DETAIL_CHARS)]
    original_b64: str | None
    original_key_b64: str | None
    source: Source
    failed_at: _AwareDatetime


_DECODER: Final = msgspec.json.Decoder(Comment)
_ENCODER: Final = msgspec.json.Encoder()


def _bounded(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[: MAX_DETAIL_CHARS - 1] + "…"


def _field_of(message: str) -> str | None:
    # msgspec messages end with " - at `$.field`" (a path, never a value).
    marker = " - at `$."
    at = message.rfind(marker)
    return message[at + len(marker) : -1] if at >= 0 else None


def _schema_detail(message: str) -> str:
    """Turn a msgspec ValidationError message into the dead-letter detail.

    msgspec names the path and the expectation, not the value, so the IP never leaks; the regex text of a
    pattern error is replaced by words because it is long and means nothing to an operator.
    """
    field = _field_of(message)
    if message.startswith("Object missing required field"):
        return message.replace("Object missing required field", "missing required field", 1)
    if field is None:
        return message  # e.g. "Expected `object`, got `array`"
    if field == "created_at" and ("regex" in message or "datetime" in message or "RFC3339" in message):
        return CREATED_AT_DETAIL
    expectation = message[: message.rfind(" - at `$.")]
    if "regex" in expectation:
        expectation = "value does not match the schema's pattern"
    return f"{field}: {expectation}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _is_json_apart_from_encoding(raw: bytes) -> bool:
    """Whether the stdlib parser, which allows lone surrogates (and detects UTF-16/32), accepts ``raw``.

    Runs only on the error path, for a message msgspec has already refused as malformed: if it is otherwise
    well-formed JSON, the encoding is what msgspec refused.
    """
    try:
        json.loads(raw, parse_constant=_reject_constant)  # NaN/Infinity: invalid JSON for both parsers
    except (ValueError, RecursionError):
        return False
    return True


def decode_comment(raw: bytes | None, *, max_bytes: int = 65_536) -> Comment:
    """Parse and validate one input message value; raise :class:`InvalidEvent` with a reason if it fails.

    Does not check that ``ip`` parses as an address (the labeller does, reason ``invalid_ip``).
    """
    if not raw:
        raise InvalidEvent("empty", "value is null (tombstone)" if raw is None else "value is empty")
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"value is {len(raw)} bytes, limit is {max_bytes}")
    if not raw.isascii():
        # msgspec checks the UTF-8 of the strings it keeps but not of unknown fields it skips; a message
        # that is not UTF-8 is not JSON (RFC 8259), whichever field holds the bad bytes. ~0.6 µs/600 B.
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            raise InvalidEvent("invalid_encoding", f"value is not valid UTF-8 ({exc.reason})") from None
    try:
        comment = _DECODER.decode(raw)
    except UnicodeDecodeError as exc:
        # msgspec validates UTF-8 of every string it keeps; bytes of skipped unknown fields are not
        # checked but are dropped, so they can never reach an encoder.
        raise InvalidEvent("invalid_encoding", f"value is not valid UTF-8 ({exc.reason})") from None
    except msgspec.ValidationError as exc:
        raise InvalidEvent("schema", _schema_detail(str(exc))) from None
    except RecursionError:
        # msgspec recurses once per nesting level, also in unknown fields it skips: a value nested a few
        # thousand deep ({"x":[[[[...) exhausts the interpreter's stack. RFC 8259 (section 9) lets a parser
        # limit the depth; such a value is refused like any other JSON this reader cannot take (it used to
        # end as internal_error, with a traceback logged per message).
        raise InvalidEvent("invalid_json", "JSON nested too deeply") from None
    except msgspec.DecodeError as exc:
        message = str(exc)
        # msgspec refuses every lone UTF-16 surrogate escape ("\ud800"), even in skipped fields, so none
        # can reach an encoder; but it reports them as malformed (or, at the end of a string, truncated)
        # JSON. They are an encoding problem, so tell them apart from syntax errors.
        if "surrogate" in message or _is_json_apart_from_encoding(raw):
            raise InvalidEvent(
                "invalid_encoding", f"lone UTF-16 surrogate escape or not UTF-8: {message}"
            ) from None
        raise InvalidEvent("invalid_json", message) from None
    event_seconds(comment.created_at)
    if comment.lang is not None and comment.lang not in _GOOD_LANGS:
        _check_lang(comment.lang)
    return comment


class _Keyed(msgspec.Struct):
    post_id: object = None


_KEY_DECODER: Final = msgspec.json.Decoder(_Keyed)


def post_id_key(raw: bytes) -> bytes | None:
    """The record key a comment is sent with: its ``post_id`` (the key the worker gives an enriched
    record whose input had none), read leniently, so a bad event that still has one keeps it (``shudi
    send``, the simulator); None when the value is not JSON or has no string ``post_id``."""
    try:
        post_id = _KEY_DECODER.decode(raw).post_id
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return post_id.encode() if isinstance(post_id, str) else None


_RFC3339: Final = re.compile(RFC3339_PATTERN)
_LANG: Final = re.compile(LANG_PATTERN)
_SECONDS: dict[str, float] = {}
_SECONDS_MAX: Final = 65_536  # texts with sub-second digits rarely repeat: the cache is emptied when full
_GOOD_LANGS: set[str] = set()
_GOOD_LANGS_MAX: Final = 4096


def event_seconds(created_at: str) -> float:
    """The Unix time of a ``created_at`` text; raises InvalidEvent (``schema``) unless it is RFC 3339 with
    an offset, as the schema's pattern says, and a real calendar date (no 2026-02-30)."""
    seconds = _SECONDS.get(created_at)
    if seconds is not None:
        return seconds
    if _RFC3339.match(created_at) is None:
        raise InvalidEvent("schema", CREATED_AT_DETAIL)
    try:
        seconds = datetime.fromisoformat(created_at).timestamp()
    except ValueError as exc:
        raise InvalidEvent("schema", f"created_at: not a valid date-time ({exc})") from None
    if len(_SECONDS) >= _SECONDS_MAX:
        _SECONDS.clear()
    _SECONDS[created_at] = seconds
    return seconds


def _check_lang(lang: str) -> None:
    if _LANG.match(lang) is None:
        raise InvalidEvent("schema", "lang: value does not match the schema's pattern")
    if len(_GOOD_LANGS) < _GOOD_LANGS_MAX:
        _GOOD_LANGS.add(lang)


def encode_enriched(
    comment: Comment, territory: Territory, enriched_at: datetime, db_build: str, ip_hash: str | None
) -> bytes:
    """Serialise the labelled comment; the ``ip`` is left out by construction (EnrichedComment has none)."""
    return _ENCODER.encode(
        EnrichedComment(
            schema_version=SCHEMA_VERSION,
            event_id=comment.event_id,
            user_id=comment.user_id,
            post_id=comment.post_id,
            text=comment.text,
            created_at=comment.created_at,
            territory=territory,
            enriched_at=enriched_at,
            db_build=db_build,
            platform=comment.platform,
            lang=comment.lang,
            ip_hash=ip_hash,
        )
    )


def encode_dead_letter(
    reason: DeadLetterReason,
    detail: str,
    original: bytes | None,
    original_key: bytes | None,
    source: Source,
    failed_at: datetime,
) -> bytes:
    """Serialise a dead letter; the original bytes go as base64 so any value (not UTF-8, huge) survives."""
    return _ENCODER.encode(
        DeadLetter(
            schema_version=SCHEMA_VERSION,
            reason=reason,
            detail=_bounded(detail),
            original_b64=None if original is None else base64.b64encode(original).decode("ascii"),
            original_key_b64=None if original_key is None else base64.b64encode(original_key).decode("ascii"),
            source=source,
            failed_at=failed_at,
        )
    )


def ip_hash(key: bytes, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Keyed HMAC-SHA256 of the address, 64 lower-case hex digits.

    Keyed because an unkeyed hash of an IPv4 address is reversed by hashing all 2**32 of them. The address
    is normalised first (an IPv4-mapped IPv6 address is its IPv4 address) so one client hashes the same
    whichever way it is written, and hashed as packed bytes so textual variants cannot differ.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return hmac.new(key, ip.packed, hashlib.sha256).hexdigest()


SCHEMAS_DIR: Final = Path(__file__).resolve().parents[2] / "schemas"


def load_schema(name: str) -> dict[str, Any]:
    """Read ``schemas/<name>.schema.json`` (at the repository root, not inside the package)."""
    path = SCHEMAS_DIR / f"{name}.schema.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"schema {name!r} not found at {path}: schemas/ lives at the repository root, so load_schema "
            "needs a source checkout (or an editable install)"
        )
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


# --- the internal counts topic (schemas/territory_counts.schema.json) ---------------------------------------

MAX_DELTA_POSTS: Final = 32


class WindowDelta(msgspec.Struct, array_like=True, frozen=True, gc=False):
    start: int  # window start, Unix seconds
    count: int
    posts: list[tuple[str, int]]  # the batch's busiest posts in the window, at most MAX_DELTA_POSTS


# A delta and a tick travel only inside a CountBatch; each keeps its `kind` tag, which the schema requires.
class CountDelta(msgspec.Struct, tag="delta", tag_field="kind", frozen=True, gc=False, kw_only=True):
    schema_version: Literal[1] = SCHEMA_VERSION
    territory: Territory
    windows: list[WindowDelta]


class Tick(msgspec.Struct, tag="tick", tag_field="kind", frozen=True, gc=False, kw_only=True):
    schema_version: Literal[1] = SCHEMA_VERSION
    source: int
    watermark: float
    idle: bool = False
    totals: list[tuple[int, int]]
    # The sender's wall time (Unix seconds); 0 from workers of a release before it. Source silence is judged
    # on these, not on when the counting agent reads the tick (see PartitionClock.apply_tick).
    sent_at: float = 0.0
    # The same comments per window and territory, [window start, territory code, comments]: only on ticks
    # to the partition that runs the global detector, which judges a surge by how broad it is.
    by_territory: list[tuple[int, str, int]] = msgspec.field(default_factory=list)


class CountBatch(msgspec.Struct, tag="batch", tag_field="kind", frozen=True, gc=False, kw_only=True):
    """Everything one flush of one worker has for one counting partition: the deltas of the territories
    that partition owns, then the ticks. One message instead of one per territory and per tick, because
    the counting agent pays Faust's per-message cost (and a table write) for each."""

    schema_version: Literal[1] = SCHEMA_VERSION
    deltas: list[CountDelta]
    ticks: list[Tick]


_COUNTS_DECODER: Final = msgspec.json.Decoder(CountBatch)


def encode_count_message(message: CountBatch) -> bytes:
    return _ENCODER.encode(message)


def decode_count_message(raw: bytes) -> CountBatch:
    """Raises msgspec.DecodeError (incl. ValidationError) for anything else, a lone delta or tick too."""
    return _COUNTS_DECODER.decode(raw)


# --- burst events (schemas/burst.schema.json) ---------------------------------------------------------------

BurstKind = Literal["started", "updated", "ended"]
BurstType = Literal["regional", "global"]


class TopPost(msgspec.Struct, frozen=True, gc=False):
    post_id: str
    count: int


class BurstEvent(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: BurstKind
    type: BurstType
    burst_id: str
    territory: Territory | None
    window_start: datetime
    window_end: datetime
    burst_start: datetime | None = None
    count: int
    baseline: float
    score: float | None
    share_score: float | None
    top_posts: list[TopPost]
    emitted_at: datetime


def encode_burst(event: BurstEvent) -> bytes:
    return _ENCODER.encode(event)
