"""Event-time windows and the bounded top-posts sketch kept per (territory, window). Pure: no Faust, no I/O.

Windows are identified by their start (integer epoch seconds). Tumbling windows (``hop == size``) give each
event one window; hopping windows (``hop < size``, ``size`` a multiple of ``hop``) give it ``size // hop``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from streams.pipeline.codec import msgpack_codec


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
        self.add_many(((post_id, n),))

    def add_many(self, posts: Iterable[tuple[str, int]]) -> None:
        """``add`` each (post, n) in turn; the victim among equal minimum counts is the smallest post id.

        A full sketch replaces its minimum counter for every new post. A scan for it per post (64 Python
        calls) was the counting stage's largest cost when posts are many, so a min-heap of (count, post) is
        built at the first replacement and kept lazily: a count that grew pushes a new entry, and an entry
        whose count is no longer the post's is skipped when it reaches the top.
        """
        counters = self.counters
        capacity = self.capacity
        heap: list[tuple[int, str]] | None = None
        for post_id, n in posts:
            slot = counters.get(post_id)
            if slot is not None:
                slot[0] += n
                if heap is not None:
                    heapq.heappush(heap, (slot[0], post_id))
                continue
            if len(counters) < capacity:  # (never once the heap exists: replacing keeps the sketch full)
                counters[post_id] = [n, 0]
                continue
            if heap is None:
                heap = [(count, post) for post, (count, _) in counters.items()]
                heapq.heapify(heap)
            while True:
                floor, victim = heapq.heappop(heap)
                held = counters.get(victim)
                if held is not None and held[0] == floor:
                    break
            del counters[victim]
            counters[post_id] = [floor + n, floor]
            heapq.heappush(heap, (floor + n, post_id))

    def merge(self, posts: Iterable[PostCount]) -> None:
        self.add_many((post.post_id, post.count) for post in posts)

    def top(self, k: int) -> list[PostCount]:
        ranked = sorted(self.counters.items(), key=lambda item: (-item[1][0], item[0]))
        return [PostCount(post, count, error) for post, (count, error) in ranked[:k]]


class WindowAgg(msgspec.Struct, gc=False):
    """One territory's count and top posts in one window: the value of the window table."""

    count: int = 0
    posts: TopPosts = msgspec.field(default_factory=TopPosts)


encode_agg, decode_agg = msgpack_codec(WindowAgg)
