"""IPIP.net ``ipdb`` files (the free and the paid editions), read as ipipdotnet/ipdb-python reads them.

Layout: a 4-byte big-endian length, that many bytes of JSON metadata (``node_count``, ``total_size``,
``fields``, ``languages`` {name: offset}, ``ip_version`` bit mask 1 = IPv4, 2 = IPv6, ``build``), then
``total_size`` bytes: ``node_count`` trie nodes of 8 bytes (two big-endian u32 children, bit 0 then bit 1),
then the records. A child below ``node_count`` is a node, ``node_count`` itself is "no data", and above it is
a record at ``child - node_count`` bytes into the record area: a big-endian u16 length and that many bytes of
UTF-8, tab-separated values, ``len(fields)`` per language, the language's at its offset.

The tree is an IPv6 tree; IPv4 addresses live under ``::ffff:0:0/96`` (80 zero bits, then 16 one bits).
The whole trie is walked when the file is opened (every node once, every record decoded), so a corrupt file
is refused at start instead of answering wrongly later.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final

from streams.pipeline.geodb.base import DatabaseError, Family, IPAddress, Kind, Range, build_string, read_file
from streams.pipeline.geodb.regions import ipdb_label
from streams.pipeline.territory import UNKNOWN_LABELS, Label

_NOT_FOUND: Final = UNKNOWN_LABELS["not_found"]
_MAX_META = 1 << 20
LANGUAGE: Final = "CN"


def looks_like_ipdb(head: bytes) -> bool:
    if len(head) < 6:
        return False
    n = int.from_bytes(head[:4], "big")
    return 0 < n < _MAX_META and head[4:5] == b"{"


class IpdbDatabase:
    """An IPIP.net ipdb file, validated and walked once, its records reduced to labels."""

    kind: Kind = "ipdb"

    def __init__(self, path: Path, data: bytes, language: str = LANGUAGE) -> None:
        def corrupt(why: str) -> DatabaseError:
            return DatabaseError(path, f"corrupt ipdb file ({why})")

        self.path = path
        if len(data) < 4:
            raise DatabaseError(path, "not an ipdb file (too short)")
        meta_len = int.from_bytes(data[:4], "big")
        if not 0 < meta_len <= min(_MAX_META, len(data) - 4):
            raise DatabaseError(path, "not an ipdb file (no metadata)")
        try:
            meta: Any = json.loads(data[4 : 4 + meta_len].decode("utf-8"))
            node_count = int(meta["node_count"])
            total_size = int(meta["total_size"])
            fields = [str(f) for f in meta["fields"]]
            languages = {str(k): int(v) for k, v in dict(meta["languages"]).items()}
            ip_version = int(meta["ip_version"])
            build = int(meta.get("build", 0))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise DatabaseError(path, "not an ipdb file (bad metadata)") from None
        if len(data) != 4 + meta_len + total_size:
            raise corrupt(f"{len(data)} bytes, the metadata says {4 + meta_len + total_size}")
        if not fields or not languages or (not node_count > 0 and node_count * 8 <= total_size):
            raise corrupt("empty fields, languages or tree")
        if node_count * 8 > total_size:
            raise corrupt("the tree is larger than the file")
        if ip_version & 3 == 0:
            raise DatabaseError(path, f"unsupported ipdb ip_version {ip_version}")
        if language not in languages:
            language = next(iter(languages))  # a database without CN: its first language is the best we have
        offset = languages[language]
        if not offset >= 0 or offset + len(fields) > len(fields) * len(languages):
            raise corrupt(f"language {language!r} at offset {offset}")
        if "country_name" not in fields:
            raise DatabaseError(path, "ipdb file without a country_name field")

        self.fields = fields
        self.language = language
        self.languages = tuple(languages)
        self.node_count = node_count
        self.build_epoch = build
        self.build = build_string("ipdb", build)
        self.families: tuple[Family, ...] = tuple(f for f, bit in ((4, 1), (6, 2)) if ip_version & bit)  # type: ignore[misc]

        body = data[4 + meta_len :]
        nodes = array("I", body[: node_count * 8])
        if nodes.itemsize != 4:
            raise AssertionError("array('I') is not 32-bit here")
        if sys.byteorder == "little":
            nodes.byteswap()
        self._nodes = nodes
        records = body[node_count * 8 :]

        # Every record the tree points to, decoded once: pointer → (label, the raw values)
        self._records: dict[int, tuple[Label, str]] = {}
        width = len(fields)

        def record(child: int) -> tuple[Label, str]:
            got = self._records.get(child)
            if got is not None:
                return got
            off = child - node_count
            if off + 2 > len(records):
                raise corrupt(f"record pointer {off} past the end")
            n = int.from_bytes(records[off : off + 2], "big")
            if off + 2 + n > len(records):
                raise corrupt(f"record at {off} runs past the end")
            try:
                values = records[off + 2 : off + 2 + n].decode("utf-8").split("\t")
            except UnicodeDecodeError:
                raise corrupt(f"record at {off} is not UTF-8") from None
            if len(values) < offset + width:
                raise corrupt(f"record at {off} has {len(values)} values, {offset + width} expected")
            mine = values[offset : offset + width]
            got = (ipdb_label(dict(zip(fields, mine, strict=True))), "\t".join(mine))
            self._records[child] = got
            return got

        self._record = record
        # IPv4: the node at ::ffff:0:0/96; None when the chain there is missing
        node = 0
        v4root: int | None = 0
        for i in range(96):
            if node >= node_count:
                v4root = None
                break
            node = nodes[2 * node + (1 if i >= 80 else 0)]
        if v4root is not None:
            v4root = node
        self._v4root = v4root
        if 4 in self.families and (v4root is None or v4root > node_count):
            # The official reader walks those 96 bits blindly; without the chain it reads garbage.
            raise corrupt("no IPv4 subtree under ::ffff:0:0/96")
        # Walked now to refuse a corrupt file at open; kept only until the first compile takes them.
        self._ranges: dict[Family, list[Range]] | None = {f: self._walk(f) for f in self.families}

    @classmethod
    def open(cls, path: Path | str) -> IpdbDatabase:
        path = Path(path)
        return cls(path, read_file(path))

    def _walk(self, family: Family) -> list[Range]:
        """Every leaf of the tree (IPv4: under the IPv4 root; IPv6: the rest) as a sorted range list."""
        nodes, nc = self._nodes, self.node_count
        bits = 32 if family == 4 else 128
        root = self._v4root if family == 4 else 0
        v4root = self._v4root
        out: list[Range] = []
        if root is None or root == nc:
            return out
        if root > nc:  # a record for the whole space
            out.append((0, (1 << bits) - 1, self._record(root)[0]))
            return out
        budget = 2 * nc + 2  # a trie visits each node once; more means a cycle or shared subtrees
        record, known = self._record, self._records
        # Each node's children in two arrays (sliced in C): no index arithmetic per node.
        zeros, ones = nodes[0::2], nodes[1::2]
        # ::ffff:0:0/96 is IPv4's subtree; those addresses never reach the IPv6 table
        alias_depth = 96 if family == 6 else -1
        # Items are (child, depth, prefix): down the 0-branch at once, the 1-branch pushed where both exist,
        # so the leaves come in address order; a chain of single children (most of an IPv6 tree) costs no
        # stack traffic.
        stack = [(root, 0, 0)]
        pop, push, emit = stack.pop, stack.append, out.append
        while stack:
            node, depth, prefix = pop()
            top = depth
            while node < nc:
                if depth >= bits:
                    raise DatabaseError(self.path, "corrupt ipdb file (the tree is deeper than an address)")
                zero, one = zeros[node], ones[node]
                depth += 1
                prefix <<= 1
                if depth == alias_depth:
                    zero = nc if zero == v4root else zero
                    one = nc if one == v4root else one
                if one != nc:
                    if zero == nc:
                        node = one
                        prefix |= 1
                        continue
                    push((one, depth, prefix | 1))
                node = zero
            budget -= depth - top
            if budget < 0:
                raise DatabaseError(self.path, "corrupt ipdb file (the tree has cycles)")
            if node > nc:
                start = prefix << (bits - depth)
                got = known.get(node)
                label = (got if got is not None else record(node))[0]
                if label is not _NOT_FOUND:
                    emit((start, start + (1 << (bits - depth)) - 1, label))
        return out

    def ranges(self, family: Family) -> Iterator[Range]:
        if family not in self.families:
            return
        kept = self._ranges
        if kept is not None and family in kept:
            rs = kept.pop(family)
            if not kept:
                self._ranges = None
        else:
            rs = self._walk(family)
        yield from rs

    def answer(self, ip: IPAddress) -> tuple[Label, str | None]:
        family: Family = 4 if isinstance(ip, IPv4Address) else 6
        if family not in self.families:
            return _NOT_FOUND, None
        nodes, nc = self._nodes, self.node_count
        bits = 32 if family == 4 else 128
        node = self._v4root if family == 4 else 0
        assert node is not None
        n = int(ip)
        for i in range(bits):
            if node >= nc:
                break
            node = nodes[2 * node + ((n >> (bits - 1 - i)) & 1)]
        if node <= nc:
            return _NOT_FOUND, None
        label, raw = self._record(node)
        return label, raw

    def close(self) -> None:
        self._nodes = array("I")

    def __repr__(self) -> str:
        return f"IpdbDatabase({str(self.path)!r}, build={self.build!r}, language={self.language!r})"
