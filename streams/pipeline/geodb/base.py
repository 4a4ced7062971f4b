"""What every database format adapter provides to the territory table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from streams.pipeline.geoip import DatabaseError, RecordError
from streams.pipeline.territory import Label

__all__ = [
    "DatabaseError",
    "Family",
    "IPAddress",
    "Kind",
    "Range",
    "RecordError",
    "Source",
    "build_string",
    "read_file",
]

Family = Literal[4, 6]
Kind = Literal["mmdb", "xdb", "ipdb"]
IPAddress = IPv4Address | IPv6Address

# A range of addresses [start, end] (integers of one family) with the label the database gives it.
Range = tuple[int, int, Label]


@runtime_checkable
class Source(Protocol):
    """An open, validated, read-only database of any format."""

    path: Path
    kind: Kind
    build: str  # what it is and when it was built: "GeoLite2-City 2026-11-20T12:00:00Z"
    build_epoch: int
    families: tuple[Family, ...]  # the address families it has data for

    def ranges(self, family: Family) -> Iterator[Range]:
        """Every range of ``family`` the database has a row for, sorted by start, not overlapping (gaps are
        addresses it does not know). Labels are those of :meth:`answer`. Raises DatabaseError if the data
        turns out corrupt."""
        ...

    def answer(self, ip: IPAddress) -> tuple[Label, str | None]:
        """The label this database alone gives ``ip`` (``not_found`` when it has no row) and its raw answer
        as text (the region string, the record), for ``shudi label --explain``."""
        ...

    def close(self) -> None: ...


def build_string(what: str, epoch: int) -> str:
    return f"{what} {datetime.fromtimestamp(epoch, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def read_file(path: Path) -> bytes:
    """The whole file, or DatabaseError with a one-line reason."""
    try:
        if not path.is_file():
            raise DatabaseError(path, "no such file" if not path.exists() else "not a regular file")
        return path.read_bytes()
    except PermissionError:
        raise DatabaseError(path, "permission denied") from None
    except OSError as e:
        raise DatabaseError(path, f"cannot read ({e.strerror or type(e).__name__})") from None
