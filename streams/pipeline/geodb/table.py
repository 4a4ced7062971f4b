"""The territory table: every database compiled into sorted address ranges → label ids.

One table answers for an ordered list of databases (ip2region or IPIP first for China, GeoLite2 behind it
for the world) with the special-purpose ranges (private, loopback, documentation …) laid over all of them.
A lookup is a binary search (``bisect``) over an ``array`` of range starts and an index into a short list
of labels: no record is decoded after the table is built, so a miss costs what a hit does.

The rule for several databases (:func:`combine`): the first database that knows the address at the level
shudi shows wins — a province (or Hong Kong, Macau, Taiwan) for China, the country elsewhere. An answer of
just "China" from an earlier database is refined by the first later one that names a Chinese province or
HK/MO/TW; a later database never overrides an earlier one's country. When no database knows the address,
the first one that says why (``private``, ``reserved``, ``no_country`` …) gives the reason, else
``not_found``.

IPv6 starts are 128-bit, more than an ``array`` holds: the IPv6 table is kept on the upper 64 bits, and the
few /64 blocks that have a boundary inside them get a second, inner table on the lower 64 bits.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_network
from socket import AF_INET, AF_INET6, inet_pton
from typing import Final

from streams.pipeline.geodb.base import DatabaseError, Family, IPAddress, Range, Source
from streams.pipeline.territory import (
    _SPECIAL_V4,
    _SPECIAL_V6,
    UNKNOWN_LABELS,
    Label,
    UnknownReason,
    parse_ip,
    special_reason,
    unwrap_tunnel,
)

NOT_FOUND: Final = UNKNOWN_LABELS["not_found"]
_V4_MAX: Final = (1 << 32) - 1
_V6_MAX: Final = (1 << 128) - 1
_LOW: Final = (1 << 64) - 1
_MIXED: Final = 0xFFFF  # label id of a /64 block with an inner table
_BLOCK_SHIFT: Final = 12  # IPv4 block index per /20
_TEREDO_TOP: Final = 0x20010000  # 2001::/32, top 32 bits
_SIXTOFOUR_TOP: Final = 0x2002  # 2002::/16, top 16 bits
_MAPPED_TOP: Final = 0xFFFF  # ::ffff:0:0/96, top 96 bits
_MAX_LABELS: Final = 0xFFFE


def rank(label: Label) -> int:
    """2: what shudi shows is known (a province, HK/MO/TW, a country); 1: only "China"; 0: a reason why it is
    unknown; -1: the database has nothing for the address."""
    if label.reason is not None:
        return -1 if label.reason == "not_found" else 0
    t = label.territory
    return 1 if t.code == "CN" else 2


def _refines_china(label: Label) -> bool:
    t = label.territory
    return label.reason is None and (t.scope == "special_region" or t.code.startswith("CN-"))


def combine(earlier: Label, later: Label) -> Label:
    """The label of an address that ``earlier`` (the databases before) and ``later`` (the next one) give."""
    r = rank(earlier)
    if r == 2:
        return earlier
    if r == 1:
        return later if _refines_china(later) else earlier
    return later if rank(later) > r else earlier


def direct_label(sources: Sequence[Source], ip: IPAddress) -> tuple[Label, list[tuple[Label, str | None]]]:
    """The label of ``ip`` looked up in each database in turn, without a table (the reference the table must
    agree with), and each database's own answer. ``ip`` as :func:`parse_ip` returns it."""
    ip = unwrap_tunnel(ip)
    reason = special_reason(ip)
    answers = [s.answer(ip) for s in sources]
    if reason is not None:
        return UNKNOWN_LABELS[reason], answers
    label = NOT_FOUND
    for answer, _raw in answers:
        label = combine(label, answer)
    return label, answers


# ------------------------------------------------------------------------------------------------------------
# Step functions: starts[i] is the first address of a run of label ids[i], up to starts[i + 1] - 1.
# ------------------------------------------------------------------------------------------------------------

Steps = tuple[list[int], list[int]]


class _Labels:
    """Label ↔ small integer id, shared by every step function of one compile."""

    def __init__(self) -> None:
        self.labels: list[Label] = [NOT_FOUND]
        self._ids: dict[Label, int] = {NOT_FOUND: 0}

    def id(self, label: Label) -> int:
        i = self._ids.get(label)
        if i is None:
            i = len(self.labels)
            if i > _MAX_LABELS:
                raise ValueError("more distinct labels than the table can number")
            self._ids[label] = i
            self.labels.append(label)
        return i


def _steps_from_ranges(ranges: Iterable[Range], ids: _Labels, top: int, what: str) -> Steps:
    starts: list[int] = [0]
    out: list[int] = [0]
    cur = 0
    label_id = ids.id
    # Label ids by the label object's identity: a database's ranges share a few hundred label objects, and
    # hashing a Label (nested tuples) per range was a third of this loop. ``seen`` keeps them alive.
    by_object: dict[int, int] = {}
    seen: list[Label] = []
    for s, e, label in ranges:
        if s < cur or e < s or e > top:
            raise ValueError(f"{what}: ranges overlap, are out of order or out of range")
        lid = by_object.get(id(label))
        if lid is None:
            lid = by_object[id(label)] = label_id(label)
            seen.append(label)
        if s > cur and out[-1] != 0:
            starts.append(cur)
            out.append(0)
        if out[-1] != lid:
            if starts[-1] == s:
                out[-1] = lid
                if len(out) > 1 and out[-2] == lid:
                    starts.pop()
                    out.pop()
            else:
                starts.append(s)
                out.append(lid)
        cur = e + 1
    if cur <= top and out[-1] != 0:
        starts.append(cur)
        out.append(0)
    return starts, out


def _merge(a: Steps, b: Steps, pick: Callable[[int, int], int], final: frozenset[int]) -> Steps:
    """The step function of ``pick(a(x), b(x))``, where ``pick(f, y) == f`` for every id ``f`` in ``final``
    (``pick`` is memoised by the caller). Runs of ``a`` that are final are copied without looking at ``b``: a
    database in front that knows most addresses costs one pass over its own steps, not over both."""
    a_s, a_i = a
    b_s, b_i = b
    na, nb = len(a_s), len(b_s)
    starts: list[int] = []
    out: list[int] = []
    append_s, append_i = starts.append, out.append
    last = -1
    for k in range(na):
        lid = a_i[k]
        if lid in final:
            if lid != last:
                append_s(a_s[k])
                append_i(lid)
                last = lid
            continue
        start = a_s[k]
        end = a_s[k + 1] if k + 1 < na else None
        j = bisect_right(b_s, start) - 1
        got = pick(lid, b_i[j])
        if got != last:
            append_s(start)
            append_i(got)
            last = got
        j += 1
        while j < nb and (end is None or b_s[j] < end):
            got = pick(lid, b_i[j])
            if got != last:
                append_s(b_s[j])
                append_i(got)
                last = got
            j += 1
    return starts, out


def _overlay_special(steps: Steps, family: Family, ids: _Labels) -> None:
    """Lay the special-purpose ranges over ``steps``, in place: they win over every database.

    Spliced in with ``bisect`` and slice assignment (a few C-level moves per range) rather than merged step by
    step: there are a dozen of them and a million steps."""
    spec = _SPECIAL_V4 if family == 4 else _SPECIAL_V6
    top = _V4_MAX if family == 4 else _V6_MAX
    # territory.special_reason takes the first match: paint the list back to front, earlier entries on top
    paint: list[tuple[int, int, UnknownReason]] = list(reversed(spec))
    if family == 6:
        g = ip_network("2000::/3")  # every other IPv6 address outside global unicast is reserved
        paint = [
            (0, int(g.network_address) - 1, "reserved"),
            (int(g.broadcast_address) + 1, top, "reserved"),
            *paint,
        ]
    starts, out = steps
    for lo, hi, reason in paint:
        rid = ids.id(UNKNOWN_LABELS[reason])
        new_s, new_i = [lo], [rid]
        if hi < top:
            new_s.append(hi + 1)
            new_i.append(out[bisect_right(starts, hi + 1) - 1])
        i = bisect_left(starts, lo)
        j = bisect_right(starts, hi + 1) if hi < top else len(starts)
        starts[i:j] = new_s
        out[i:j] = new_i


# ------------------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the table was compiled from, per database, for logs, metrics and ``--explain``."""

    path: str
    kind: str
    build: str
    build_epoch: int
    ranges: int  # ranges the database itself had (before merging)


class TerritoryTable:
    """Address → Label for an ordered list of databases. Immutable once built; share it between threads."""

    def __init__(
        self,
        labels: list[Label],
        v4: tuple[array[int], array[int]],
        v6: tuple[array[int], array[int]],
        v6_inner: dict[int, tuple[array[int], array[int]]],
        sources: tuple[SourceInfo, ...],
        compile_seconds: float,
        v4_block: array[int] | None = None,
        from_cache: bool = False,
    ) -> None:
        self.labels = labels
        self._v4_starts, self._v4_ids = v4
        # For each /20, the index of the range its first address is in: a lookup bisects the few ranges of
        # one block instead of the whole table (bisect on an array makes an int object per probe). 4 MiB.
        self._v4_block = _block_index(self._v4_starts) if v4_block is None else v4_block
        self.from_cache = from_cache
        self._v6_starts, self._v6_ids = v6
        self._v6_inner = v6_inner
        self.sources = sources
        self.compile_seconds = compile_seconds

    def check(self) -> None:
        """Raise ValueError unless the arrays are consistent (a table read back from disk)."""
        n4, n6 = len(self._v4_starts), len(self._v6_starts)
        nl = len(self.labels)
        if not (n4 and n6 and n4 == len(self._v4_ids) and n6 == len(self._v6_ids)):
            raise ValueError("array lengths")
        if self._v4_starts[0] or self._v6_starts[0] or len(self._v4_block) != (1 << (32 - _BLOCK_SHIFT)) + 1:
            raise ValueError("starts")
        if max(self._v4_ids) >= nl or max(i for i in self._v6_ids if i != _MIXED) >= nl:
            raise ValueError("label ids")
        if max(self._v4_block) >= n4:
            raise ValueError("block index")
        for s, i in self._v6_inner.values():
            if len(s) != len(i) or not s or s[0] or max(i) >= nl:
                raise ValueError("inner table")
        if any(
            lid == _MIXED and hi not in self._v6_inner
            for hi, lid in zip(self._v6_starts, self._v6_ids, strict=True)
        ):
            raise ValueError("inner tables missing")

    @property
    def size(self) -> tuple[int, int, int]:
        """(IPv4 ranges, IPv6 /64-level ranges, IPv6 blocks with an inner table)."""
        return len(self._v4_starts), len(self._v6_starts), len(self._v6_inner)

    def nbytes(self) -> int:
        """Memory held by the arrays (the labels are shared with the rest of the process)."""
        arrays = (self._v4_starts, self._v4_ids, self._v4_block, self._v6_starts, self._v6_ids)
        n = sum(a.itemsize * len(a) for a in arrays)
        for s, i in self._v6_inner.values():
            n += s.itemsize * len(s) + i.itemsize * len(i) + 200
        return n

    def ranges(self, family: Family) -> Iterator[Range]:
        """The table's own ranges of ``family``, in order (adjacent ranges have different labels)."""
        if family == 4:
            starts, ids = self._v4_starts, self._v4_ids
            for k in range(len(starts)):
                end = starts[k + 1] - 1 if k + 1 < len(starts) else _V4_MAX
                yield starts[k], end, self.labels[ids[k]]
            return
        starts, ids = self._v6_starts, self._v6_ids
        for k in range(len(starts)):
            end_hi = starts[k + 1] - 1 if k + 1 < len(starts) else _LOW
            if ids[k] != _MIXED:
                yield starts[k] << 64, (end_hi << 64) | _LOW, self.labels[ids[k]]
                continue
            for hi in range(starts[k], end_hi + 1):
                in_s, in_i = self._v6_inner[hi]
                for m in range(len(in_s)):
                    lo_end = in_s[m + 1] - 1 if m + 1 < len(in_s) else _LOW
                    yield (hi << 64) | in_s[m], (hi << 64) | lo_end, self.labels[in_i[m]]

    def lookup_int(self, family: Family, n: int) -> Label:
        if family == 4:
            block = self._v4_block
            k = n >> _BLOCK_SHIFT
            return self.labels[
                self._v4_ids[bisect_right(self._v4_starts, n, block[k] + 1, block[k + 1] + 1) - 1]
            ]
        lid = self._v6_ids[bisect_right(self._v6_starts, n >> 64) - 1]
        if lid == _MIXED:
            s, i = self._v6_inner[n >> 64]
            lid = i[bisect_right(s, n & _LOW) - 1]
        return self.labels[lid]

    def lookup(self, ip: IPAddress) -> Label:
        """The label of an address as :func:`parse_ip` returns it (tunnels unwrapped here)."""
        ip = unwrap_tunnel(ip)
        return self.lookup_int(4 if isinstance(ip, IPv4Address) else 6, int(ip))

    def labeller(self) -> Callable[[str], Label]:
        """A function address text → Label; raises InvalidIP (a ValueError) for text that is not an address.

        A closure over the arrays, so the dotted-quad path (most traffic) is a regex match, ``inet_aton``,
        one ``bisect`` and two index operations, with no attribute lookups."""
        labels = self.labels
        v4_starts, v4_ids, block = self._v4_starts, self._v4_ids, self._v4_block
        v6_starts, v6_ids, v6_inner = self._v6_starts, self._v6_ids, self._v6_inner
        pton = inet_pton
        from_bytes = int.from_bytes
        bisect = bisect_right
        lookup = self.lookup
        shift = _BLOCK_SHIFT

        def label(text: str) -> Label:
            """The label of ``text``; raises InvalidIP (a ValueError) if it is not an address."""
            # inet_pton is as strict as parse_ip for both families (no leading zeros in a dotted quad, no
            # shorthand, no spaces; tests/pipeline/test_geodb.py holds them to it) and parses in C. Scoped,
            # IPv4-mapped and tunnel addresses take the full path, which knows their rules.
            try:
                n = from_bytes(pton(AF_INET, text))
            except (OSError, ValueError):
                pass
            else:
                k = n >> shift
                return labels[v4_ids[bisect(v4_starts, n, block[k] + 1, block[k + 1] + 1) - 1]]
            if "%" not in text and "." not in text:
                try:
                    n = from_bytes(pton(AF_INET6, text))
                except (OSError, ValueError):
                    pass
                else:
                    top = n >> 96
                    if top != _TEREDO_TOP and n >> 112 != _SIXTOFOUR_TOP and n >> 32 != _MAPPED_TOP:
                        lid = v6_ids[bisect(v6_starts, n >> 64) - 1]
                        if lid == _MIXED:
                            in_s, in_i = v6_inner[n >> 64]
                            lid = in_i[bisect(in_s, n & _LOW) - 1]
                        return labels[lid]
            return lookup(parse_ip(text))

        return label


def _block_index(starts: array[int]) -> array[int]:
    """``index[k]``: the range that holds address ``k << _BLOCK_SHIFT``; one more entry for the end."""
    index = array("I")
    j = 0
    n = len(starts)
    for k in range(1 << (32 - _BLOCK_SHIFT)):
        first = k << _BLOCK_SHIFT
        while j + 1 < n and starts[j + 1] <= first:
            j += 1
        index.append(j)
    index.append(n - 1)
    return index


def _v6_split(
    starts: list[int], ids: list[int]
) -> tuple[tuple[array[int], array[int]], dict[int, tuple[array[int], array[int]]]]:
    """Split a 128-bit step function into the /64-level table and the inner tables of mixed blocks."""
    outer_s: list[int] = []
    outer_i: list[int] = []

    def push(pos: int, lid: int) -> None:
        if outer_s and outer_s[-1] == pos:
            outer_i[-1] = lid
            if len(outer_i) > 1 and outer_i[-2] == lid:
                outer_s.pop()
                outer_i.pop()
        elif not outer_i or outer_i[-1] != lid:
            outer_s.append(pos)
            outer_i.append(lid)

    inner: dict[int, tuple[array[int], array[int]]] = {}
    n = len(starts)
    k = 0
    while k < n:
        s = starts[k]
        hi = s >> 64
        if s & _LOW == 0 and (k + 1 >= n or starts[k + 1] >> 64 != hi):
            push(hi, ids[k])
            k += 1
            continue
        # a block with a boundary inside: its label at the block's first address, then its own steps
        j = k
        while j < n and starts[j] >> 64 == hi:
            j += 1
        in_s = array("Q")
        in_i = array("H")
        if s & _LOW:
            in_s.append(0)
            in_i.append(ids[k - 1])
        for m in range(k, j):
            in_s.append(starts[m] & _LOW)
            in_i.append(ids[m])
        inner[hi] = (in_s, in_i)
        push(hi, _MIXED)
        if hi < _LOW:
            push(hi + 1, ids[j - 1])  # replaced if the next block starts with its own step
        k = j
    return (array("Q", outer_s), array("H", outer_i)), inner


def compile_table(sources: Sequence[Source]) -> TerritoryTable:
    """Compile ``sources`` (first answers first) into one table. Blocking and CPU-bound: call it in a thread.
    Raises DatabaseError if a database turns out corrupt while being read."""
    t0 = time.perf_counter()
    ids = _Labels()
    counts = [0] * len(sources)
    families: dict[Family, Steps] = {}
    for family in (4, 6):
        fam: Family = family
        top = _V4_MAX if family == 4 else _V6_MAX
        memo: dict[tuple[int, int], int] = {}
        labels = ids.labels

        def pick(
            a: int, b: int, memo: dict[tuple[int, int], int] = memo, labels: list[Label] = labels
        ) -> int:
            got = memo.get((a, b))
            if got is None:
                got = ids.id(combine(labels[a], labels[b]))
                memo[(a, b)] = got
            return got

        steps: Steps | None = None
        for k, src in enumerate(sources):
            if fam not in src.families:
                continue
            rs = list(src.ranges(fam))
            counts[k] += len(rs)
            try:
                mine = _steps_from_ranges(rs, ids, top, "ranges")
            except ValueError as e:
                raise DatabaseError(src.path, f"corrupt ({e})") from None
            del rs
            if steps is None:
                steps = mine
            else:
                final = frozenset(i for i, lb in enumerate(ids.labels) if rank(lb) == 2)
                steps = _merge(steps, mine, pick, final)
        if steps is None:
            steps = ([0], [0])
        _overlay_special(steps, fam, ids)
        families[fam] = steps
    if len(ids.labels) > _MAX_LABELS:
        raise ValueError("too many distinct labels")
    v4s, v4i = families[4]
    v4 = (array("I", v4s), array("H", v4i))
    v6, inner = _v6_split(*families[6])
    info = tuple(
        SourceInfo(str(s.path), s.kind, s.build, s.build_epoch, counts[k]) for k, s in enumerate(sources)
    )
    return TerritoryTable(ids.labels, v4, v6, inner, info, time.perf_counter() - t0)
