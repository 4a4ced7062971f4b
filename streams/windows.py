"""Event-time windows and the bounded top-posts sketch kept per (territory, window). Pure: no Faust, no I/O.

Windows are identified by their start (integer epoch seconds). Tumbling windows (``hop == size``) give each
event one window; hopping windows (``hop < size``, ``size`` a multiple of ``hop``) give it ``size // hop``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec


@dataclass(frozen=True, slots=True)
class WindowSpec:
    size_s: int
    hop_s: int
    lateness_s: int

    def __post_init__(self) -> None:
        if self.size_s <= 0 or self.hop_s <= 0 or self.size_s % self.hop_s:
            raise ValueError("window size must be a positive multiple of the hop")
        if self.lateness_s < 0:
            raise ValueError("allowed lateness cannot be negative")

    def starts(self, event_time: float) -> range:
        """Starts of the windows that hold an event at ``event_time`` (ascending)."""
        last = int(event_time // self.hop_s) * self.hop_s
        return range(last - self.size_s + self.hop_s, last + 1, self.hop_s)

    def closes_at(self, window_start: int) -> int:
        """The watermark at which the window is final: its end plus the allowed lateness."""
        return window_start + self.size_s + self.lateness_s


class PostCount(msgspec.Struct, array_like=True, frozen=True, gc=False):
    post_id: str
    count: int
    error: int = 0  # Space-Saving over-estimate bound


class TopPosts(msgspec.Struct, gc=False):
    """A Space-Saving sketch (Metwally et al., 2005) of comment counts per post, with ``capacity`` counters.

    Memory is bounded by ``capacity`` whatever the number of distinct posts; any post with more than
    total/capacity comments is guaranteed to be held, and each count is over-estimated by at most its
    ``error``. Weighted updates keep it exact while fewer than ``capacity`` posts were seen.
    """

    capacity: int = 64
    counters: dict[str, list[int]] = msgspec.field(default_factory=dict)  # post_id -> [count, error]

    def add(self, post_id: str, n: int = 1) -> None:
        counters = self.counters
        slot = counters.get(post_id)
        if slot is not None:
            slot[0] += n
            return
        if len(counters) < self.capacity:
            counters[post_id] = [n, 0]
            return
        victim = min(counters, key=lambda p: counters[p][0])
        floor = counters.pop(victim)[0]
        counters[post_id] = [floor + n, floor]

    def merge(self, posts: Iterable[PostCount]) -> None:
        for post in posts:
            self.add(post.post_id, post.count)

    def top(self, k: int) -> list[PostCount]:
        ranked = sorted(self.counters.items(), key=lambda item: (-item[1][0], item[0]))
        return [PostCount(post, count, error) for post, (count, error) in ranked[:k]]


class WindowAgg(msgspec.Struct, gc=False):
    """One territory's count and top posts in one window: the value of the window table."""

    count: int = 0
    posts: TopPosts = msgspec.field(default_factory=TopPosts)


_agg_encoder = msgspec.msgpack.Encoder()
_agg_decoder = msgspec.msgpack.Decoder(WindowAgg)


def encode_agg(agg: WindowAgg) -> bytes:
    return _agg_encoder.encode(agg)


def decode_agg(raw: bytes) -> WindowAgg:
    return _agg_decoder.decode(raw)
