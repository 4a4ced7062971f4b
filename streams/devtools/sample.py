"""Sample comment events, valid and deliberately bad, for the demo, the tests and the benchmarks.

Deterministic for a seed. Bad events come in every kind the dead-letter vocabulary names, so a run shows
each path; :func:`bad_event` says which reason the worker must give each one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

PLATFORMS = ("weibo", "douyin", "bilibili", "xiaohongshu", "zhihu")
PHRASES = (
    "这个观点很有意思，我完全同意楼主的看法",
    "Interesting take, but the numbers in the second chart don't add up",
    "哈哈哈笑死我了，评论区比正文还精彩",
    "求问这家店在哪里？周末想去打卡",
    "Great thread, saving this for later",
    "作为本地人说一句，实际情况没有视频里说的那么夸张",
    "支持一下，希望越来越好",
    "这波操作我是真没看懂，有没有大佬解释一下",
)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class SampleEvent:
    value: bytes
    event_id: str | None  # None for events too broken to carry one
    ip: str | None
    bad_reason: str | None  # the dead-letter reason the worker must give, None for a valid event


def comment_text(rng: random.Random, phrases: tuple[int, int] = (2, 6), min_bytes: int = 0) -> str:
    """A comment's text: ``phrases`` (lowest, highest) phrases, then more until it has ``min_bytes`` bytes."""
    parts = [rng.choice(PHRASES) for _ in range(rng.randint(*phrases))]
    size = sum(len(p.encode()) for p in parts) + 3 * (len(parts) - 1)
    while size < min_bytes:
        parts.append(rng.choice(PHRASES))
        size += len(parts[-1].encode()) + 3
    return "，".join(parts)


def comment(
    rng: random.Random,
    event_id: str,
    ip: str,
    when: datetime,
    *,
    text: str | None = None,
    user_id: str | None = None,
    post_id: str | None = None,
    posts: int = 500,
    platform: str | None = None,
    lang: str = "zh-CN",
) -> dict[str, object]:
    """A valid comment event (the fields of ``schemas/comment.schema.json``) at ``when``; what is not
    given is drawn from ``rng``: the text, a user, one of ``posts`` posts (Zipf-like), a platform."""
    text = comment_text(rng) if text is None else text
    if user_id is None:
        user_id = f"u{rng.randint(1, 50_000)}"
    if post_id is None:
        post_id = f"p{int(rng.paretovariate(1.2)) % posts}"
    return {
        "event_id": event_id,
        "user_id": user_id,
        "post_id": post_id,
        "text": text,
        "ip": ip,
        "created_at": when.isoformat(timespec="milliseconds"),
        "platform": rng.choice(PLATFORMS) if platform is None else platform,
        "lang": lang,
    }


def bad_event(
    rng: random.Random,
    kind: int,
    event_id: str,
    good: dict[str, object],
    reasons: Collection[str] | None = None,
) -> SampleEvent:
    """One bad event of ``kind`` (taken modulo the number of kinds), based on a good comment; with
    ``reasons``, only the kinds whose dead-letter reason is one of them count."""
    ip = str(good["ip"])
    # (reason, value, the address the event still carries); built on demand: too_large is 200 kB.
    kinds: list[tuple[str, Callable[[], bytes], str | None]] = [
        ("invalid_json", lambda: b'{"event_id": "' + event_id.encode() + b'", "ip": ', None),
        ("invalid_encoding", lambda: _encoder.encode(good)[:-1] + b', "x": "\xff\xfe"}', ip),
        (
            "invalid_encoding",
            lambda: _encoder.encode({**good, "text": "x"}).replace(b'"x"', b'"\\ud800"'),
            ip,
        ),
        ("schema", lambda: _encoder.encode({k: v for k, v in good.items() if k != "created_at"}), ip),
        ("schema", lambda: _encoder.encode({**good, "created_at": "2026-11-25T10:00:00"}), ip),
        ("schema", lambda: _encoder.encode({**good, "event_id": 12345}), ip),
        ("invalid_ip", lambda: _encoder.encode({**good, "ip": "127.1"}), None),
        ("invalid_ip", lambda: _encoder.encode({**good, "ip": "010.0.0.1"}), None),
        ("too_large", lambda: _encoder.encode({**good, "text": "长" * 70_000}), ip),
        ("empty", lambda: b"", None),
    ]
    if reasons is not None:
        kinds = [k for k in kinds if k[0] in reasons]
    reason, value, kept_ip = kinds[kind % len(kinds)]
    return SampleEvent(value=value(), event_id=event_id, ip=kept_ip, bad_reason=reason)


def hot_few(rng: random.Random, ips: Sequence[str]) -> str:
    """Half the events from a Pareto-hot few addresses (the first ones), half from any."""
    if rng.random() < 0.5:
        return ips[min(len(ips) - 1, int(rng.paretovariate(1.1)) - 1)]
    return rng.choice(ips)


def zipf_like(rng: random.Random, ips: Sequence[str]) -> str:
    """Rank ``k`` of ``n`` drawn as ``n·u³``: a few addresses very hot, most seen once or twice (the
    throughput benchmark's reuse, which a label cache sees)."""
    return ips[int(len(ips) * rng.random() ** 3)]


def sample_events(
    ips: Sequence[str],
    n: int,
    *,
    bad_fraction: float = 0.01,
    seed: int = 0,
    start: datetime | None = None,
    prefix: str = "e",
    interval: timedelta = timedelta(milliseconds=10),
    pick_ip: Callable[[random.Random, Sequence[str]], str] = hot_few,
    min_text_bytes: int = 0,
    bad_reasons: Collection[str] | None = None,
) -> Iterator[SampleEvent]:
    """``n`` events, ``interval`` apart from ``start``, whose addresses ``pick_ip`` draws from ``ips``
    (default: heavy reuse, a few addresses post a lot). Event ids are ``<prefix><seed>-<i>``. A
    ``bad_fraction`` of them are bad (:func:`bad_event`, its kinds in turn; only those of ``bad_reasons``
    if given)."""
    rng = random.Random(seed)
    when = start or datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    bad_kind = 0
    for i in range(n):
        event_id = f"{prefix}{seed}-{i}"
        ip = pick_ip(rng, ips)
        text = comment_text(rng, min_bytes=min_text_bytes)
        good = comment(rng, event_id, ip, when + i * interval, text=text)
        if rng.random() < bad_fraction:
            yield bad_event(rng, bad_kind, event_id, good, bad_reasons)
            bad_kind += 1
        else:
            yield SampleEvent(value=_encoder.encode(good), event_id=event_id, ip=ip, bad_reason=None)
