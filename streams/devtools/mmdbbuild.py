"""Build GeoIP2-City-shaped MaxMind DB files: test fixtures, the demo database, benchmark databases.

!!! The demo and synthetic databases are SYNTHETIC DATA, NOT REAL GEOGRAPHY. !!!
Their networks are assigned to places by a fixed pattern or a random generator; an address in them says
nothing about where that address really is. They exist so the demo shows real-looking labels and the
benchmarks run on a database of realistic size without a MaxMind licence. For production use a real
GeoIP2/GeoLite2-City database (geoipupdate).

mmdb-writer and netaddr are optional dependencies (extras ``demo``/``dev``/``bench``), imported on use.

    python -m streams.devtools.mmdbbuild demo PATH
    python -m streams.devtools.mmdbbuild synthetic PATH --networks 250000 [--seed 1]
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator, Mapping
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Any

import click
import maxminddb

from streams.pipeline.countries import COUNTRIES
from streams.pipeline.geoip import location_from_record
from streams.pipeline.territory import (
    DIVISIONS,
    PROVINCES,
    Division,
    Territory,
    label_location,
    special_reason,
)

Record = Mapping[str, Any]

DEMO_DESCRIPTION = "shudi DEMO database: synthetic data, not real geography"


def build_city_mmdb(
    path: Path | str,
    entries: Iterable[tuple[str, Record]],
    database_type: str = "GeoIP2-City",
    languages: tuple[str, ...] = ("en", "zh-CN"),
    description: str = "shudi synthetic GeoIP2-City-shaped database (not real geography)",
    build_epoch: int | None = None,
) -> Path:
    """Write an IPv6 MaxMind DB (IPv4 networks stored as ::a.b.c.d/96+n) with one record per CIDR.

    Later entries overwrite earlier ones where they overlap. ``build_epoch`` defaults to now. The file is
    written next to ``path`` and renamed into place, so a reader watching ``path`` never sees half a file.
    """
    from mmdb_writer import MMDBWriter  # optional dependency
    from netaddr import IPSet

    class _Writer(MMDBWriter):
        def _build_meta(self) -> dict[str, Any]:
            meta: dict[str, Any] = super()._build_meta()
            if build_epoch is not None:
                meta["build_epoch"] = build_epoch
            return meta

    path = Path(path)
    writer = _Writer(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=list(languages),
        description=description,
    )
    for cidr, record in entries:
        writer.insert_network(IPSet([cidr]), dict(record))
    tmp = path.with_name(f".{path.name}.tmp")
    writer.to_db_file(str(tmp))
    tmp.replace(path)
    return path


def country_record(cc: str, name_zh: str | None = None, name_en: str | None = None) -> dict[str, Any]:
    """``{"country": {...}}`` with names from the arguments, else from the countries table."""
    zh, en = COUNTRIES.get(cc, (None, None))
    names = {k: v for k, v in (("en", name_en or en), ("zh-CN", name_zh or zh)) if v}
    return {"country": {"iso_code": cc, "names": names}}


def cn_record(
    code: str | None = None, name_zh: str | None = None, name_en: str | None = None
) -> dict[str, Any]:
    """A CN record with one subdivision spelled exactly as given (any part may be None)."""
    rec: dict[str, Any] = {"country": {"iso_code": "CN", "names": {"en": "China", "zh-CN": "中国"}}}
    sub: dict[str, Any] = {}
    if code is not None:
        sub["iso_code"] = code
    names = {k: v for k, v in (("en", name_en), ("zh-CN", name_zh)) if v}
    if names:
        sub["names"] = names
    if sub:
        rec["subdivisions"] = [sub]
    return rec


def _division_record(d: Division, style: int) -> dict[str, Any]:
    """A record for division ``d`` in one of the spellings databases use."""
    letter = d.iso[3:]
    full_zh = d.zh_variants[0] if d.zh_variants else d.name_zh
    variant_en = d.en_variants[0] if d.en_variants else d.name_en
    match style % 5:
        case 0:  # GeoIP2 style: letter code, short names
            return cn_record(letter, d.name_zh, d.name_en)
        case 1:  # pre-2017 ISO numeric
            return cn_record(d.gb[0], d.name_zh, d.name_en)
        case 2:  # names only
            return cn_record(None, d.name_zh, d.name_en)
        case 3:  # Chinese with suffix, English variant, no code
            return cn_record(None, full_zh, variant_en)
        case _:  # full ISO code, English only
            return cn_record(d.iso, None, variant_en)


DEMO_COUNTRIES = (
    "US", "JP", "KR", "GB", "DE", "FR", "RU", "CA", "AU", "SG", "MY", "TH", "VN",
    "IN", "ID", "PH", "BR", "IT", "ES", "NL", "SE", "CH", "NZ", "AE", "TR",
)  # fmt: skip


def demo_entries() -> list[tuple[str, dict[str, Any]]]:
    """The demo database's content. SYNTHETIC: place i gets 36.i.0.0/16, 58.(2i).0.0/17, 121.i.8.0/22 and
    2400:(i+1)00::/32, whatever those addresses are in reality."""
    places: list[dict[str, Any]] = [_division_record(d, i) for i, d in enumerate(PROVINCES)]
    places += [country_record(d.iso[3:]) for d in DIVISIONS if d.kind == "special region"]
    places.append(cn_record("CN-TW", "台湾省", "Taiwan"))  # HK/MO/TW as a CN subdivision
    places += [country_record(cc) for cc in DEMO_COUNTRIES]
    places.append(cn_record(None, None, None))  # CN without a subdivision
    entries: list[tuple[str, dict[str, Any]]] = []
    for i, rec in enumerate(places):
        for cidr in (f"36.{i}.0.0/16", f"58.{2 * i}.0.0/17", f"121.{i}.8.0/22", f"2400:{i + 1:x}00::/32"):
            entries.append((cidr, rec))
    return entries


def build_demo_db(path: Path | str) -> Path:
    """The DEMO database (synthetic data, not real geography): every province, HK/MO/TW, 25 countries."""
    return build_city_mmdb(path, demo_entries(), description=DEMO_DESCRIPTION)


def _synthetic_places(rng: random.Random) -> tuple[list[dict[str, Any]], list[float]]:
    places: list[dict[str, Any]] = []
    weights: list[float] = []
    for i, d in enumerate(PROVINCES):  # ~60% of networks in mainland China, uneven over provinces
        for style in range(5):
            places.append(_division_record(d, style + i))
            weights.append(0.6 / len(PROVINCES) / 5 * rng.uniform(0.2, 3.0) / 1.6)
    places.append(cn_record(None, None, None))
    weights.append(0.02)
    ccs = sorted(COUNTRIES)
    harmonic = sum(1 / k for k in range(1, len(ccs) + 1))
    for rank, cc in enumerate(rng.sample(ccs, len(ccs))):  # Zipf-ish over countries, 38% in all
        places.append(country_record(cc))
        weights.append(0.38 / (rank + 1) / harmonic)
    return places, weights


def synthetic_entries(networks: int, seed: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """``networks`` non-overlapping networks (~85% IPv4 /24, ~15% IPv6 /48) assigned at random. SYNTHETIC."""
    rng = random.Random(seed)
    places, weights = _synthetic_places(rng)
    n6 = networks * 15 // 100
    n4 = networks - n6
    v4: set[int] = set()
    while len(v4) < n4:
        k = rng.randrange(1 << 24)  # a /24
        if k not in v4 and special_reason(ip_address(k << 8)) is None:
            v4.add(k)
    v6: set[int] = set()
    while len(v6) < n6:
        v6.add((0x2400 << 32) | rng.randrange(1 << 36))  # a /48 under 2400::/12
    cidrs = [str(IPv4Network((k << 8, 24))) for k in sorted(v4)]
    cidrs += [str(IPv6Network((k << 80, 48))) for k in sorted(v6)]
    recs = rng.choices(places, weights=weights, k=len(cidrs))
    return list(zip(cidrs, recs, strict=True))


def build_synthetic_db(path: Path | str, networks: int = 250_000, seed: int = 1) -> Path:
    """A realistic-size synthetic database for benchmarks (synthetic data, not real geography)."""
    return build_city_mmdb(
        path,
        synthetic_entries(networks, seed),
        description=f"shudi synthetic database, {networks} networks, seed {seed}: not real geography",
    )


def labelled_networks(db_path: Path | str) -> Iterator[tuple[IPv4Network | IPv6Network, Territory]]:
    """Every network of the MaxMind DB at ``db_path`` with the territory shudi's labeller gives it (reads
    the whole tree: seconds for ~300k networks)."""
    with maxminddb.open_database(str(db_path)) as reader:
        for network, record in reader:
            yield network, label_location(location_from_record(record)).territory


def sample_ips(
    db_path: Path | str,
    territory_code: str | None = None,
    n: int = 1,
    seed: int = 0,
    *,
    unique: bool = False,
) -> list[str]:
    """``n`` addresses drawn uniformly over the database's own networks (then uniformly inside the network),
    optionally only networks whose label code is ``territory_code`` ("CN-GD", "US", "HK" ...); with
    ``unique``, ``n`` different ones.

    Raises ValueError if no network matches. Reads the whole tree (seconds for ~300k networks).
    """
    rng = random.Random(seed)
    networks: list[IPv4Network | IPv6Network]
    if territory_code is None:
        with maxminddb.open_database(str(db_path)) as reader:
            networks = [network for network, _ in reader]
    else:
        networks = [net for net, t in labelled_networks(db_path) if t.code == territory_code]
    if not networks:
        raise ValueError(f"no network in {db_path} labels as {territory_code!r}")
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        net = rng.choice(networks)
        host = net.network_address + rng.randrange(net.num_addresses)
        ip = str(host)
        if special_reason(host) is None and not (unique and ip in seen):
            out.append(ip)
            seen.add(ip)
    return out


@click.group()
def main() -> None:
    """Build synthetic GeoIP2-City-shaped databases (NOT real geography)."""


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def demo(path: Path) -> None:
    """Write the DEMO database (synthetic, not real geography) to PATH."""
    t0 = time.perf_counter()
    build_demo_db(path)
    click.echo(f"wrote {path} (demo, synthetic) in {time.perf_counter() - t0:.1f}s")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--networks", type=click.IntRange(min=1), default=250_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
def synthetic(path: Path, networks: int, seed: int) -> None:
    """Write a synthetic benchmark database with NETWORKS networks to PATH."""
    t0 = time.perf_counter()
    build_synthetic_db(path, networks, seed)
    click.echo(f"wrote {path} ({networks} networks, seed {seed}) in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
