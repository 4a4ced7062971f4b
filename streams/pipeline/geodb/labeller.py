"""The labeller (address text → Label through the territory table) and hot reload of its database files.

``Labeller.label`` is an LRU cache in front of the compiled table: a table lookup costs about a microsecond
whatever the database, a cache hit a fifth of that, and most traffic repeats addresses. ``DatabaseWatcher``
watches every configured file; a replaced file is opened and checked in a thread, the table recompiled with
it (the other files keep their open databases) and swapped in. A file that fails keeps its old database, and
the table in use stays what it was.

Logging here never includes an IP address.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from streams.pipeline.geodb import cache, open_database
from streams.pipeline.geodb.base import DatabaseError, Source
from streams.pipeline.geodb.table import TerritoryTable, compile_table
from streams.pipeline.territory import Label

log = logging.getLogger(__name__)

_BUILD_MAX: Final = 128  # the enriched event's db_build field (schemas/enriched_comment.schema.json)
MISS_SAMPLE: Final = 16  # one cache miss in this many is timed (``on_miss``, the lookup histogram)


def build_of(table: TerritoryTable) -> str:
    """One string naming every database's build, first to last, for the enriched events' ``db_build``."""
    text = " + ".join(s.build for s in table.sources) or "none"
    return text if len(text) <= _BUILD_MAX else text[: _BUILD_MAX - 1] + "…"


@dataclass(frozen=True, slots=True)
class LabellerStats:
    """Counters since the Labeller was made (across table swaps). Misses include unparsable input."""

    hits: int
    misses: int
    cached: int  # entries in the current cache
    timed_misses: int  # the misses that were timed: one in MISS_SAMPLE (the first of each cache among them)
    timed_miss_seconds: float  # their total time (table lookups)


class Labeller:
    """Address text → Label: the compiled table behind a bounded LRU cache keyed on the exact text.

    ``labeller.label(ip_text) -> Label`` raises InvalidIP (a ValueError) for text that is not an address;
    such text is never cached. ``label`` is the ``functools.lru_cache`` wrapper itself (an instance attribute,
    not a method: a cache hit costs one C call, no Python frame); ``swap`` replaces it, and the table,
    wholesale. One event-loop thread may call ``label`` while a watcher thread swaps.
    """

    label: functools._lru_cache_wrapper[Label]
    current: tuple[functools._lru_cache_wrapper[Label], str]  # (label, build), swapped together

    def __init__(
        self,
        table: TerritoryTable,
        cache_size: int = 262_144,
        *,
        on_miss: Callable[[float], None] | None = None,
    ) -> None:
        """``on_miss(seconds)`` is told how long a cache miss took, for one miss in :data:`MISS_SAMPLE`: the
        place for a latency histogram."""
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._cache_size = cache_size
        self._on_miss = on_miss
        self._retired_hits = 0
        self._retired_misses = 0
        self._timed: list[float] = [0, 0.0]  # misses timed, their total seconds (across swaps)
        self._table = table
        self.build = build_of(table)
        self.label = self._make_cache(table)
        self.current = (self.label, self.build)

    @classmethod
    def open(
        cls, paths: Path | str | Sequence[Path], cache_size: int = 262_144, **options: Callable[[float], None]
    ) -> Labeller:
        """A labeller over the database file(s) at ``paths`` (one path or an ordered list), compiled now."""
        return cls(compile_files(paths), cache_size, **options)

    def _make_cache(self, table: TerritoryTable) -> functools._lru_cache_wrapper[Label]:
        lookup = table.labeller()
        clock = time.perf_counter
        on_miss = self._on_miss
        timed = self._timed
        countdown = 1  # the first miss of every cache is timed

        def label(ip_text: str) -> Label:
            """The label for ``ip_text``; raises InvalidIP (a ValueError) if it is not an address."""
            # One miss in MISS_SAMPLE is timed: two clock reads and the histogram cost as much as the
            # table lookup itself (a miss went from 3.5 to 2.6 µs in bench.labeller, side by side).
            nonlocal countdown
            countdown -= 1
            if countdown:
                return lookup(ip_text)
            countdown = MISS_SAMPLE
            t0 = clock()
            try:
                return lookup(ip_text)
            finally:
                elapsed = clock() - t0
                timed[0] += 1
                timed[1] += elapsed
                if on_miss is not None:
                    on_miss(elapsed)

        return functools.lru_cache(maxsize=self._cache_size)(label)

    @property
    def table(self) -> TerritoryTable:
        return self._table

    def swap(self, table: TerritoryTable) -> TerritoryTable:
        """Use ``table`` from now on, with an empty cache; return the previous table."""
        old_cache = self.label
        new_cache = self._make_cache(table)
        old, self._table = self._table, table
        self.build = build_of(table)
        self.label = new_cache  # one attribute store: the cache carries its own table
        # The label function and its build in one attribute store too: read apart, a swap from the
        # watcher's thread between the two reads stamped records labelled by one table with the other's
        # build.
        self.current = (new_cache, self.build)
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
            timed_misses=int(self._timed[0]),
            timed_miss_seconds=self._timed[1],
        )


def compile_cached(sources: Sequence[Source], cache_dir: Path | None) -> TerritoryTable:
    """The table of ``sources``: from ``cache_dir`` when the files are unchanged since it was written, else
    compiled (and written there). Blocking; run it in a thread."""
    if cache_dir is None:
        return compile_table(sources)
    try:
        key = cache.cache_key([s.path for s in sources])
    except OSError:  # a file replaced since it was opened: compile what is open, cache nothing
        return compile_table(sources)
    table = cache.load(cache_dir, key)
    if table is None:
        table = compile_table(sources)
        cache.save(table, cache_dir, key)
    return table


def load(
    paths: Sequence[Path],
    cache_dir: Path | None = None,
    *,
    opener: Callable[[Path], Source] = open_database,
) -> tuple[list[Source], TerritoryTable]:
    """Open every file and compile the table (blocking: seconds on a real database; run it in a thread), or
    read it from ``cache_dir``. Raises DatabaseError naming the first file that cannot be used. ``opener``
    as for :class:`DatabaseWatcher`."""
    sources: list[Source] = []
    try:
        for p in paths:
            sources.append(opener(p))
        table = compile_cached(sources, cache_dir)
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources, table


def compile_files(paths: Path | str | Sequence[Path]) -> TerritoryTable:
    """The table of one database file or an ordered list, the files closed again (offline tools, tests)."""
    sources, table = load([Path(paths)] if isinstance(paths, str | Path) else list(paths))
    for s in sources:
        s.close()
    return table


# ------------------------------------------------------------------------------------------------------------
# Hot reload
# ------------------------------------------------------------------------------------------------------------

ReloadStatus = Literal["unchanged", "reloaded", "failed"]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one check did for one file; ``build``/``build_epoch``: that file's database now in use."""

    status: ReloadStatus
    db: str  # the file's name, the metrics label (bounded by the configured list)
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


def db_names(paths: Sequence[Path]) -> list[str]:
    """A short, unique name per configured file (its file name, prefixed by its position if two clash)."""
    names = [p.name for p in paths]
    return [f"{i}:{n}" if names.count(n) > 1 else n for i, n in enumerate(names)]


class DatabaseWatcher:
    """Reopen each database file when it changes on disk and recompile the table; keep the old database of a
    file that fails, and the old table if nothing could be applied.

    A change is any difference in (mtime_ns, size, inode). Each change is tried once: a corrupt or missing
    file reports ``failed`` (and logs one warning naming the path and reason) once, then nothing until the
    file changes again. ``opener`` defaults to :func:`open_database`; it must raise DatabaseError on failure.
    """

    def __init__(
        self,
        labeller: Labeller,
        sources: Sequence[Source],
        *,
        opener: Callable[[Path], Source] = open_database,
        on_result: Callable[[ReloadResult], None] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.labeller = labeller
        self._cache_dir = cache_dir
        self.sources = list(sources)
        self.paths = [s.path for s in sources]
        self.names = db_names(self.paths)
        self._opener = opener
        self._on_result = on_result
        self._seen: list[_Signature] = [_signature(p) for p in self.paths]

    def check(self) -> list[ReloadResult]:
        """Stat every file; reopen the changed ones, recompile, swap. Blocking: call from a thread.
        Returns one result per changed file (empty when nothing changed)."""
        results: dict[int, ReloadResult] = {}
        replaced: dict[int, Source] = {}
        for i, path in enumerate(self.paths):
            sig = _signature(path)
            if sig == self._seen[i]:
                continue
            self._seen[i] = sig
            if sig is None:
                results[i] = self._failed(i, "file removed; keeping the loaded database")
                continue
            try:
                replaced[i] = self._opener(path)
            except DatabaseError as e:
                results[i] = self._failed(i, e.reason)
            except Exception as e:  # noqa: BLE001 - a bug in an opener must not stop the watcher
                results[i] = self._failed(i, f"unexpected {type(e).__name__} while opening")
        if replaced:
            candidate = [replaced.get(i, s) for i, s in enumerate(self.sources)]
            try:
                table = compile_cached(candidate, self._cache_dir)
            except DatabaseError as e:
                for i, new in replaced.items():
                    new.close()
                    results[i] = self._failed(
                        i, e.reason if e.path == new.path else f"table not rebuilt: {e}"
                    )
            else:
                old_build = self.labeller.build
                self.labeller.swap(table)
                for i, new in replaced.items():
                    self.sources[i].close()
                    self.sources[i] = new
                    results[i] = ReloadResult("reloaded", self.names[i], new.build, new.build_epoch)
                log.info(
                    "GeoIP table rebuilt in %.1fs: %s (was %s)",
                    table.compile_seconds,
                    self.labeller.build,
                    old_build,
                )
        return [results[i] for i in sorted(results)]

    def _failed(self, i: int, reason: str) -> ReloadResult:
        src = self.sources[i]
        log.warning("GeoIP database %s not reloaded: %s; still using %s", self.paths[i], reason, src.build)
        return ReloadResult("failed", self.names[i], src.build, src.build_epoch, reason)

    async def run(self, interval_s: float) -> None:
        """Check every ``interval_s`` seconds, off the event loop, until cancelled; report the results to
        ``on_result`` on the event loop."""
        while True:
            await asyncio.sleep(interval_s)
            results = await asyncio.to_thread(self.check)
            if self._on_result is not None:
                for result in results:
                    self._on_result(result)
