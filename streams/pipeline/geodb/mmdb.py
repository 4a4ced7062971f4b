"""MaxMind DB (GeoIP2/GeoLite2-City shaped) files as a source of the territory table."""

from __future__ import annotations

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
        frm = int.from_bytes
        width = record_size // 4  # bytes per node

        def children(n: int) -> tuple[int, int]:
            off = n * width
            if width == 6:
                return frm(tree[off : off + 3]), frm(tree[off + 3 : off + 6])
            if width == 8:
                return frm(tree[off : off + 4]), frm(tree[off + 4 : off + 8])
            mid = tree[off + 3]
            left = ((mid & 0xF0) << 20) | frm(tree[off : off + 3])
            return left, ((mid & 0x0F) << 24) | frm(tree[off + 4 : off + 7])

        ipv6_db = meta.ip_version == 6
        v4root = 0
        if ipv6_db:  # IPv4 lives under ::/96 in an IPv6 database
            for _ in range(96):
                if v4root >= node_count:
                    break
                v4root = children(v4root)[0]
        if family == 6 and not ipv6_db:
            return []
        bits = 32 if family == 4 else 128
        root = v4root if family == 4 else 0
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
                if node > node_count:
                    label = labels.get(node)
                    start = prefix << (bits - depth)
                    if label is None:
                        record = reader.get(addr_cls(start))
                        label = label_location(None if record is None else location_from_record(record))
                        labels[node] = label
                    if label is not _NOT_FOUND:
                        emit((start, start + (1 << (bits - depth)) - 1, label))
                    continue
                budget -= 1
                if budget < 0 or depth >= bits:
                    raise DatabaseError(self.path, "corrupt (the search tree loops or is too deep)")
                # children(node), inlined: this line runs once per node, millions of times
                off = node * width
                if width == 6:
                    zero, one = frm(tree[off : off + 3]), frm(tree[off + 3 : off + 6])
                elif width == 8:
                    zero, one = frm(tree[off : off + 4]), frm(tree[off + 4 : off + 8])
                else:
                    mid = tree[off + 3]
                    zero = ((mid & 0xF0) << 20) | frm(tree[off : off + 3])
                    one = ((mid & 0x0F) << 24) | frm(tree[off + 4 : off + 7])
                d1 = depth + 1
                # the aliases of the IPv4 subtree (::ffff:0:0/96, 2002::/16) are IPv4's, not IPv6's
                if one != node_count and not (family == 6 and one == v4root):
                    push((one, d1, (prefix << 1) | 1))
                if zero != node_count and not (family == 6 and zero == v4root):
                    push((zero, d1, prefix << 1))
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
