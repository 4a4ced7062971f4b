"""Hostile input for the ``poison-pills`` row of the fault matrix (``bench.faults``), drawn from a seed.

:func:`hostile_messages` yields Kafka records (value, key, headers) of every kind a careless or malicious
producer can send to the input topic, mixed with valid comments; each says which outcomes are acceptable:
``enriched`` and/or the dead-letter reasons of ``schemas/dead_letter.schema.json``. ``internal_error`` is
never acceptable (it means a bug in shudi), and a message that is neither enriched nor dead-lettered is
lost. :func:`send_hostile` sends them and returns where each landed (partition, offset), which is what the
dead letters carry (``source``), so :func:`check_poison` matches every hostile message to its outcome.

Sizes respect the default limits of the harness's broker and producer (``message.max.bytes`` and
``max_request_size``, both about 1 MiB): a record's value, key and headers together stay under
:data:`MAX_RECORD_BYTES`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from streams.devtools.sample import comment
from streams.runtime.kafka import KafkaConnection

# Every dead-letter reason but internal_error (a failure inside shudi, never the right answer for input).
DEAD: Final = frozenset({"empty", "too_large", "invalid_encoding", "invalid_json", "schema", "invalid_ip"})
ENRICHED: Final = "enriched"
# What the broker (message.max.bytes 1048588) and aiokafka's producer (max_request_size 1048576) accept by
# default, less room for the record batch's own framing.
MAX_RECORD_BYTES: Final = 1_040_000
ONE_MB: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Hostile:
    kind: str
    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    expect: frozenset[str]  # acceptable outcomes: ENRICHED and/or dead-letter reasons
    # The event_id an enriched copy would carry, as a JSON reader sees it (None: it carries no string id).
    event_id: str | None
    ip: str | None  # the address it carries, for the privacy check

    @property
    def size(self) -> int:
        return (
            len(self.value or b"")
            + len(self.key or b"")
            + sum(len(k.encode("utf-8", "surrogatepass")) + len(v) for k, v in self.headers)
        )


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _id_of(value: bytes | None) -> str | None:
    """The string event_id a value would be enriched under, as a JSON reader sees it (None if none)."""
    if value is not None and value.startswith(b"\xef\xbb\xbf"):
        value = value[3:]  # Python's reader refuses a BOM that a comment reader may skip
    try:
        body = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    event_id = body.get("event_id") if isinstance(body, dict) else None
    return event_id if isinstance(event_id, str) else None


FIELDS: Final = ("event_id", "user_id", "post_id", "text", "ip", "created_at", "platform", "lang")
WRONG_VALUES: Final[tuple[object, ...]] = (0, -1, 1.5, True, False, None, [], {}, ["x"], {"a": 1}, "")


class _Maker:
    """The generators of each kind, sharing one random source and a clock for the valid comments."""

    def __init__(self, rng: random.Random, ips: Sequence[str], prefix: str) -> None:
        self.rng = rng
        self.ips = ips
        self.prefix = prefix
        self.i = 0
        self.when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
        # The biggest variants (100 kB and more) are rare, or 100,000 messages would be gigabytes; the first
        # pass over the kinds takes them all, so that even a short run meets each.
        self.first_pass = True
        self.huge_headers = 0

    def big(self, p: float = 0.03) -> bool:
        return self.first_pass or self.rng.random() < p

    def good(self) -> dict[str, object]:
        self.i += 1
        ip = self.rng.choice(self.ips)
        return comment(self.rng, f"{self.prefix}-{self.i}", ip, self.when + timedelta(milliseconds=self.i))

    def make(
        self,
        kind: str,
        value: bytes | None,
        expect: frozenset[str],
        ip: str | None,
        event_id: str | None = None,
    ) -> Hostile:
        key, headers = self.key_and_headers(value)
        return Hostile(kind, value, key, headers, expect, event_id or _id_of(value), ip)

    def key_and_headers(self, value: bytes | None) -> tuple[bytes | None, tuple[tuple[str, bytes], ...]]:
        rng = self.rng
        room = MAX_RECORD_BYTES - len(value or b"")
        roll = rng.random()
        key: bytes | None
        if roll < 0.5:
            key = None
        elif roll < 0.8:
            key = rng.randbytes(rng.randint(0, 64))
        else:
            key = "p\u202e\x00\ud800".encode("utf-8", "surrogatepass") * rng.randint(1, 50)
        if len(key or b"") > room // 2:
            key = None
        if value is None and key is None:
            key = b"tombstone"  # a Kafka client sends no record without a key and a value (aiokafka refuses)
        room -= len(key or b"")
        headers: list[tuple[str, bytes]] = []
        roll = rng.random()
        if roll < 0.5:
            pass
        elif roll < 0.8:
            # Odd names (empty, NUL, RTL, CJK) and binary values.
            for name in ("", "\x00", "\u202eevil", "名字", "content-type", "content-type"):
                headers.append((name, rng.randbytes(rng.randint(0, 32))))
        elif room > 300_000 and (self.huge_headers == 0 or roll > 0.998):
            self.huge_headers += 1
            headers = [("huge", rng.randbytes(200_000))]
        else:
            headers = [(f"h{j}", b"\xff" * rng.randint(0, 8)) for j in range(rng.randint(100, 1000))]
        return key, tuple(headers)


def _kinds(m: _Maker) -> list[tuple[str, float, Callable[[], Hostile]]]:
    """(kind, weight, make one)."""
    rng = m.rng

    def valid() -> Hostile:
        g = m.good()
        return m.make("valid", _dumps(g), frozenset({ENRICHED}), str(g["ip"]))

    def valid_odd_unicode() -> Hostile:
        # RTL overrides, BOM and NUL characters, escaped NUL, emoji and combining marks inside a string are
        # valid JSON and valid comments.
        g = m.good()
        g["text"] = rng.choice(
            ["\u202eevil\u202c", "\ufeffbom", "a\x00b", "\u0000", "🙂" * 50, "e\u0301" * 100, "\u200f\u061c"]
        )
        return m.make("valid-odd-unicode", _dumps(g), frozenset({ENRICHED}), str(g["ip"]))

    def random_bytes() -> Hostile:
        value = rng.randbytes(rng.randint(1, 4096))
        return m.make("random-bytes", value, DEAD | {ENRICHED}, None)

    def truncated() -> Hostile:
        g = m.good()
        raw = _dumps(g)
        # A proper prefix of an object is never a whole JSON value; a cut in a multi-byte character is
        # also not UTF-8.
        value = raw[: rng.randint(1, len(raw) - 1)]
        return m.make("truncated-json", value, frozenset({"invalid_json", "invalid_encoding"}), str(g["ip"]))

    def mutated() -> Hostile:
        g = m.good()
        raw = bytearray(_dumps(g))
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[pos] = rng.randrange(256)
            elif op < 0.7:
                del raw[pos]
            else:
                raw.insert(pos, rng.choice(b'{}[]",:\\\x00\xff0123456789eE+-.nulltrue '))
        # A mutation may leave a valid comment (a changed letter of the text): then it must be enriched,
        # under the event_id it now carries.
        return m.make("mutated-json", bytes(raw), DEAD | {ENRICHED}, str(g["ip"]))

    def deep() -> Hostile:
        depth = 100_000 if m.big() else rng.choice([100, 1000, 10_000])
        if rng.random() < 0.5:
            value = b"[" * depth + b"]" * depth
        else:
            g = m.good()
            value = _dumps(g)[:-1] + b',"x":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
            # Nested under an unknown field the comment is still a comment if the reader skips it; a
            # reader may also refuse the depth (invalid_json).
            return m.make(
                "deep-nesting-unknown-field",
                value,
                frozenset({ENRICHED, "invalid_json", "too_large"}),
                str(g["ip"]),
                event_id=str(g["event_id"]),  # Python's own reader gives up on the depth
            )
        return m.make("deep-nesting", value, frozenset({"invalid_json", "schema", "too_large"}), None)

    def huge_number() -> Hostile:
        g = m.good()
        field_name = rng.choice(FIELDS)
        numbers = [b"1e400", b"-1e400", b"1" + b"0" * 5000, b"1.5e-400", b"1" * 20, b"-0", b"1E+99999"]
        number = b"9" * 100_000 if m.big() else rng.choice(numbers)
        raw = _dumps({**g, field_name: "@@N@@"}).replace(b'"@@N@@"', number)
        return m.make("huge-number", raw, frozenset({"schema", "invalid_json", "too_large"}), str(g["ip"]))

    def huge_string() -> Hostile:
        g = m.good()
        field_name = rng.choice(FIELDS)
        # 300,000 × 3 bytes: under the 1 MiB record limit.
        n = 300_000 if m.big() else rng.choice([200, 10_001, 60_000])
        value = _dumps({**g, field_name: "长" * n if rng.random() < 0.5 else "x" * n})
        # Over the worker's byte limit it is too_large; under it, over the field's maxLength it is a schema
        # error (text allows 10,000 characters: 200 of them make a valid comment); an address that long may
        # also be refused as an address.
        expect = {"schema", "too_large"}
        if field_name == "text" and n <= 10_000:
            expect = {ENRICHED}
        elif field_name == "ip":
            expect.add("invalid_ip")
        return m.make("huge-string", value, frozenset(expect), str(g["ip"]))

    def one_mb() -> Hostile:
        g = m.good()
        g["text"] = "x" * ONE_MB
        value = _dumps(g)[: ONE_MB - 1] + b'"}'
        return m.make("1MB-value", value, frozenset({"too_large"}), str(g["ip"]))

    def odd_encoding() -> Hostile:
        g = m.good()
        g["text"] = "@@T@@"
        raw = _dumps(g)
        bad, expect = rng.choice(
            [
                (b"\\ud800", "invalid_encoding"),  # lone surrogate, escaped
                (b"\\udc00x", "invalid_encoding"),
                (b"a\\ud83d", "invalid_encoding"),  # a high surrogate without its low half
                (b"\xff\xfe", "invalid_encoding"),  # not UTF-8
                (b"\xc0\xaf", "invalid_encoding"),  # overlong '/'
                (b"\xe0\x80\xaf", "invalid_encoding"),  # overlong, 3 bytes
                (b"\xed\xa0\x80", "invalid_encoding"),  # a surrogate encoded in UTF-8 (CESU-8)
                (b"\xf4\x90\x80\x80", "invalid_encoding"),  # beyond U+10FFFF
                (b"\x00", "invalid_json"),  # a raw control character inside a string
            ]
        )
        return m.make("odd-encoding", raw.replace(b"@@T@@", bad), frozenset({expect}), str(g["ip"]))

    def bom() -> Hostile:
        g = m.good()
        # RFC 8259 §8.1: a parser MAY ignore a leading BOM; either answer is right, silence is not.
        value = b"\xef\xbb\xbf" + _dumps(g)
        return m.make("bom", value, frozenset({ENRICHED, "invalid_json", "invalid_encoding"}), str(g["ip"]))

    def utf16() -> Hostile:
        g = m.good()
        value = json.dumps(g, ensure_ascii=False).encode("utf-16")
        return m.make("utf-16", value, frozenset({"invalid_encoding"}), str(g["ip"]))

    def wrong_type() -> Hostile:
        g = m.good()
        field_name = rng.choice(FIELDS)
        wrong = rng.choice(WRONG_VALUES)
        if field_name in ("platform", "lang") and wrong is None:
            wrong = 7  # null is allowed there
        if wrong == "" and field_name in ("text", "platform"):
            wrong = 7  # an empty text / platform is allowed
        value = _dumps({**g, field_name: wrong})
        expect = {"schema"}
        if field_name == "ip" and wrong == "":
            expect = {"schema", "invalid_ip"}
        return m.make(f"wrong-type-{field_name}", value, frozenset(expect), None)

    def not_an_object() -> Hostile:
        value = rng.choice([b"[]", b'"text"', b"123", b"null", b"true", b"[{}]", b"{}", b"1e400"])
        return m.make("not-an-object", value, frozenset({"schema"}), None)

    def missing_field() -> Hostile:
        g = m.good()
        drop = rng.choice(FIELDS[:6])
        value = _dumps({k: v for k, v in g.items() if k != drop})
        return m.make("missing-field", value, frozenset({"schema"}), str(g["ip"]) if drop != "ip" else None)

    def bad_ip() -> Hostile:
        g = m.good()
        g["ip"] = rng.choice(["127.1", "1.2.3.4.5", "::ffff:zz", "١٢٣.1.1.1", "1.2.3.4\n", " 1.2.3.4", "x"])
        return m.make("bad-ip", _dumps(g), frozenset({"invalid_ip"}), None)

    def empty() -> Hostile:
        value = rng.choice([None, b""])
        return m.make("null-or-empty-value", value, frozenset({"empty"}), None)

    return [
        ("valid", 20, valid),
        ("valid-odd-unicode", 3, valid_odd_unicode),
        ("random-bytes", 10, random_bytes),
        ("truncated-json", 10, truncated),
        ("mutated-json", 12, mutated),
        ("deep-nesting", 2, deep),
        ("huge-number", 5, huge_number),
        ("huge-string", 2, huge_string),
        ("1MB-value", 0.05, one_mb),
        ("odd-encoding", 8, odd_encoding),
        ("bom", 1, bom),
        ("utf-16", 1, utf16),
        ("wrong-type", 12, wrong_type),
        ("not-an-object", 3, not_an_object),
        ("missing-field", 4, missing_field),
        ("bad-ip", 4, bad_ip),
        ("null-or-empty-value", 2, empty),
    ]


def hostile_messages(
    ips: Sequence[str], n: int, *, seed: int = 1, prefix: str = "poison"
) -> Iterator[Hostile]:
    """``n`` hostile messages (about a fifth of them valid comments), the same for the same arguments.
    The first ones go through every kind once, so even a short run meets each."""
    rng = random.Random(seed)
    maker = _Maker(rng, ips, f"{prefix}{seed}")
    kinds = _kinds(maker)
    weights = [w for _, w, _ in kinds]
    for i in range(n):
        maker.first_pass = i < len(kinds)
        _, _, make = kinds[i] if maker.first_pass else rng.choices(kinds, weights)[0]
        yield make()


# --------------------------------------------------------------------------- sending and checking


@dataclass(frozen=True, slots=True)
class Sent:
    message: Hostile
    partition: int
    offset: int


async def send_hostile(
    bootstrap: str, topic: str, messages: Sequence[Hostile], chunk: int = 2000
) -> list[Sent]:
    """Send every message (key, value, headers as they are) and return where each landed."""
    producer = KafkaConnection.plaintext(bootstrap).producer(linger_ms=5, max_request_size=1 << 20)
    await producer.start()
    sent: list[Sent] = []
    try:
        for i in range(0, len(messages), chunk):
            part = messages[i : i + chunk]
            futures = [
                await producer.send(
                    topic,
                    m.value,
                    key=m.key,
                    headers=[(k, v) for k, v in m.headers] or None,
                )
                for m in part
            ]
            for m, meta in zip(part, await asyncio.gather(*futures), strict=True):
                sent.append(Sent(m, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return sent


@dataclass
class PoisonReport:
    sent: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    enriched: int = 0
    dead_reasons: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    wrong: Counter[str] = field(default_factory=Counter)  # "kind: outcome" that was not acceptable
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"poison: sent {self.sent} enriched {self.enriched} dead-lettered {self.dead_reasons.total()} "
            f"{dict(sorted(self.dead_reasons.items()))} lost {self.lost} wrong {dict(self.wrong)} "
            f"duplicates {self.duplicates}"
        )


def check_poison(
    sent: Sequence[Sent],
    dead_at: dict[tuple[int, int], list[str]],
    enriched: Counter[str],
    report: PoisonReport | None = None,
) -> PoisonReport:
    """Match every hostile message to its outcome: the dead letters by the input partition and offset
    they carry, the enriched records by event_id. Takes the matched records out of ``dead_at`` and
    ``enriched`` (what is left belongs to the rest of the run)."""
    report = report if report is not None else PoisonReport()
    enriched_ids = Counter(
        s.message.event_id for s in sent if s.message.event_id is not None and ENRICHED in s.message.expect
    )
    for s in sent:
        m = s.message
        report.sent += 1
        report.kinds[m.kind] += 1
        reasons = dead_at.pop((s.partition, s.offset), [])
        copies = enriched.get(m.event_id, 0) if m.event_id is not None else 0
        if reasons:
            report.dead_reasons[reasons[0]] += 1
            report.duplicates += len(reasons) - 1
            for reason in set(reasons):
                if reason not in m.expect:
                    report.wrong[f"{m.kind}: {reason}"] += 1
        elif copies:
            report.enriched += 1
            if ENRICHED not in m.expect:
                report.wrong[f"{m.kind}: enriched"] += 1
        else:
            report.lost += 1
            if report.lost <= 3:
                report.problems.append(
                    f"{m.kind} at {s.partition}@{s.offset} neither enriched nor dead-lettered"
                )
    # Enriched copies of poison ids beyond one per message sent under that id are duplicates.
    for event_id, n in enriched_ids.items():
        got = enriched.pop(event_id, 0)
        if got:
            report.duplicates += max(0, got - n)
    if report.lost:
        report.problems.append(f"{report.lost} hostile messages lost")
    if report.wrong:
        report.problems.append(
            f"{report.wrong.total()} hostile messages with a wrong outcome: {dict(report.wrong)}"
        )
    return report


def fingerprint(messages: Sequence[Hostile]) -> str:
    """A digest of the messages (same seed, same digest): for tests and reports."""
    h = hashlib.sha256()
    for m in messages:
        h.update(base64.b64encode(m.value or b"-") + b"|" + base64.b64encode(m.key or b"-"))
        for k, v in m.headers:
            h.update(k.encode("utf-8", "surrogatepass") + v)
    return h.hexdigest()


def describe(messages: Sequence[Hostile]) -> dict[str, Any]:
    return {"messages": len(messages), "kinds": dict(Counter(m.kind for m in messages))}
