"""The compiled territory table on disk, so a restart with unchanged database files skips the compile.

Keyed by the content of every file in order (SHA-256: a file's build is part of its content) and by
:data:`FORMAT`, which changes whenever the compile could give a different table. Written beside, then renamed
into place; read with msgspec (no code runs on load). A cache that cannot be read is ignored and rewritten:
it can make a start faster, never wrong.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from streams.pipeline.geodb.table import SourceInfo, TerritoryTable
from streams.pipeline.territory import Label, Territory

log = logging.getLogger(__name__)

FORMAT: Final = 1
_KEEP: Final = 3  # cached tables kept per directory (the newest), for a few database versions back


def cache_key(paths: Sequence[Path]) -> str:
    """A digest of every file's content, in order. Reads the files (a tenth of a second per 50 MB)."""
    h = hashlib.sha256(f"shudi territory table {FORMAT} {sys.byteorder}".encode())
    for p in paths:
        fh = hashlib.sha256()
        with p.open("rb") as f:
            while chunk := f.read(1 << 20):
                fh.update(chunk)
        h.update(fh.digest())
    return h.hexdigest()[:32]


def _arr(code: str, raw: bytes) -> array[int]:
    a = array(code)
    a.frombytes(raw)
    return a


def save(table: TerritoryTable, directory: Path, key: str) -> None:
    """Write ``table`` under ``key``; failures are logged, never raised (the cache is an optimisation)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "format": FORMAT,
            "labels": [[*msgspec.structs.astuple(lb.territory), lb.reason] for lb in table.labels],
            "v4": [table._v4_starts.tobytes(), table._v4_ids.tobytes(), table._v4_block.tobytes()],
            "v6": [table._v6_starts.tobytes(), table._v6_ids.tobytes()],
            "inner": [[hi, s.tobytes(), i.tobytes()] for hi, (s, i) in table._v6_inner.items()],
            "sources": [list(_info(s)) for s in table.sources],
            "compile_seconds": table.compile_seconds,
        }
        path = directory / f"{key}.table"
        tmp = directory / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(msgspec.msgpack.encode(doc))
        tmp.replace(path)
        old = sorted(directory.glob("*.table"), key=lambda p: p.stat().st_mtime, reverse=True)[_KEEP:]
        for p in old:
            p.unlink(missing_ok=True)
    except OSError as e:
        log.warning("territory table not cached in %s: %s", directory, e.strerror or type(e).__name__)


def _info(s: SourceInfo) -> tuple[str, str, str, int, int]:
    return (s.path, s.kind, s.build, s.build_epoch, s.ranges)


def load(directory: Path, key: str) -> TerritoryTable | None:
    """The table cached under ``key``, or None (none there, or unreadable: then it is compiled anew)."""
    path = directory / f"{key}.table"
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        doc = msgspec.msgpack.decode(raw)
        if doc["format"] != FORMAT:
            return None
        labels = [Label(Territory(*row[:5]), row[5]) for row in doc["labels"]]
        v4s, v4i, v4b = doc["v4"]
        v6s, v6i = doc["v6"]
        inner = {int(hi): (_arr("Q", s), _arr("H", i)) for hi, s, i in doc["inner"]}
        sources = tuple(SourceInfo(*row) for row in doc["sources"])
        table = TerritoryTable(
            labels,
            (_arr("I", v4s), _arr("H", v4i)),
            (_arr("Q", v6s), _arr("H", v6i)),
            inner,
            sources,
            float(doc["compile_seconds"]),
            v4_block=_arr("I", v4b),
            from_cache=True,
        )
        table.check()
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, IndexError) as e:
        log.warning("cached territory table %s unreadable (%s); compiling", path, type(e).__name__)
        return None
    return table
