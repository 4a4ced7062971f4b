"""``shudi label``: label addresses offline with a GeoIP database (the user's own tool, so it prints IPs)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from streams.cli.errors import EXIT_FAILED, CommandError
from streams.pipeline.geoip import DatabaseError, Labeller, MmdbDatabase
from streams.pipeline.territory import InvalidIP, Label


def _inputs(ips: tuple[str, ...]) -> Iterator[str]:
    if ips:
        yield from ips
        return
    stream = click.get_text_stream("stdin", encoding="utf-8", errors="replace")
    for line in stream:
        yield line.rstrip("\r\n")


def _as_dict(ip: str, label: Label) -> dict[str, Any]:
    t = label.territory
    out: dict[str, Any] = {
        "ip": ip,
        "code": t.code,
        "name_zh": t.name_zh,
        "name_en": t.name_en,
        "scope": t.scope,
        "country_code": t.country_code,
    }
    if label.reason is not None:
        out["reason"] = label.reason
    return out


def _lines(labeller: Labeller, ips: Iterable[str], as_json: bool) -> Iterator[tuple[str, bool]]:
    for ip in ips:
        try:
            label = labeller.label(ip)
        except InvalidIP as e:
            if as_json:
                yield json.dumps({"ip": ip, "error": str(e)}, ensure_ascii=False), False
            else:
                yield f"{ip}  error: {e}", False
            continue
        if as_json:
            yield json.dumps(_as_dict(ip, label), ensure_ascii=False), True
        else:
            t = label.territory
            extra = f"  ({label.reason})" if label.reason else ""
            yield f"{ip}  {t.code}  {t.name_zh}  {t.name_en}  {t.scope}{extra}", True


@click.command("label")
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="GeoIP2/GeoLite2-City .mmdb file.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input line.")
@click.argument("ips", nargs=-1)
def label(db_path: Path, as_json: bool, ips: tuple[str, ...]) -> None:
    """Print the IP territory (IP属地) of each IP (or of each line of stdin when none is given).

    Addresses must be exact: no surrounding spaces, no prefix length, no shorthand such as 127.1.
    Exit status: 0, 1 if any input was not an address, 2 if the database cannot be used.
    """
    try:
        db = MmdbDatabase.open(db_path)
    except DatabaseError as e:
        raise CommandError(str(e)) from None
    labeller = Labeller(db, cache_size=65_536)
    out = click.get_text_stream("stdout", encoding="utf-8")
    all_ok = True
    try:
        for line, ok in _lines(labeller, _inputs(ips), as_json):
            out.write(line + "\n")
            all_ok &= ok
        out.flush()
    finally:
        db.close()
    if not all_ok:
        sys.exit(EXIT_FAILED)
