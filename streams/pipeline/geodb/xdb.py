"""ip2region ``xdb`` files, format versions 2 (IPv4) and 3 (IPv4 or IPv6, one family per file).

Layout (lionsoul2014/ip2region, maker/golang/xdb/maker.go), all integers little-endian:

- a 256-byte header: u16 structure version (2 or 3), u16 index policy, u32 creation time, u32 first and u32
  last segment index entry pointer, then (version 3) u16 IP version (4 or 6) and u16 pointer size (4);
- a 256 × 256 vector index of 8-byte cells (u32 first entry, u32 end of the last entry) for the addresses
  whose first two bytes are the cell's row and column; (0, 0) where there are none;
- the region strings, UTF-8, each stored once;
- the segment index: sorted, non-overlapping entries of start IP, end IP, u16 region length, u32 region
  pointer; 14 bytes for IPv4 (the addresses as little-endian u32), 38 for IPv6 (16-byte big-endian
  addresses). The maker splits every range where its first two bytes change, so each entry has one cell.

The file is read whole into memory and checked end to end when opened (every entry, every region, and the
vector index against the entries, since the official searcher goes through it and this reader does not):
a file that would make the official reader answer differently is refused, never half used.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import struct
import sys
from array import array
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Final

from streams.pipeline.geodb.base import (
    DatabaseError,
    Family,
    IPAddress,
    Kind,
    Range,
    build_string,
    read_file,
)
from streams.pipeline.geodb.regions import Layout, detect_layout, xdb_label
from streams.pipeline.territory import UNKNOWN_LABELS, Label

HEADER_LENGTH: Final = 256
VECTOR_CELLS: Final = 256 * 256
VECTOR_LENGTH: Final = VECTOR_CELLS * 8
DATA_START: Final = HEADER_LENGTH + VECTOR_LENGTH
ENTRY_SIZE: Final[dict[Family, int]] = {4: 14, 6: 38}
_V4_ENTRY: Final = struct.Struct("<IIHI")
_V6_TAIL: Final = struct.Struct("<HI")
_NOT_FOUND: Final = UNKNOWN_LABELS["not_found"]


def looks_like_xdb(head: bytes) -> bool:
    """Cheap sniff for format detection: a version 2/3 header with sane pointers."""
    if len(head) < 20:
        return False
    version, _policy, _created, start, end = struct.unpack_from("<HHIII", head)
    return version in (2, 3) and DATA_START <= start <= end


class XdbDatabase:
    """An ip2region xdb file, validated, held in memory."""

    kind: Kind = "xdb"

    def __init__(
        self,
        path: Path,
        *,
        version: int,
        family: Family,
        created_at: int,
        starts: array[int] | list[int],
        ends: array[int] | list[int],
        regions: array[int],
        region_text: dict[int, str],
        layout: Layout,
    ) -> None:
        self.path = path
        self.version = version
        self.family: Family = family
        self.families: tuple[Family, ...] = (family,)
        self.build_epoch = created_at
        self.build = build_string(f"ip2region-xdb-v{version}-IPv{family}", created_at)
        self._starts = starts
        self._ends = ends
        self._regions = regions  # per entry: the region pointer, a key of region_text
        self._text = region_text
        self.layout: Layout = layout
        self._labels = {ptr: xdb_label(text, layout) for ptr, text in region_text.items()}

    @classmethod
    def open(cls, path: Path | str) -> XdbDatabase:
        path = Path(path)
        return cls.from_bytes(path, read_file(path))

    @classmethod
    def from_bytes(cls, path: Path, data: bytes) -> XdbDatabase:
        def corrupt(why: str) -> DatabaseError:
            return DatabaseError(path, f"corrupt xdb file ({why})")

        if len(data) < DATA_START:
            raise DatabaseError(
                path, f"not an xdb file (only {len(data)} bytes, a header and index need {DATA_START})"
            )
        version, _policy, created_at, first, last, ip_version, ptr_bytes = struct.unpack_from(
            "<HHIIIHH", data
        )
        if version == 2:
            family: Family = 4
        elif version == 3:
            if ip_version not in (4, 6):
                raise DatabaseError(path, f"unsupported xdb IP version {ip_version} (4 or 6 expected)")
            if ptr_bytes not in (0, 4):
                raise DatabaseError(path, f"unsupported xdb pointer size {ptr_bytes} (4 expected)")
            family = 4 if ip_version == 4 else 6
        else:
            raise DatabaseError(path, f"unsupported xdb structure version {version} (2 or 3 expected)")
        size = ENTRY_SIZE[family]
        if not DATA_START <= first <= last or last + size > len(data) or (last - first) % size:
            raise corrupt(f"segment index pointers {first}..{last} outside the file of {len(data)} bytes")

        starts: array[int] | list[int]
        ends: array[int] | list[int]
        if family == 4:
            block = data[first : last + size]
            starts, ends = _column(block, size, 0, 4), _column(block, size, 4, 4)
            lens, ptrs = _column(block, size, 8, 2), _column(block, size, 10, 4)
            del block
        else:
            starts, ends = [], []
            lens, ptrs = array("I"), array("I")
            frm = int.from_bytes
            for off in range(first, last + size, size):
                starts.append(frm(data[off : off + 16]))
                ends.append(frm(data[off + 16 : off + 32]))
                n, p = _V6_TAIL.unpack_from(data, off + 32)
                lens.append(n)
                ptrs.append(p)

        got = array("I", data[HEADER_LENGTH:DATA_START])
        if got.itemsize != 4:
            raise AssertionError("array('I') is not 32-bit here")
        if sys.byteorder != "little":
            got.byteswap()
        # The checks below in C-speed passes (a million entries in a real file); only a file that fails them
        # goes through the entry-by-entry checks, which say what is wrong.
        region_len = dict(zip(ptrs, lens, strict=True))
        if (
            all(map(operator.le, starts, ends))
            and all(map(operator.lt, ends, itertools.islice(starts, 1, None)))
            and len(set(zip(ptrs, lens, strict=True))) == len(region_len)
            and _vector_index_agrees(got, starts, ends, first, last, size, 16 if family == 4 else 112)
        ):
            for p, n in region_len.items():
                if n == 0 or p < DATA_START or p + n > first:
                    raise corrupt(f"region pointer {p} (+{n}) outside the data block")
        else:
            region_len = _checked_entries(corrupt, got, starts, ends, lens, ptrs, first, size, family)
        try:
            text = {p: data[p : p + n].decode("utf-8") for p, n in region_len.items()}
        except UnicodeDecodeError:
            raise corrupt("a region string is not UTF-8") from None

        layout = detect_layout(text.values())
        return cls(
            path,
            version=version,
            family=family,
            created_at=created_at,
            starts=starts,
            ends=ends,
            regions=ptrs,
            region_text=text,
            layout=layout,
        )

    def ranges(self, family: Family) -> Iterator[Range]:
        if family != self.family:
            return
        labels = self._labels
        for s, e, p in zip(self._starts, self._ends, self._regions, strict=True):
            label = labels[p]
            if label is not _NOT_FOUND:
                yield s, e, label

    def _find(self, n: int) -> int | None:
        i = bisect.bisect_right(self._starts, n) - 1
        if i >= 0 and n <= self._ends[i]:
            return self._regions[i]
        return None

    def answer(self, ip: IPAddress) -> tuple[Label, str | None]:
        if (4 if isinstance(ip, IPv4Address) else 6) != self.family:
            return _NOT_FOUND, None
        p = self._find(int(ip))
        if p is None:
            return _NOT_FOUND, None
        return self._labels[p], self._text[p]

    def close(self) -> None:
        """Nothing to release: the file was read and closed when opened."""

    def __repr__(self) -> str:
        return f"XdbDatabase({str(self.path)!r}, build={self.build!r}, layout={self.layout!r})"


def _column(block: bytes, size: int, offset: int, width: int) -> array[int]:
    """One little-endian field (``width`` bytes at ``offset``) of every ``size``-byte entry, as u32s: the
    bytes copied into 4-byte slots with extended slices, no Python code per entry."""
    buf = bytearray(len(block) // size * 4)
    for k in range(width):
        buf[k::4] = block[offset + k :: size]
    out = array("I")
    out.frombytes(buf)
    if sys.byteorder != "little":
        out.byteswap()
    return out


def _vector_index_agrees(
    got: array[int],
    starts: array[int] | list[int],
    ends: array[int] | list[int],
    first: int,
    last: int,
    size: int,
    shift: int,
) -> bool:
    """Whether the vector index is exactly what the (sorted, disjoint) entries imply, cell by cell: each
    non-empty cell points at the entries that follow the previous cell's, and its first entry starts and its
    last entry ends in that cell (so, sorted, every entry between does)."""
    cursor = first
    for cell in range(VECTOR_CELLS):
        lo, hi = got[2 * cell], got[2 * cell + 1]
        if lo == 0 and hi == 0:
            continue
        if lo != cursor or hi <= lo or hi > last + size or (hi - lo) % size:
            return False
        i, j = (lo - first) // size, (hi - first) // size - 1
        if starts[i] >> shift != cell or ends[j] >> shift != cell:
            return False
        cursor = hi
    return cursor == last + size


def _checked_entries(
    corrupt: Callable[[str], DatabaseError],
    got: array[int],
    starts: array[int] | list[int],
    ends: array[int] | list[int],
    lens: array[int],
    ptrs: array[int],
    first: int,
    size: int,
    family: Family,
) -> dict[int, int]:
    """The entry-by-entry checks, raising what is wrong; region pointer → length if nothing is."""
    count = len(starts)
    # Entries sorted and disjoint; regions inside the data block, same pointer → same length.
    region_len: dict[int, int] = {}
    prev_end = -1
    for i in range(count):
        s, e = starts[i], ends[i]
        if s > e or s <= prev_end:
            raise corrupt(f"segment index entry {i} out of order or overlapping")
        prev_end = e
        p, n = ptrs[i], lens[i]
        known = region_len.setdefault(p, n)
        if known != n:
            raise corrupt(f"region at {p} read with lengths {known} and {n}")
    for p, n in region_len.items():
        if n == 0 or p < DATA_START or p + n > first:
            raise corrupt(f"region pointer {p} (+{n}) outside the data block")
    # The vector index must be exactly what the entries imply: the official searcher trusts it.
    shift = 16 if family == 4 else 112
    want = array("I", bytes(VECTOR_LENGTH))
    for i in range(count):
        cell = starts[i] >> shift
        if ends[i] >> shift != cell:
            raise corrupt(f"segment index entry {i} spans two vector index cells")
        ptr = first + i * size
        if want[2 * cell] == 0:
            want[2 * cell] = ptr
        want[2 * cell + 1] = ptr + size
    if got != want:
        raise corrupt("vector index disagrees with the segment index")
    return region_len  # the fast checks are only a shortcut: these decide
