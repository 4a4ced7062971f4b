"""MaxMind DB (GeoIP2/GeoLite2-City shaped) files as a source of the territory table."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Final

import maxminddb

from streams.pipeline.geodb.base import DatabaseError, Family, IPAddress, Kind, Range, RecordError
from streams.pipeline.geoip import MmdbDatabase, location_from_record
from streams.pipeline.territory import UNKNOWN_LABELS, Label, label_location

_NOT_FOUND: Final = UNKNOWN_LABELS["not_found"]


# Aliases of the IPv4 subtree in an IPv6 database (MaxMind's writer adds them); their addresses are unwrapped
# to IPv4 before any lookup, so the IPv6 table does not need them.
def looks_like_mmdb(tail: bytes) -> bool:
    return b"\xab\xcd\xefMaxMind.com" in tail


_HIGH_NIBBLE: Final = bytes(b >> 4 for b in range(256))
_LOW_NIBBLE: Final = bytes(b & 0x0F for b in range(256))


def node_records(tree: bytes, record_size: int) -> tuple[array[int], array[int]]:
    """The search tree's records as two arrays of 32-bit ints, every node's zero record and its one record,
    each record's bytes copied into a big-endian 4-byte slot with extended slices (28-bit records share a
    byte of two nibbles: ``translate`` splits it), so no Python code runs per node."""
    width = record_size // 4  # bytes per node
    nodes = len(tree) // width
    half = width // 2
    out: list[array[int]] = []
    for side in (0, 1):
        buf = bytearray(nodes * 4)
        if record_size == 28:  # 3 bytes of the zero record, a byte of both top nibbles, 3 of the one's
            buf[0::4] = tree[3::7].translate(_LOW_NIBBLE if side else _HIGH_NIBBLE)
            for k in range(3):
                buf[k + 1 :: 4] = tree[k + 4 * side :: 7]
        else:
            first = 4 - half  # 24-bit records leave the slot's top byte zero
            for k in range(half):
                buf[first + k :: 4] = tree[side * half + k :: width]
        a = array("I")
        if a.itemsize != 4:  # pragma: no cover -- 'I' is 4 bytes on every platform CPython runs on
            raise RuntimeError("array('I') is not 32-bit here")
        a.frombytes(buf)
        if sys.byteorder == "little":
            a.byteswap()
        out.append(a)
    return out[0], out[1]


class MmdbSource:
    """A validated MmdbDatabase, its networks read once into ranges."""

    kind: Kind = "mmdb"

    def __init__(self, db: MmdbDatabase) -> None:
        self.db = db
        self.path = db.path
        self.build = db.build
        self.build_epoch = db.build_epoch
        meta = db._reader.metadata()
        self.families: tuple[Family, ...] = (4, 6) if meta.ip_version == 6 else (4,)

    @classmethod
    def open(cls, path: Path | str) -> MmdbSource:
        return cls(MmdbDatabase.open(path))

    def ranges(self, family: Family) -> Iterator[Range]:
        # Read on every call, not kept: a real database has millions of networks, and a worker only needs
        # them while it compiles.
        yield from self._walk(family)

    def _walk(self, family: Family) -> list[Range]:
        """The search tree walked in Python, each distinct record decoded once (by maxminddb, at the first
        address that reaches it). The reader's own iterator decodes the record of every network, which on a
        real GeoLite2-City costs a minute; distinct records are a few percent of the networks."""
        meta = self.db._reader.metadata()
        node_count, record_size = int(meta.node_count), int(meta.record_size)
        if record_size not in (24, 28, 32):
            raise DatabaseError(self.path, f"unsupported MaxMind DB record size {record_size}")
        try:
            with self.path.open("rb") as f:
                tree = f.read(node_count * record_size // 4)
        except OSError as e:
            raise DatabaseError(self.path, f"cannot read ({e.strerror or type(e).__name__})") from None
        if len(tree) != node_count * record_size // 4:
            raise DatabaseError(self.path, "corrupt (search tree truncated)")
        # Node n's zero and one records, all decoded at once in C: indexing an array is several times
        # cheaper than slicing the tree and int.from_bytes twice per node.
        zeros, ones = node_records(tree, record_size)
        del tree

        ipv6_db = meta.ip_version == 6
        v4root = 0
        if ipv6_db:  # IPv4 lives under ::/96 in an IPv6 database
            for _ in range(96):
                if v4root >= node_count:
                    break
                v4root = zeros[v4root]
        if family == 6 and not ipv6_db:
            return []
        bits = 32 if family == 4 else 128
        root = v4root if family == 4 else 0
        # The aliases of the IPv4 subtree (::ffff:0:0/96, 2002::/16) are IPv4's, not IPv6's: in the IPv6
        # walk a pointer to the IPv4 subtree's root node reads as empty.
        alias = v4root if family == 6 and v4root < node_count else node_count
        labels: dict[int, Label] = {}
        reader = self.db._reader
        addr_cls = IPv4Address if family == 4 else IPv6Address
        out: list[Range] = []
        if root == node_count:
            return out
        budget = 2 * node_count + 2
        stack = [(root, 0, 0)]
        pop, push, emit = stack.pop, stack.append, out.append
        try:
            while stack:
                node, depth, prefix = pop()
                top = depth
                # Down the zero side, pushing the one side where both exist: a chain of nodes with a
                # single child (most of an IPv6 tree: a /48 is 48 nodes deep) costs no stack traffic.
                while node < node_count:
                    if depth >= bits:
                        raise DatabaseError(self.path, "corrupt (the search tree loops or is too deep)")
                    zero = zeros[node]
                    one = ones[node]
                    depth += 1
                    prefix <<= 1
                    if one != node_count and one != alias:
                        if zero == node_count or zero == alias:  # noqa: SIM109 -- no tuple built per node
                            node = one
                            prefix |= 1
                            continue
                        push((one, depth, prefix | 1))
                    node = zero if zero != alias else node_count
                # one step per level: the nodes this descent visited (a tree whose nodes share children
                # could make the walk exponential; a valid tree visits each node once)
                budget -= depth - top
                if budget < 0:
                    raise DatabaseError(self.path, "corrupt (the search tree loops or is too deep)")
                if node > node_count:
                    label = labels.get(node)
                    start = prefix << (bits - depth)
                    if label is None:
                        record = reader.get(addr_cls(start))
                        label = label_location(None if record is None else location_from_record(record))
                        labels[node] = label
                    if label is not _NOT_FOUND:
                        emit((start, start + (1 << (bits - depth)) - 1, label))
        except (maxminddb.InvalidDatabaseError, ValueError, TypeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DatabaseError(self.path, f"corrupt ({first.split(' for ', 1)[0]})") from None
        return out

    def answer(self, ip: IPAddress) -> tuple[Label, str | None]:
        try:
            record = self.db._reader.get(ip) if not (ip.version == 6 and 6 not in self.families) else None
        except maxminddb.InvalidDatabaseError as e:
            raise RecordError(str(e).split(" for ", 1)[0]) from None
        if record is None:
            return _NOT_FOUND, None
        return label_location(location_from_record(record)), _summary(record)

    def close(self) -> None:
        self.db.close()


def _summary(record: object) -> str:
    """The parts of a GeoIP2 record the label reads, as one line."""
    if not isinstance(record, dict):
        return repr(record)[:200]
    parts = []
    country = record.get("country")
    if isinstance(country, dict):
        names = country.get("names") or {}
        parts.append(
            f"country={country.get('iso_code')} {names.get('zh-CN', '')} {names.get('en', '')}".rstrip()
        )
    subs = record.get("subdivisions")
    if isinstance(subs, list) and subs and isinstance(subs[0], dict):
        names = subs[0].get("names") or {}
        parts.append(
            f"subdivision={subs[0].get('iso_code')} {names.get('zh-CN', '')} {names.get('en', '')}".rstrip()
        )
    return "; ".join(parts) or "(no country)"
