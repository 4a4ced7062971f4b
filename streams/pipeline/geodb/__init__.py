"""GeoIP databases of every format (MaxMind mmdb, ip2region xdb, IPIP.net ipdb), compiled into one territory
table. :func:`open_database` opens one file whatever its format; see ``table`` for the compiled table."""

from __future__ import annotations

from pathlib import Path

from streams.pipeline.geodb.base import DatabaseError, Source
from streams.pipeline.geodb.ipdb import IpdbDatabase, looks_like_ipdb
from streams.pipeline.geodb.mmdb import MmdbSource, looks_like_mmdb
from streams.pipeline.geodb.xdb import XdbDatabase, looks_like_xdb

__all__ = ["DatabaseError", "Source", "open_database", "open_databases", "parse_paths"]

_SUFFIXES = {".mmdb": "mmdb", ".xdb": "xdb", ".ipdb": "ipdb"}


def _sniff(path: Path) -> str | None:
    """The format by content: the file name may lie (a symlink named ``current``), the bytes do not."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 128 * 1024))
            tail = f.read()
    except OSError:
        return None
    if looks_like_mmdb(tail):
        return "mmdb"
    if looks_like_ipdb(head):
        return "ipdb"
    if looks_like_xdb(head):
        return "xdb"
    return None


def open_database(path: Path | str) -> Source:
    """Open and validate one database file of any supported format; DatabaseError with a one-line reason if
    it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise DatabaseError(path, "no such file" if not path.exists() else "not a regular file")
    kind = _sniff(path) or _SUFFIXES.get(path.suffix.lower())
    if kind == "mmdb":
        return MmdbSource.open(path)
    if kind == "ipdb":
        return IpdbDatabase.open(path)
    if kind == "xdb":
        return XdbDatabase.open(path)
    raise DatabaseError(path, "not a MaxMind DB, ip2region xdb or IPIP.net ipdb file")


def open_databases(paths: list[Path]) -> list[Source]:
    """Open every file, first to last; close the ones opened if a later one fails."""
    opened: list[Source] = []
    try:
        for p in paths:
            opened.append(open_database(p))
    except BaseException:
        for s in opened:
            s.close()
        raise
    return opened


def parse_paths(value: str | Path | list[Path]) -> list[Path]:
    """``a.xdb,b.mmdb`` → [a.xdb, b.mmdb] (the order is the order of precedence)."""
    if isinstance(value, list):
        return value
    paths = [Path(p.strip()) for p in str(value).split(",") if p.strip()]
    if not paths:
        raise ValueError("no database file given")
    return paths
