"""MaxMind DB (GeoIP2/GeoLite2-City shaped) files: opening, validation and records reduced to a Location.

The other formats, the compiled territory table, the labeller and hot reload: ``streams.pipeline.geodb``.

Logging here never includes an IP address.
"""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import maxminddb

from streams.pipeline.territory import (
    Location,
    parse_ip,
)

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address


class DatabaseError(Exception):
    """A database file cannot be used: missing, unreadable, corrupt or of the wrong type."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"GeoIP database {self.path}: {reason}")


class RecordError(Exception):
    """Reading one record failed (the file is corrupt there). The labeller turns it into ``db_error``."""


@runtime_checkable
class GeoDatabase(Protocol):
    """An open, validated, read-only GeoIP database."""

    path: Path
    build: str  # database type and build time: "GeoLite2-City 2026-11-20T12:00:00Z"
    build_epoch: int  # build time, seconds since the epoch

    def locate(self, ip: IPAddress | str) -> Location | None:
        """The record for ``ip`` (None: no network); raises RecordError when the record cannot be read.

        ``ip`` is an address, or the text of one that :func:`territory.public_v4` accepted (the
        labeller's fast path: an adapter whose reader parses text itself skips building an address object).
        """
        ...

    def close(self) -> None: ...


def _names(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    names = obj.get("names")
    if type(names) is not dict:
        return None, None
    zh, en = names.get("zh-CN"), names.get("en")
    return (zh if isinstance(zh, str) else None), (en if isinstance(en, str) else None)


_INTERNED: dict[tuple[str | None, ...], Location] = {}
_INTERNED_MAX = 65_536


def location_from_record(record: object) -> Location | None:
    """Reduce a GeoIP2-City-shaped record to a Location.

    Only ``country`` is read, not ``registered_country`` (where the network's owner registered it, often not
    where the user is: anycast, satellite, multinational ISPs); a record without ``country`` labels as
    ``no_country``. The first (largest) subdivision is the province.
    """
    # maxminddb returns plain dicts and lists; exact type checks are cheaper than ABC checks
    if type(record) is not dict:
        return Location(None)
    country = record.get("country")
    if type(country) is not dict:
        return Location(None)
    cc = country.get("iso_code")
    czh, cen = _names(country)
    scode = szh = sen = None
    subs = record.get("subdivisions")
    if type(subs) is list and subs and type(subs[0]) is dict:
        code = subs[0].get("iso_code")
        scode = code if isinstance(code, str) else None
        szh, sen = _names(subs[0])
    key = (cc if isinstance(cc, str) else None, czh, cen, scode, szh, sen)
    loc = _INTERNED.get(key)
    if loc is None:  # a database has few distinct records; share one Location (and its memoised label) each
        loc = Location(*key)
        if len(_INTERNED) < _INTERNED_MAX:
            _INTERNED[key] = loc
    return loc


def _build_string(database_type: str, epoch: int) -> str:
    return f"{database_type} {datetime.fromtimestamp(epoch, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


# Addresses looked up when a database is opened, to find a broken tree or data section early.
_PROBES: Final = tuple(
    parse_ip(a) for a in ("1.1.1.1", "8.8.8.8", "114.114.114.114", "223.5.5.5", "81.2.69.142", "2400:3200::1")
)
_PROBE_NETWORKS = 256  # also read the first records in tree order


class MmdbDatabase:
    """A MaxMind DB (GeoIP2/GeoLite2-City shaped) file, read with maxminddb's C extension (MODE_AUTO).

    The file is memory-mapped: replace it by rename (as geoipupdate does), never rewrite it in place.
    """

    __slots__ = ("_ip_version", "_reader", "build", "build_epoch", "database_type", "path")

    def __init__(self, path: Path, reader: maxminddb.Reader) -> None:
        meta = reader.metadata()
        self.path = path
        self._reader = reader
        self._ip_version: int = meta.ip_version
        self.database_type: str = meta.database_type
        self.build_epoch: int = int(meta.build_epoch)
        self.build = _build_string(self.database_type, self.build_epoch)

    @classmethod
    def open(cls, path: Path | str) -> MmdbDatabase:
        """Open and validate ``path``; raise DatabaseError with a one-line reason if it cannot be used."""
        path = Path(path)
        try:
            if not path.is_file():
                raise DatabaseError(path, "no such file" if not path.exists() else "not a regular file")
            reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
        except DatabaseError:
            raise
        except PermissionError:
            raise DatabaseError(path, "permission denied") from None
        except (maxminddb.InvalidDatabaseError, ValueError):
            raise DatabaseError(path, "not a valid MaxMind DB file") from None
        except OSError as e:
            raise DatabaseError(path, f"cannot read ({e.strerror or type(e).__name__})") from None
        try:
            db = cls(path, reader)
            if "city" not in db.database_type.lower():
                raise DatabaseError(path, f"database type {db.database_type!r} is not a City database")
            for ip in _PROBES:
                db.locate(ip)
            for _network, record in itertools.islice(iter(reader), _PROBE_NETWORKS):
                location_from_record(record)
        except DatabaseError:
            reader.close()
            raise
        except (RecordError, maxminddb.InvalidDatabaseError, ValueError, TypeError) as e:
            reader.close()
            raise DatabaseError(path, f"corrupt ({_first_line(e)})") from None
        return db

    def locate(self, ip: IPAddress | str) -> Location | None:
        if self._ip_version == 4 and not isinstance(ip, str) and ip.version == 6:
            return None
        try:
            record = self._reader.get(ip)
        except maxminddb.InvalidDatabaseError as e:
            raise RecordError(_first_line(e)) from None
        return None if record is None else location_from_record(record)

    def close(self) -> None:
        self._reader.close()

    def __repr__(self) -> str:
        return f"MmdbDatabase({str(self.path)!r}, build={self.build!r})"


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    # maxminddb names the looked-up address in some messages; keep IPs out of logs and errors
    return text.split(" for ", 1)[0] if "looking up data for" in text else text
