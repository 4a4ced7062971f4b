"""GeoIP databases, the cached labeller and hot reload.

``GeoDatabase`` is the small interface a database adapter implements (``MmdbDatabase`` for MaxMind DB files;
an ip2region ``xdb`` adapter would be another). ``Labeller`` turns address text into a ``Label`` through a
bounded LRU cache keyed on the raw text. ``DatabaseWatcher`` swaps in a new database file when it changes.

Logging here never includes an IP address.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Final, Literal, Protocol, runtime_checkable

import maxminddb

from streams.pipeline.territory import (
    UNKNOWN_LABELS,
    Label,
    Location,
    label_location,
    parse_ip,
    public_v4,
    special_reason,
    unwrap_tunnel,
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


# ------------------------------------------------------------------------------------------------------------
# The labeller
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabellerStats:
    """Counters since the Labeller was made (across database swaps). Misses include unparsable input."""

    hits: int
    misses: int
    cached: int  # entries in the current cache
    miss_seconds: float  # total time spent in cache misses


class Labeller:
    """Address text → Label, with a bounded LRU cache keyed on the exact text.

    ``labeller.label(ip_text) -> Label`` raises InvalidIP (a ValueError) for text that is not an address;
    such text is never cached. A record the database cannot read gives UNKNOWN with reason ``db_error``.
    ``label`` is the ``functools.lru_cache`` wrapper itself (an instance attribute, not a method: a cache hit
    costs one C call, no Python frame); ``swap`` replaces it, and the database, wholesale.

    Designed for one event-loop thread calling ``label`` while a watcher thread may ``swap``: a call in
    flight finishes on the database it started with.
    """

    label: functools._lru_cache_wrapper[Label]

    def __init__(
        self,
        db: GeoDatabase,
        cache_size: int = 262_144,
        *,
        on_miss: Callable[[float], None] | None = None,
    ) -> None:
        """``on_miss(seconds)`` is told how long each cache miss took (a database read, at most once per
        distinct address while it stays cached): the place for a latency histogram."""
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._cache_size = cache_size
        self._on_miss = on_miss
        self._retired_hits = 0
        self._retired_misses = 0
        self._miss_seconds = 0.0
        self._db = db
        self.label = self._make_cache(db)

    def _make_cache(self, db: GeoDatabase) -> functools._lru_cache_wrapper[Label]:
        locate = db.locate
        db_error = UNKNOWN_LABELS["db_error"]
        clock = time.perf_counter

        def label(ip_text: str) -> Label:
            """The label for ``ip_text``; raises InvalidIP (a ValueError) if it is not an address."""
            t0 = clock()
            try:
                try:
                    if public_v4(ip_text):  # most misses: no address object, the reader parses the text
                        return label_location(locate(ip_text))
                    ip = unwrap_tunnel(parse_ip(ip_text))
                    reason = special_reason(ip)
                    if reason is not None:
                        return UNKNOWN_LABELS[reason]
                    return label_location(locate(ip))
                except RecordError:
                    return db_error
            finally:
                elapsed = clock() - t0
                self._miss_seconds += elapsed
                if self._on_miss is not None:
                    self._on_miss(elapsed)

        return functools.lru_cache(maxsize=self._cache_size)(label)

    @property
    def db(self) -> GeoDatabase:
        return self._db

    def swap(self, db: GeoDatabase) -> GeoDatabase:
        """Use ``db`` from now on, with an empty cache; return the previous database (not closed).

        The previous database is not closed here: a lookup may still be running on it in another thread.
        Drop the reference and CPython frees (and unmaps) it when the last user is done.
        """
        old_cache = self.label
        new_cache = self._make_cache(db)
        old, self._db = self._db, db
        self.label = new_cache  # one attribute store: the cache carries its own database
        info = old_cache.cache_info()
        self._retired_hits += info.hits
        self._retired_misses += info.misses
        return old

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) since the Labeller was made, across swaps; cheap enough to call per batch."""
        info = self.label.cache_info()
        return self._retired_hits + info.hits, self._retired_misses + info.misses

    def stats(self) -> LabellerStats:
        info = self.label.cache_info()
        return LabellerStats(
            hits=self._retired_hits + info.hits,
            misses=self._retired_misses + info.misses,
            cached=info.currsize,
            miss_seconds=self._miss_seconds,
        )


# ------------------------------------------------------------------------------------------------------------
# Hot reload
# ------------------------------------------------------------------------------------------------------------

ReloadStatus = Literal["unchanged", "reloaded", "failed"]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one ``DatabaseWatcher.check`` did; ``build``/``build_epoch``: the database now in use."""

    status: ReloadStatus
    build: str
    build_epoch: int
    reason: str | None = None  # why it failed


_Signature = tuple[int, int, int] | None  # (mtime_ns, size, inode); None: the file is missing


def _signature(path: Path) -> _Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class DatabaseWatcher:
    """Reopen the labeller's database file when it changes on disk, keeping the old one if the new one fails.

    A change is any difference in (mtime_ns, size, inode). Each change is tried once: a corrupt or missing
    file reports ``failed`` (and logs one warning naming the path and reason) once, then ``unchanged`` until
    the file changes again. ``opener`` defaults to MmdbDatabase.open; it must raise DatabaseError on failure.
    """

    def __init__(
        self,
        labeller: Labeller,
        path: Path | str | None = None,
        *,
        opener: Callable[[Path], GeoDatabase] = MmdbDatabase.open,
        on_result: Callable[[ReloadResult], None] | None = None,
    ) -> None:
        self.labeller = labeller
        self.path = Path(path) if path is not None else labeller.db.path
        self._opener = opener
        self._on_result = on_result
        self._seen: _Signature = _signature(self.path)

    def check(self) -> ReloadResult:
        """Stat the file; if it changed, open, validate and swap it in. Blocking: call from a thread."""
        sig = _signature(self.path)
        db = self.labeller.db
        if sig == self._seen:
            return ReloadResult("unchanged", db.build, db.build_epoch)
        self._seen = sig
        if sig is None:
            return self._failed("file removed; keeping the loaded database")
        try:
            new = self._opener(self.path)
        except DatabaseError as e:
            return self._failed(e.reason)
        except Exception as e:  # noqa: BLE001 - a bug in an opener must not stop the watcher
            return self._failed(f"unexpected {type(e).__name__} while opening")
        self.labeller.swap(new)  # the old database is left to the garbage collector (see Labeller.swap)
        log.info("GeoIP database %s reloaded: %s (was %s)", self.path, new.build, db.build)
        return ReloadResult("reloaded", new.build, new.build_epoch)

    def _failed(self, reason: str) -> ReloadResult:
        db = self.labeller.db
        log.warning("GeoIP database %s not reloaded: %s; still using %s", self.path, reason, db.build)
        return ReloadResult("failed", db.build, db.build_epoch, reason)

    async def run(self, interval_s: float) -> None:
        """Check every ``interval_s`` seconds, off the event loop, until cancelled; report non-trivial results
        to ``on_result`` on the event loop."""
        while True:
            await asyncio.sleep(interval_s)
            result = await asyncio.to_thread(self.check)
            if result.status != "unchanged" and self._on_result is not None:
                self._on_result(result)
