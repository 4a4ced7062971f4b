"""Write ip2region ``xdb`` and IPIP.net ``ipdb`` files: test fixtures, demo and benchmark databases.

The writers follow each format's published layout (see streams.pipeline.geodb.xdb and .ipdb), so the official
readers (py-ip2region, ipip-ipdb) read what they write; the tests check that. The content is whatever the
caller passes: these write SYNTHETIC DATA, NOT REAL GEOGRAPHY, unless given real data.

    python -m streams.devtools.geodbwrite xdb PATH --from-db DB [--layout new|old] [--family 4|6]
    python -m streams.devtools.geodbwrite ipdb PATH --from-db DB
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

import click

from streams.pipeline.countries import COUNTRIES
from streams.pipeline.geodb.xdb import DATA_START, ENTRY_SIZE, HEADER_LENGTH, VECTOR_LENGTH
from streams.pipeline.territory import Label, find_division

Segment = tuple[int, int, str]  # first address, last address (integers), region string


def _replace_atomically(path: Path, content: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    tmp.replace(path)
    return path


def _split(start: int, end: int, shift: int) -> Iterable[tuple[int, int]]:
    """``[start, end]`` cut where the first two bytes change, as ip2region's maker does (one cell each)."""
    block = 1 << shift
    s = start
    while s <= end:
        e = min(end, (s | (block - 1)))
        yield s, e
        s = e + 1


def xdb_bytes(
    segments: Sequence[Segment],
    *,
    family: Literal[4, 6] = 4,
    version: Literal[2, 3] = 3,
    created_at: int | None = None,
    fill: str | None = "0|0|0|0|0",
) -> bytes:
    """An xdb file. ``segments``: sorted, disjoint; the gaps between them (and before and after) get the
    region ``fill`` as the maker's source data would have them (None: leave gaps, which the maker never does
    and the official searcher reads as "" except past the last entry, where it fails)."""
    if version == 2 and family != 4:
        raise ValueError("xdb version 2 is IPv4 only")
    top = (1 << (32 if family == 4 else 128)) - 1
    full: list[Segment] = []
    cur = 0
    for s, e, region in sorted(segments):
        if s < cur or e < s or e > top:
            raise ValueError("segments overlap or are out of range")
        if s > cur and fill is not None:
            full.append((cur, s - 1, fill))
        full.append((s, e, region))
        cur = e + 1
    if cur <= top and fill is not None:
        full.append((cur, top, fill))
    if not full:
        raise ValueError("no segments")

    data = bytearray()
    pool: dict[str, tuple[int, int]] = {}
    for _s, _e, region in full:
        if region not in pool:
            raw = region.encode("utf-8")
            if not 0 < len(raw) <= 0xFFFF:
                raise ValueError("a region must be 1..65535 bytes of UTF-8")
            pool[region] = (DATA_START + len(data), len(raw))
            data += raw
    index = bytearray()
    first = DATA_START + len(data)
    vector = bytearray(VECTOR_LENGTH)
    shift = 16 if family == 4 else 112
    size = ENTRY_SIZE[family]
    for s0, e0, region in full:
        ptr, n = pool[region]
        for s, e in _split(s0, e0, shift):
            pos = first + len(index)
            if family == 4:
                index += struct.pack("<IIHI", s, e, n, ptr)
            else:
                index += s.to_bytes(16, "big") + e.to_bytes(16, "big") + struct.pack("<HI", n, ptr)
            cell = (s >> shift) * 8
            if struct.unpack_from("<I", vector, cell)[0] == 0:
                struct.pack_into("<I", vector, cell, pos)
            struct.pack_into("<I", vector, cell + 4, pos + size)
    last = first + len(index) - size
    header = bytearray(HEADER_LENGTH)
    created = int(time.time()) if created_at is None else created_at
    struct.pack_into("<HHIII", header, 0, version, 1, created, first, last)
    if version == 3:
        struct.pack_into("<HH", header, 16, family, 4)
    return bytes(header + vector + data + index)


def write_xdb(path: Path | str, segments: Sequence[Segment], **options: object) -> Path:
    """Write :func:`xdb_bytes` to ``path`` (beside it, then renamed into place)."""
    return _replace_atomically(Path(path), xdb_bytes(segments, **options))  # type: ignore[arg-type]


def segments_from_networks(entries: Iterable[tuple[str, str]]) -> list[Segment]:
    """(CIDR, region) pairs → sorted segments."""
    out = []
    for cidr, region in entries:
        net = ip_network(cidr)
        out.append((int(net.network_address), int(net.broadcast_address), region))
    return sorted(out)


# ------------------------------------------------------------------------------------------------------------
# ipdb
# ------------------------------------------------------------------------------------------------------------

# A trie child: ("n", node index), ("r", record offset) or None (no data).
_Child = tuple[str, int] | None

IPDB_FREE_FIELDS = ("country_name", "region_name", "city_name")
IPDB_PAID_FIELDS = (
    "country_name", "region_name", "city_name", "owner_domain", "isp_domain", "latitude", "longitude",
    "timezone", "utc_offset", "china_admin_code", "idd_code", "country_code", "continent_code",
)  # fmt: skip


def ipdb_bytes(
    entries: Iterable[tuple[str, Sequence[str]]],
    *,
    fields: Sequence[str] = IPDB_FREE_FIELDS,
    languages: Sequence[str] = ("CN",),
    ip_version: int = 1,
    build: int | None = None,
) -> bytes:
    """An ipdb file with one record per CIDR (IPv4 CIDRs go under ::ffff:0:0/96). Each record is
    ``len(fields) * len(languages)`` values, language by language; later entries win where they overlap."""
    width = len(fields) * len(languages)
    # The trie as lists of two children: a child is ("n", index), ("r", record key) or None.
    left: list[_Child] = [None]
    right: list[_Child] = [None]

    def insert(bits: int, nbits: int, value: _Child, node: int = 0) -> int:
        """Put ``value`` at the ``nbits``-bit prefix ``bits`` below ``node``; return the prefix's parent."""
        for i in range(nbits - 1):
            bit = (bits >> (nbits - 1 - i)) & 1
            kids = right if bit else left
            child = kids[node]
            if child is None or child[0] != "n":
                new = len(left)
                left.append(child)  # a record above a longer prefix stays on both halves
                right.append(child)
                kids[node] = ("n", new)
                child = ("n", new)
            node = child[1]
        bit = bits & 1
        kids = right if bit else left
        existing = kids[node]
        if isinstance(existing, tuple) and existing[0] == "n":
            # replace every leaf under it
            stack = [existing[1]]
            while stack:
                n = stack.pop()
                for side in (left, right):
                    c = side[n]
                    if isinstance(c, tuple) and c[0] == "n":
                        stack.append(c[1])
                    else:
                        side[n] = value
        else:
            kids[node] = value
        return node

    v4_prefix = 0xFFFF  # ::ffff:0:0/96 as the top 96 bits
    v4_root = 0
    if ip_version & 1:
        # The chain to the IPv4 root must exist even where no IPv4 data is (the official reader walks it).
        insert(v4_prefix << 1, 97, None)
        v4_root = 0
        for i in range(96):
            child = (right if i >= 80 else left)[v4_root]
            assert isinstance(child, tuple)
            v4_root = child[1]
    records: dict[str, int] = {}
    data = bytearray()
    for cidr, values in entries:
        if len(values) != width:
            raise ValueError(f"{cidr}: {len(values)} values, {width} expected")
        text = "\t".join(values)
        if text not in records:
            raw = text.encode("utf-8")
            records[text] = len(data)
            data += len(raw).to_bytes(2, "big") + raw
        net = ip_network(cidr)
        if isinstance(net, IPv4Network):
            if net.prefixlen == 0:
                raise ValueError("0.0.0.0/0 would replace the IPv4 root; give two /1 networks")
            insert(
                int(net.network_address) >> (32 - net.prefixlen), net.prefixlen, ("r", records[text]), v4_root
            )
        else:
            assert isinstance(net, IPv6Network)
            insert(int(net.network_address) >> (128 - net.prefixlen), net.prefixlen, ("r", records[text]))
    node_count = len(left)
    # 8 bytes at the start of the record area read as a node (node_count, node_count): the official reader
    # steps into "node" node_count when a branch is empty and must stay on "no data" from there.
    sentinel = node_count.to_bytes(4, "big") * 2

    def enc(child: _Child) -> bytes:
        if child is None:
            return node_count.to_bytes(4, "big")
        kind, v = child
        if kind == "n":
            return v.to_bytes(4, "big")
        return (node_count + len(sentinel) + v).to_bytes(4, "big")

    tree = b"".join(enc(left[i]) + enc(right[i]) for i in range(node_count))
    body = tree + sentinel + bytes(data)
    meta = {
        "build": int(time.time()) if build is None else build,
        "ip_version": ip_version,
        "languages": {lang: i * len(fields) for i, lang in enumerate(languages)},
        "node_count": node_count,
        "total_size": len(body),
        "fields": list(fields),
    }
    meta_raw = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    return len(meta_raw).to_bytes(4, "big") + meta_raw + body


def write_ipdb(path: Path | str, entries: Iterable[tuple[str, Sequence[str]]], **options: object) -> Path:
    return _replace_atomically(Path(path), ipdb_bytes(entries, **options))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------
# Converting a database: the same content in another format (benchmarks, demos)
# ------------------------------------------------------------------------------------------------------------


def _region_names(label: Label) -> tuple[str, str, str]:
    """(country as the Chinese databases write it, province, alpha-2) for a label."""
    t = label.territory
    if t.code.startswith("CN-"):
        d = find_division(t.code)
        assert d is not None
        return "中国", (d.zh_variants[0] if d.zh_variants else d.name_zh), "CN"
    if t.scope == "special_region":
        d = find_division(f"CN-{t.code}")
        assert d is not None
        return "中国", d.zh_variants[-1] if t.code != "TW" else "台湾省", "CN"
    if t.code == "CN":
        return "中国", "0", "CN"
    return COUNTRIES.get(t.code, (t.name_zh, t.name_en))[0], "0", t.code


def region_string(label: Label, layout: str = "new") -> str:
    """An ip2region region string that labels as ``label`` (the inverse of regions.xdb_label)."""
    if label.reason is not None:
        return "0|0|0|内网IP|内网IP" if label.reason == "private" else "0|0|0|0|0"
    country, province, cc = _region_names(label)
    if layout == "old":
        return f"{country}|0|{province}|0|0"
    return f"{country}|{province}|0|0|{cc}"


def ipdb_values(label: Label) -> list[str]:
    """IPIP.net free-layout values (country, region, city) that label as ``label``."""
    country, province, _cc = _region_names(label)
    return [country, "" if province == "0" else province, ""]


def _networks(start: int, end: int, bits: int) -> Iterable[tuple[int, int]]:
    """[start, end] as aligned (network, prefix length) blocks."""
    while start <= end:
        size_bits = (end - start + 1).bit_length() - 1
        align = (start & -start).bit_length() - 1 if start else bits
        k = min(size_bits, align)
        yield start, bits - k
        start += 1 << k


@click.group()
def main() -> None:
    """Write ip2region xdb / IPIP.net ipdb files with the content of another database (SYNTHETIC unless
    the source is real)."""


@main.command("xdb")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from-db", "source", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--family", type=click.Choice(["4", "6"]), default="4", show_default=True)
@click.option("--layout", type=click.Choice(["new", "old"]), default="new", show_default=True)
def xdb_command(path: Path, source: Path, family: str, layout: str) -> None:
    """Write PATH, an xdb (v3, or v2 with --layout old) with the ranges of --from-db's database."""
    from streams.pipeline.geodb import open_database

    t0 = time.perf_counter()
    src = open_database(source)
    fam: Literal[4, 6] = 4 if family == "4" else 6
    segments = [(s, e, region_string(label, layout)) for s, e, label in src.ranges(fam)]
    write_xdb(path, segments, family=fam, version=2 if layout == "old" and fam == 4 else 3)
    click.echo(f"wrote {path}: {len(segments):,} ranges in {time.perf_counter() - t0:.1f}s")


@main.command("ipdb")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from-db", "source", required=True, type=click.Path(exists=True, path_type=Path))
def ipdb_command(path: Path, source: Path) -> None:
    """Write PATH, an ipdb (free layout, CN, IPv4 and IPv6) with the ranges of --from-db's database."""
    from streams.pipeline.geodb import open_database

    t0 = time.perf_counter()
    src = open_database(source)
    entries: list[tuple[str, Sequence[str]]] = []
    for fam, bits, cls in ((4, 32, IPv4Network), (6, 128, IPv6Network)):
        for s, e, label in src.ranges(fam):  # type: ignore[arg-type]
            values = ipdb_values(label)
            entries += [(str(cls((net, plen))), values) for net, plen in _networks(s, e, bits)]
    write_ipdb(path, entries, ip_version=3)
    click.echo(f"wrote {path}: {len(entries):,} networks in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
