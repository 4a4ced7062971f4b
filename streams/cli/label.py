"""``shudi label``: label addresses offline with a GeoIP database (the user's own tool, so it prints IPs)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click

from streams.cli.errors import EXIT_FAILED, CommandError
from streams.pipeline.geodb import parse_paths
from streams.pipeline.geodb.base import DatabaseError, Source
from streams.pipeline.geodb.labeller import Labeller, db_names, load
from streams.pipeline.geodb.table import direct_label
from streams.pipeline.territory import InvalidIP, Label, parse_ip, special_reason, unwrap_tunnel


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


def _explain(
    sources: list[Source], names: list[str], ip: str, label: Label
) -> tuple[str | None, list[dict[str, Any]]]:
    """Which database gave ``label`` (None: a special range, or none knew the address) and what each said."""
    addr = parse_ip(ip)
    _direct, answers = direct_label(sources, addr)
    answered = None
    if special_reason(unwrap_tunnel(addr)) is None:
        answered = next((n for n, (a, _raw) in zip(names, answers, strict=True) if a == label), None)
    said = []
    for name, src, (a, raw) in zip(names, sources, answers, strict=True):
        said.append(
            {"db": name, "kind": src.kind, "build": src.build, "answer": raw, "code": a.territory.code}
            | {"reason": a.reason}
        )
    return answered, said


def _lines(
    labeller: Labeller, ips: Iterable[str], as_json: bool, explain: tuple[list[Source], list[str]] | None
) -> Iterator[tuple[str, bool]]:
    for ip in ips:
        try:
            label = labeller.label(ip)
        except InvalidIP as e:
            if as_json:
                yield json.dumps({"ip": ip, "error": str(e)}, ensure_ascii=False), False
            else:
                yield f"{ip}  error: {e}", False
            continue
        why = None if explain is None else _explain(*explain, ip, label)
        if as_json:
            out = _as_dict(ip, label)
            if why is not None:
                out["answered_by"], out["databases"] = why
            yield json.dumps(out, ensure_ascii=False), True
        else:
            t = label.territory
            extra = f"  ({label.reason})" if label.reason else ""
            yield f"{ip}  {t.code}  {t.name_zh}  {t.name_en}  {t.scope}{extra}", True
            if why is not None:
                answered, said = why
                if answered is None and label.reason not in (None, "not_found", "no_country"):
                    yield "  answered by: the special-purpose ranges (before any database)", True
                for d in said:
                    mark = "  <- answered" if d["db"] == answered else ""
                    raw = d["answer"] if d["answer"] is not None else "(nothing)"
                    code = d["code"] + (f" ({d['reason']})" if d["reason"] else "")
                    yield f"  {d['db']} [{d['kind']}, {d['build']}]: {raw} -> {code}{mark}", True


@click.command("label")
@click.option(
    "--db",
    "db_paths",
    required=True,
    help="Database files, comma separated, first answers first: .mmdb (GeoIP2/GeoLite2-City), ip2region "
    ".xdb, IPIP.net .ipdb.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input line.")
@click.option("--explain", is_flag=True, help="Also show what each database said and which one answered.")
@click.argument("ips", nargs=-1)
def label(db_paths: str, as_json: bool, explain: bool, ips: tuple[str, ...]) -> None:
    """Print the IP territory (IP属地) of each IP (or of each line of stdin when none is given).

    Addresses must be exact: no surrounding spaces, no prefix length, no shorthand such as 127.1.
    Exit status: 0, 1 if any input was not an address, 2 if the database cannot be used.
    """
    try:
        paths = parse_paths(db_paths)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--db") from None
    try:
        sources, table = load(paths)
    except DatabaseError as e:
        raise CommandError(str(e)) from None
    labeller = Labeller(table, cache_size=65_536)
    out = click.get_text_stream("stdout", encoding="utf-8")
    all_ok = True
    context = (sources, db_names(paths)) if explain else None
    try:
        for line, ok in _lines(labeller, _inputs(ips), as_json, context):
            out.write(line + "\n")
            all_ok &= ok
        out.flush()
    finally:
        for s in sources:
            s.close()
    if not all_ok:
        sys.exit(EXIT_FAILED)
