"""streams.pipeline.enrich: one batch in, enriched records and dead letters out (fixture DB)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.devtools.sample import bad_event, comment
from streams.pipeline.enrich import (
    INVALID_IP_DETAIL,
    MAX_DEAD_LETTER_KEY,
    MAX_DEAD_LETTER_ORIGINAL,
    BatchResult,
    Enricher,
    InRecord,
)
from streams.pipeline.events import DEAD_LETTER_REASONS, decode_comment
from streams.pipeline.geodb.labeller import Labeller, compile_files
from streams.pipeline.territory import UNKNOWN, InvalidIP, Label, Territory, parse_ip
from streams.pipeline.windows import WindowSpec
from tests.geoip_fixtures import CASES, NOT_FOUND, Expected

NOW = 1_790_000_000.25  # 2026-09-21T...: the injected clock
MAX_BYTES = 4096
TOPIC = "comments"
PARTITION = 5


def _territory(want: Expected | str) -> Territory:
    if isinstance(want, str):
        return UNKNOWN
    code, zh, en, scope, cc = want
    return Territory(code, zh, en, scope, cc)  # type: ignore[arg-type]


def good(ip: str, n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"evt-{n}",
        "user_id": f"u-{n}",
        "post_id": f"post-{n}",
        "text": f"评论 {n}",
        "ip": ip,
        "created_at": "2026-11-25T18:04:05.123+08:00",
        "platform": "weibo",
        "lang": "zh-CN",
        **extra,
    }


def enc(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def rec(
    value: bytes | None, offset: int = 0, key: bytes | None = None, ts: int | None = 1_764_000_000_000
) -> InRecord:
    return InRecord(TOPIC, PARTITION, offset, key, value, ts)


def clock() -> float:
    return NOW


@pytest.fixture
def labeller(fixture_db_path: Path) -> Labeller:
    return Labeller.open(fixture_db_path, 1024)


@pytest.fixture
def enricher(labeller: Labeller) -> Enricher:
    return Enricher(labeller, max_message_bytes=MAX_BYTES, clock=clock)


def dead_json(result: BatchResult) -> list[dict[str, Any]]:
    return [json.loads(d.value) for d in result.dead_letters]


def enriched_json(result: BatchResult) -> list[dict[str, Any]]:
    return [json.loads(o.value) for o in result.enriched]


# --- valid records ------------------------------------------------------------------------------------------


def test_valid_records_are_enriched_in_order_with_the_known_territory(enricher: Enricher) -> None:
    ips = [c[2] for c in CASES] + list(NOT_FOUND)
    wants: list[Expected | str] = [c[3] for c in CASES] + ["not_found"] * len(NOT_FOUND)
    records = [
        rec(enc(good(ip, i)), offset=100 + i, key=f"k{i}".encode() if i % 2 else None)
        for i, ip in enumerate(ips)
    ]
    result = enricher.process_batch(records)
    assert result.dead_letters == []
    assert len(result.enriched) == len(records)
    for i, (out, ip, want) in enumerate(zip(result.enriched, ips, wants, strict=True)):
        obj = json.loads(out.value)
        assert obj["event_id"] == f"evt-{i}", "output order is input order"
        assert out.key == (f"k{i}".encode() if i % 2 else f"post-{i}".encode())
        t = _territory(want)
        assert obj["territory"] == {
            "code": t.code,
            "name_zh": t.name_zh,
            "name_en": t.name_en,
            "scope": t.scope,
            "country_code": t.country_code,
        }, ip
    assert result.stats.enriched == len(records)


def test_enriched_output_carries_the_comment_fields(enricher: Enricher, labeller: Labeller) -> None:
    src = good("1.0.1.7", 7, text="原文 ✓")
    [out] = enricher.process_batch([rec(enc(src), key=b"given-key")]).enriched
    assert out.key == b"given-key"
    obj = json.loads(out.value)
    assert obj["schema_version"] == 1
    for name in ("event_id", "user_id", "post_id", "text", "platform", "lang"):
        assert obj[name] == src[name], name
    assert datetime.fromisoformat(obj["created_at"]) == datetime.fromisoformat(src["created_at"])
    assert obj["db_build"] == labeller.build == "GeoIP2-City 2026-01-01T00:00:00Z"
    assert obj["territory"]["code"] == "CN-GD"


def test_optional_fields_absent_in_input_are_absent_in_output(enricher: Enricher) -> None:
    src = {k: v for k, v in good("36.0.1.7").items() if k not in ("platform", "lang")}
    obj = enriched_json(enricher.process_batch([rec(enc(src))]))[0]
    assert "platform" not in obj
    assert "lang" not in obj
    assert obj["territory"]["code"] == "HK"


def test_enriched_at_and_failed_at_come_from_the_injected_clock(labeller: Labeller) -> None:
    times = iter([1_767_225_600.5, 1_800_000_000.0])
    enricher = Enricher(labeller, max_message_bytes=MAX_BYTES, clock=lambda: next(times))
    first = enricher.process_batch([rec(enc(good("1.0.1.7"))), rec(b"{")])
    second = enricher.process_batch([rec(enc(good("1.0.1.7")))])
    want_first = datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    assert datetime.fromisoformat(enriched_json(first)[0]["enriched_at"]) == want_first
    assert datetime.fromisoformat(dead_json(first)[0]["failed_at"]) == want_first
    assert datetime.fromisoformat(enriched_json(second)[0]["enriched_at"]) == datetime.fromtimestamp(
        1_800_000_000, UTC
    )


def test_empty_batch(enricher: Enricher) -> None:
    result = enricher.process_batch([])
    assert (result.enriched, result.dead_letters) == ([], [])
    assert result.stats.enriched == 0
    assert sum(result.stats.dead_reasons.values()) == 0


# --- bad records --------------------------------------------------------------------------------------------

_BASE = good("1.0.1.7", 1)
_BASE_BYTES = enc(_BASE)


def _with(**changes: Any) -> bytes:
    return enc({**_BASE, **changes})


def _without(name: str) -> bytes:
    return enc({k: v for k, v in _BASE.items() if k != name})


HAND_MADE: list[tuple[str, bytes | None, str]] = [
    ("empty", b"", "empty"),
    ("tombstone", None, "empty"),
    ("truncated-json", _BASE_BYTES[:-1], "invalid_json"),
    ("not-json", b"hello", "invalid_json"),
    ("nan", _BASE_BYTES[:-1] + b', "n": NaN}', "invalid_json"),
    ("trailing-garbage", _BASE_BYTES + b"}", "invalid_json"),
    ("latin1-text", _BASE_BYTES.replace("评论".encode(), b"caf\xe9"), "invalid_encoding"),
    ("bare-continuation-byte", _BASE_BYTES.replace(b"u-1", b"u-\x80"), "invalid_encoding"),
    ("lone-surrogate", _BASE_BYTES.replace("评论".encode(), b"\\udc00"), "invalid_encoding"),
    ("lone-surrogate-end", _BASE_BYTES.replace("评论 1".encode(), b"\\ud800"), "invalid_encoding"),
    ("array", b"[1, 2]", "schema"),
    ("missing-ip", _without("ip"), "schema"),
    ("missing-user-id", _without("user_id"), "schema"),
    ("missing-post-id", _without("post_id"), "schema"),
    ("offsetless-timestamp", _with(created_at="2026-11-25T10:00:00"), "schema"),
    ("space-separated-timestamp", _with(created_at="2026-11-25 10:00:00Z"), "schema"),
    ("impossible-date", _with(created_at="2026-02-30T10:00:00Z"), "schema"),
    ("numeric-event-id", _with(event_id=12345), "schema"),
    ("empty-post-id", _with(post_id=""), "schema"),
    ("empty-ip", _with(ip=""), "schema"),
    ("text-too-long", _with(text="x" * 10_001), "too_large"),  # over MAX_BYTES before the schema is read
    ("oversize", _with(text="长" * 2000), "too_large"),
    ("shorthand-ip", _with(ip="127.1"), "invalid_ip"),
    ("octal-looking-ip", _with(ip="010.0.0.1"), "invalid_ip"),
    ("three-part-ip", _with(ip="1.2.3"), "invalid_ip"),
    ("five-part-ip", _with(ip="1.2.3.4.5"), "invalid_ip"),
    ("prefix", _with(ip="1.2.3.4/24"), "invalid_ip"),
    ("port", _with(ip="1.2.3.4:80"), "invalid_ip"),
    ("space", _with(ip=" 1.2.3.4"), "invalid_ip"),
    ("octet-256", _with(ip="1.2.3.256"), "invalid_ip"),
    ("bad-ipv6", _with(ip="2400:da00::zz"), "invalid_ip"),
    ("hostname", _with(ip="example.com"), "invalid_ip"),
]


def _sample_bad() -> list[tuple[str, bytes | None, str]]:
    rng = random.Random(7)
    base = comment(rng, "evt-s", "1.0.1.7", datetime(2026, 11, 25, 10, tzinfo=UTC))
    out: list[tuple[str, bytes | None, str]] = []
    for kind in range(10):
        ev = bad_event(rng, kind, "evt-s", base)
        assert ev.bad_reason is not None
        out.append((f"sample-{kind}-{ev.bad_reason}", ev.value, ev.bad_reason))
    return out


BAD = HAND_MADE + _sample_bad()


def test_bad_cases_cover_every_input_reason() -> None:
    assert {reason for _n, _v, reason in BAD} == set(DEAD_LETTER_REASONS) - {"internal_error"}


@pytest.mark.parametrize(("value", "reason"), [(v, r) for _n, v, r in BAD], ids=[n for n, _v, _r in BAD])
@pytest.mark.parametrize("key", [None, b"\x00k\xff"], ids=["no-key", "binary-key"])
def test_each_bad_record_gives_one_dead_letter(
    labeller: Labeller, value: bytes | None, reason: str, key: bytes | None
) -> None:
    enricher = Enricher(labeller, max_message_bytes=MAX_BYTES, clock=clock)
    records = [
        rec(enc(good("1.0.1.7", 0)), offset=10),
        InRecord("comments.in", 11, 4242, key, value, 1_764_000_123_456),
        rec(enc(good("36.0.1.7", 2)), offset=12),
    ]
    result = enricher.process_batch(records)
    assert [json.loads(o.value)["event_id"] for o in result.enriched] == ["evt-0", "evt-2"]
    assert len(result.dead_letters) == 1
    [dead] = result.dead_letters
    assert dead.key == key
    obj = json.loads(dead.value)
    assert obj["schema_version"] == 1
    assert obj["reason"] == reason
    assert obj["source"] == {
        "topic": "comments.in",
        "partition": 11,
        "offset": 4242,
        "timestamp_ms": 1_764_000_123_456,
    }
    if value is None:
        assert obj["original_b64"] is None
    else:
        assert base64.b64decode(obj["original_b64"], validate=True) == value
    if key is None:
        assert obj["original_key_b64"] is None
    else:
        assert base64.b64decode(obj["original_key_b64"], validate=True) == key
    assert datetime.fromisoformat(obj["failed_at"]) == datetime.fromtimestamp(NOW, UTC)
    assert isinstance(obj["detail"], str)
    assert obj["detail"]
    assert result.stats.dead_reasons == Counter({reason: 1})
    assert result.stats.enriched == 2


def test_timestamp_none_is_carried(enricher: Enricher) -> None:
    [obj] = dead_json(enricher.process_batch([InRecord("t", 0, 1, None, b"{", None)]))
    assert obj["source"]["timestamp_ms"] is None


@pytest.mark.parametrize(
    "bad_ip", ["127.1", "010.0.0.1", "1.2.3", "203.0.113.0777", "2400:da00::zz", "1.2.3.4/24", "8.8.8.8 "]
)
def test_invalid_ip_detail_does_not_quote_the_address(enricher: Enricher, bad_ip: str) -> None:
    [obj] = dead_json(enricher.process_batch([rec(_with(ip=bad_ip))]))
    assert obj["reason"] == "invalid_ip"
    assert obj["detail"] == INVALID_IP_DETAIL
    assert bad_ip.strip() not in obj["detail"]


# --- internal errors ----------------------------------------------------------------------------------------


def _raising_label(labeller: Labeller, bad: str, exc: Exception) -> Any:
    real = labeller.label

    @functools.lru_cache(maxsize=16)
    def label(ip_text: str) -> Label:
        if ip_text == bad:
            raise exc
        return real(ip_text)

    return label


@pytest.mark.parametrize(
    "exc", [RuntimeError("boom at 36.0.2.7"), KeyError("36.0.2.7"), ValueError("36.0.2.7 broke")]
)
def test_internal_error_becomes_a_dead_letter(
    labeller: Labeller, enricher: Enricher, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    raising = _raising_label(labeller, "36.0.2.7", exc)
    monkeypatch.setattr(labeller, "label", raising)
    monkeypatch.setattr(labeller, "current", (raising, labeller.build))
    records = [
        rec(enc(good("1.0.1.7", 0)), offset=0),
        rec(enc(good("36.0.2.7", 1)), offset=1, key=b"k1"),
        rec(enc(good("36.0.1.7", 2)), offset=2),
    ]
    result = enricher.process_batch(records)  # must not raise
    assert [json.loads(o.value)["territory"]["code"] for o in result.enriched] == ["CN-GD", "HK"]
    [obj] = dead_json(result)
    assert obj["reason"] == "internal_error"
    assert obj["detail"] == type(exc).__name__
    assert "36.0.2.7" not in obj["detail"]
    assert obj["source"]["offset"] == 1
    assert base64.b64decode(obj["original_b64"]) == records[1].value
    assert result.dead_letters[0].key == b"k1"
    assert result.stats.dead_reasons == Counter({"internal_error": 1})


def test_internal_error_is_logged_without_the_payload(
    labeller: Labeller, enricher: Enricher, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    raising = _raising_label(labeller, "36.0.2.7", RuntimeError("x"))
    monkeypatch.setattr(labeller, "label", raising)
    monkeypatch.setattr(labeller, "current", (raising, labeller.build))
    with caplog.at_level("ERROR", logger="streams.pipeline.enrich"):
        enricher.process_batch([rec(enc(good("36.0.2.7", 1)), offset=99)])
    assert any("99" in r.getMessage() for r in caplog.records)
    assert all("36.0.2.7" not in r.getMessage() for r in caplog.records)


# --- counts and stats ---------------------------------------------------------------------------------------


def test_stats_add_up(labeller: Labeller, enricher: Enricher) -> None:
    ips = [
        "1.0.1.7",
        "36.0.1.7",
        "1.0.1.7",
        "9.9.9.9",
        "10.0.0.1",
        "1.0.1.7",
        "36.2.0.7",
        "36.0.1.7",
        "127.0.0.1",
    ]
    records = [rec(enc(good(ip, i)), offset=i) for i, ip in enumerate(ips)]
    records += [rec(b"{", offset=20), rec(_without("ip"), offset=21), rec(_with(ip="1.2.3"), offset=22)]
    result = enricher.process_batch(records)
    s = result.stats
    gd = Territory("CN-GD", "广东", "Guangdong", "domestic", "CN")
    hk = Territory("HK", "中国香港", "Hong Kong", "special_region", "HK")
    assert s.enriched == len(ips) == len(result.enriched)
    assert s.territories == Counter({gd: 3, hk: 2, UNKNOWN: 4})
    assert s.unknown_reasons == Counter({"not_found": 1, "private": 1, "no_country": 1, "loopback": 1})
    assert s.dead_reasons == Counter({"invalid_json": 1, "schema": 1, "invalid_ip": 1})
    # label() was called for the 9 valid ones and the invalid_ip one: 6 distinct valid texts plus the
    # invalid one (never cached) are misses; the repeats (1.0.1.7 twice, 36.0.1.7 once) are hits.
    assert (s.cache_hits, s.cache_misses) == (3, 7)
    assert sum(s.territories.values()) == s.enriched
    assert sum(s.unknown_reasons.values()) == s.territories[UNKNOWN]
    assert sum(s.dead_reasons.values()) == len(result.dead_letters)

    # the same again: every valid address is cached now, the invalid one is a miss again
    again = enricher.process_batch(records).stats
    assert (again.cache_hits, again.cache_misses) == (9, 1)
    assert again.territories == s.territories


def test_cache_stats_are_per_batch_across_a_swap(
    labeller: Labeller, enricher: Enricher, fixture_db_path: Path
) -> None:
    enricher.process_batch([rec(enc(good("1.0.1.7")))])
    labeller.swap(compile_files(fixture_db_path))
    s = enricher.process_batch([rec(enc(good("1.0.1.7"))), rec(enc(good("1.0.1.7")))]).stats
    assert (s.cache_hits, s.cache_misses) == (1, 1)


def _expected_ok(value: bytes | None) -> bool:
    """An oracle independent of the Enricher: decodes and has a parsable address."""
    try:
        parse_ip(decode_comment(value, max_bytes=MAX_BYTES).ip)
    except (ValueError, InvalidIP):
        return False
    return True


_IPS = [c[2] for c in CASES] + list(NOT_FOUND) + ["10.0.0.1", "::ffff:1.0.1.7", "127.1", "1.2.3", "fe80::1"]


@st.composite
def _values(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["good", "sample_bad", "bytes", "none", "mutated"]))
    if kind == "good":
        return enc(good(draw(st.sampled_from(_IPS)), draw(st.integers(0, 99))))
    if kind == "sample_bad":
        rng = random.Random(draw(st.integers(0, 10)))
        base = comment(rng, "e", draw(st.sampled_from(_IPS)), datetime(2026, 1, 1, tzinfo=UTC))
        return bad_event(rng, draw(st.integers(0, 9)), "e", base).value
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "none":
        return None
    raw = bytearray(enc(good(draw(st.sampled_from(_IPS)))))
    i = draw(st.integers(0, len(raw) - 1))
    raw[i] = draw(st.integers(0, 255))
    return bytes(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_values(), st.one_of(st.none(), st.binary(max_size=8))), max_size=40))
def test_every_record_ends_up_in_exactly_one_output(
    fixture_db_path: Path, batch: list[tuple[bytes | None, bytes | None]]
) -> None:
    enricher = Enricher(Labeller.open(fixture_db_path, 32), max_message_bytes=MAX_BYTES, clock=clock)
    records = [InRecord("t", 0, i, key, value, None) for i, (value, key) in enumerate(batch)]
    result = enricher.process_batch(records)
    assert len(result.enriched) + len(result.dead_letters) == len(records)
    ok = [r for r in records if _expected_ok(r.value)]
    bad = [r for r in records if not _expected_ok(r.value)]
    assert len(result.enriched) == len(ok)
    dead = dead_json(result)
    assert [d["source"]["offset"] for d in dead] == [r.offset for r in bad]
    for d, r in zip(dead, bad, strict=True):
        assert d["reason"] in DEAD_LETTER_REASONS
        assert d["reason"] != "internal_error"
        assert (None if r.value is None else base64.b64decode(d["original_b64"])) == r.value
    for out, r in zip(result.enriched, ok, strict=True):
        assert json.loads(out.value)["event_id"] == decode_comment(r.value).event_id
        assert out.key == (r.key or decode_comment(r.value).post_id.encode())
    s = result.stats
    assert s.enriched == len(ok) == sum(s.territories.values())
    assert sum(s.dead_reasons.values()) == len(bad)
    assert sum(s.unknown_reasons.values()) == s.territories[UNKNOWN]
    assert s.cache_hits >= 0
    assert s.cache_misses >= 0


# --- the address in the output ------------------------------------------------------------------------------


def _hmac(key: bytes, ip: str) -> str:
    return hmac.new(key, ipaddress.ip_address(ip).packed, hashlib.sha256).hexdigest()


def test_ip_hash_with_a_key(labeller: Labeller) -> None:
    enricher = Enricher(labeller, max_message_bytes=MAX_BYTES, ip_hash_key=b"key-one", clock=clock)
    records = [
        rec(enc(good(ip, i))) for i, ip in enumerate(["1.2.3.4", "::ffff:1.2.3.4", "1.2.3.5", "2400:da00::1"])
    ]
    a, mapped, other, v6 = (o["ip_hash"] for o in enriched_json(enricher.process_batch(records)))
    for h in (a, mapped, other, v6):
        assert len(h) == 64
        assert all(c in "0123456789abcdef" for c in h)
    assert a == mapped == _hmac(b"key-one", "1.2.3.4")
    assert other == _hmac(b"key-one", "1.2.3.5") != a
    assert v6 == _hmac(b"key-one", "2400:da00::1")

    other_key = Enricher(labeller, max_message_bytes=MAX_BYTES, ip_hash_key=b"key-two", clock=clock)
    [b] = (o["ip_hash"] for o in enriched_json(other_key.process_batch(records[:1])))
    assert b != a
    assert b == _hmac(b"key-two", "1.2.3.4")


IP_TEXTS = [
    "1.0.1.7",
    "36.1.1.7",
    "2400:da00::1",
    "2400:2000:abcd::1",
    "9.9.9.9",
    "10.0.0.1",
    "::ffff:1.0.1.7",
]


def test_no_trace_of_the_ip_without_a_key(enricher: Enricher) -> None:
    records = [rec(enc(good(ip, i))) for i, ip in enumerate(IP_TEXTS)]
    result = enricher.process_batch(records)
    assert len(result.enriched) == len(IP_TEXTS)
    for out in result.enriched:
        for ip in IP_TEXTS:
            assert ip.encode() not in out.value
        obj = json.loads(out.value)
        assert "ip" not in obj
        assert "ip_hash" not in obj
        assert all("ip" not in name.split("_") for name in obj)


def test_no_ip_text_in_output_with_a_key(labeller: Labeller) -> None:
    enricher = Enricher(labeller, max_message_bytes=MAX_BYTES, ip_hash_key=b"k", clock=clock)
    for out in enricher.process_batch([rec(enc(good(ip))) for ip in IP_TEXTS]).enriched:
        assert "ip" not in json.loads(out.value)
        for ip in IP_TEXTS:
            assert ip.encode() not in out.value


# --- what the enricher hands the counting stage ---------------------------------------------------------

T0 = 1_795_600_800  # 2026-11-25T10:00:00Z, a multiple of every window size below


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=st.sampled_from([(60, 60), (60, 20), (30, 10), (10, 10)]),
    events=st.lists(
        st.tuples(
            st.integers(0, len(CASES) - 1),  # which address
            st.integers(-5, 400),  # seconds after T0
            st.sampled_from(["p1", "p2", "p3", "p4"]),
            st.integers(0, 3),  # input partition
        ),
        max_size=60,
    ),
)
def test_windows_territories_and_watermarks_match_a_plain_count(
    labeller: Labeller, spec: tuple[int, int], events: list[tuple[int, int, str, int]]
) -> None:
    """Every comment is counted once per window that holds it (tumbling or hopping), per territory and
    post; per-territory totals count it once; each input partition's watermark is its latest event time."""
    size, hop = spec
    enricher = Enricher(labeller, max_message_bytes=MAX_BYTES, windows=WindowSpec(size, hop, 0), clock=clock)
    records = []
    want_windows: dict[tuple[Territory, int], Counter[str]] = {}
    want_territories: Counter[Territory] = Counter()
    want_marks: dict[int, float] = {}
    for n, (case, seconds, post, partition) in enumerate(events):
        _, _, ip, want = CASES[case]
        created = datetime.fromtimestamp(T0 + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        records.append(
            InRecord(TOPIC, partition, n, None, enc(good(ip, n, post_id=post, created_at=created)))
        )
        territory = _territory(want)
        want_territories[territory] += 1
        t = T0 + seconds
        want_marks[partition] = max(want_marks.get(partition, t), t)
        for start in range(T0 - 3600, T0 + 3600, hop):
            if start <= t < start + size:
                want_windows.setdefault((territory, start), Counter())[post] += 1
    result = enricher.process_batch(records)
    assert result.dead_letters == []
    assert result.windows == want_windows
    assert result.stats.territories == want_territories
    assert result.watermarks == want_marks
    # No two windows share a Counter: the enrichment loop merges later batches into them in place.
    assert len({id(posts) for posts in result.windows.values()}) == len(result.windows)


def test_a_comment_far_ahead_of_the_clock_is_enriched_but_moves_no_window(labeller: Labeller) -> None:
    """One wrong device clock must not drag event time on: beyond max_ahead_s the comment is enriched
    (nothing valid is lost) but counted in no window and left out of the watermark."""
    enricher = Enricher(
        labeller, max_message_bytes=MAX_BYTES, windows=WindowSpec(60, 60, 0), max_ahead_s=3600, clock=clock
    )
    _, _, ip, _ = CASES[0]

    def stamped(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    times = [NOW - 30, NOW + 3000, NOW + 86_400 * 365]  # recent, a bit ahead (allowed), a year ahead
    records = [rec(enc(good(ip, n, created_at=stamped(t))), offset=n) for n, t in enumerate(times)]
    result = enricher.process_batch(records)
    assert len(result.enriched) == 3
    assert result.stats.ahead == 1
    assert result.watermarks == {PARTITION: float(int(NOW + 3000))}
    starts = sorted(start for _, start in result.windows)
    assert starts == [int(NOW - 30) // 60 * 60, int(NOW + 3000) // 60 * 60]
    # Without the limit (0), the year-ahead comment counts and moves the watermark: the old behaviour.
    unlimited = Enricher(labeller, max_message_bytes=MAX_BYTES, windows=WindowSpec(60, 60, 0), clock=clock)
    assert unlimited.process_batch(records).watermarks == {PARTITION: float(int(times[2]))}


def test_a_huge_value_and_key_are_dead_lettered_within_a_producible_size(enricher: Enricher) -> None:
    """A ~1 MB value (the broker's default limit lets it in) with a huge key: the dead letter keeps their
    first MAX_DEAD_LETTER_ORIGINAL bytes and says so, and stays under 1 MiB, what the producer and the
    broker take. With the whole value (1.33 MB in base64) the send failed and the worker stopped, over
    and over on the same message."""
    value = b"{" + b"x" * 999_998 + b"}"
    key = b"k" * 700_000
    result = enricher.process_batch([InRecord(TOPIC, PARTITION, 7, key, value)])
    assert result.enriched == []
    [dead] = result.dead_letters
    assert dead.key is not None
    assert len(dead.value) + len(dead.key) < 1 << 20
    assert len(dead.key) == MAX_DEAD_LETTER_KEY
    body = json.loads(dead.value)
    assert body["reason"] == "too_large"
    assert base64.b64decode(body["original_b64"]) == value[:MAX_DEAD_LETTER_ORIGINAL]
    assert base64.b64decode(body["original_key_b64"]) == key[:MAX_DEAD_LETTER_KEY]
    assert "original cut to its first" in body["detail"]
    assert body["source"]["offset"] == 7


class _SwapsOnSecondRead(Labeller):
    """A labeller whose database is swapped by the watcher's thread right after the batch's first read of
    it: the worst moment, between taking the label function and taking the build."""

    def arm(self, table: Any) -> None:
        object.__setattr__(self, "_pending", table)
        object.__setattr__(self, "_reads", 0)

    def __getattribute__(self, name: str) -> Any:
        if name in ("label", "build", "current", "cache_counts") and object.__getattribute__(
            self, "__dict__"
        ).get("_pending"):
            reads = object.__getattribute__(self, "_reads") + 1
            object.__setattr__(self, "_reads", reads)
            if reads == 2:
                table = object.__getattribute__(self, "_pending")
                object.__setattr__(self, "_pending", None)
                Labeller.swap(self, table)
        return object.__getattribute__(self, name)


def test_records_carry_the_build_of_the_table_that_labelled_them(
    fixture_db_path: Path, fixture_db_b_path: Path
) -> None:
    table_a, table_b = compile_files(fixture_db_path), compile_files(fixture_db_b_path)
    ips = [c[2] for c in CASES]
    by_build = {Labeller(t).build: Labeller(t) for t in (table_a, table_b)}
    assert len(by_build) == 2
    a, b = by_build.values()
    assert any(a.label(ip).territory != b.label(ip).territory for ip in ips)  # the swap shows in labels
    labeller = _SwapsOnSecondRead(table_a, 1024)
    labeller.arm(table_b)
    result = Enricher(labeller, max_message_bytes=MAX_BYTES, clock=clock).process_batch(
        [rec(enc(good(ip, i))) for i, ip in enumerate(ips)]
    )
    assert labeller.build == Labeller(table_b).build  # the swap happened during the batch
    for record, ip in zip(result.enriched, ips, strict=True):
        body = json.loads(record.value)
        assert body["territory"]["code"] == by_build[body["db_build"]].label(ip).territory.code, ip
