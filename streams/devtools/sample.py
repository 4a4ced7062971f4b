"""Sample comment events, valid and deliberately bad, for the demo, the tests and the benchmarks.

Deterministic for a seed. Bad events come in every kind the dead-letter vocabulary names, so a run shows
each path; :func:`bad_event` says which reason the worker must give each one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
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


def comment(
    rng: random.Random, event_id: str, ip: str, when: datetime, *, posts: int = 500
) -> dict[str, object]:
    text = "，".join(rng.choice(PHRASES) for _ in range(rng.randint(2, 6)))
    return {
        "event_id": event_id,
        "user_id": f"u{rng.randint(1, 50_000)}",
        "post_id": f"p{int(rng.paretovariate(1.2)) % posts}",
        "text": text,
        "ip": ip,
        "created_at": when.isoformat(timespec="milliseconds"),
        "platform": rng.choice(PLATFORMS),
        "lang": "zh-CN",
    }


def bad_event(rng: random.Random, kind: int, event_id: str, good: dict[str, object]) -> SampleEvent:
    """One bad event of ``kind`` (taken modulo the number of kinds), based on a good comment."""
    ip = str(good["ip"])
    kinds: list[tuple[str, bytes, str | None]] = [
        ("invalid_json", b'{"event_id": "' + event_id.encode() + b'", "ip": ', None),
        ("invalid_encoding", _encoder.encode(good)[:-1] + b', "x": "\xff\xfe"}', ip),
        ("invalid_encoding", _encoder.encode({**good, "text": "x"}).replace(b'"x"', b'"\\ud800"'), ip),
        ("schema", _encoder.encode({k: v for k, v in good.items() if k != "created_at"}), ip),
        ("schema", _encoder.encode({**good, "created_at": "2026-11-25T10:00:00"}), ip),
        ("schema", _encoder.encode({**good, "event_id": 12345}), ip),
        ("invalid_ip", _encoder.encode({**good, "ip": "127.1"}), None),
        ("invalid_ip", _encoder.encode({**good, "ip": "010.0.0.1"}), None),
        ("too_large", _encoder.encode({**good, "text": "长" * 70_000}), ip),
        ("empty", b"", None),
    ]
    reason, value, kept_ip = kinds[kind % len(kinds)]
    return SampleEvent(value=value, event_id=event_id, ip=kept_ip, bad_reason=reason)


def sample_events(
    ips: Sequence[str],
    n: int,
    *,
    bad_fraction: float = 0.01,
    seed: int = 0,
    start: datetime | None = None,
    prefix: str = "e",
) -> Iterator[SampleEvent]:
    """``n`` events whose addresses come from ``ips`` with heavy reuse (a few addresses post a lot)."""
    rng = random.Random(seed)
    when = start or datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    bad_kind = 0
    for i in range(n):
        event_id = f"{prefix}{seed}-{i}"
        ip = (
            ips[min(len(ips) - 1, int(rng.paretovariate(1.1)) - 1)] if rng.random() < 0.5 else rng.choice(ips)
        )
        good = comment(rng, event_id, ip, when + timedelta(milliseconds=10 * i))
        if rng.random() < bad_fraction:
            yield bad_event(rng, bad_kind, event_id, good)
            bad_kind += 1
        else:
            yield SampleEvent(value=_encoder.encode(good), event_id=event_id, ip=ip, bad_reason=None)
