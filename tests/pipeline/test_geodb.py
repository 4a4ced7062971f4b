"""streams.pipeline.geodb: the ip2region and IPIP.net formats, region strings, the compiled table, the
ordered list of databases, corrupt files and hot reload of every format."""

from __future__ import annotations

import os
import shutil
import struct
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import ip2region.searcher as xdb_searcher
import ip2region.util as xdb_util
import ipdb as ipip
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.devtools.geodbwrite import ipdb_bytes, segments_from_networks, write_xdb
from streams.pipeline.countries import COUNTRIES, EN_ALIASES, ZH_ALIASES, country_code
from streams.pipeline.geodb import open_database
from streams.pipeline.geodb import xdb as xdb_module
from streams.pipeline.geodb.base import DatabaseError, Source
from streams.pipeline.geodb.ipdb import IpdbDatabase
from streams.pipeline.geodb.labeller import DatabaseWatcher, Labeller, load
from streams.pipeline.geodb.mmdb import node_records
from streams.pipeline.geodb.regions import detect_layout, ipdb_label, xdb_label
from streams.pipeline.geodb.table import TerritoryTable, combine, compile_table, direct_label
from streams.pipeline.geodb.xdb import XdbDatabase
from streams.pipeline.territory import UNKNOWN_LABELS, InvalidIP, Label, Territory, parse_ip
from tests.geodb_fixtures import (
    CREATED_AT,
    CREATED_AT_B,
    IPDB_FREE,
    IPDB_PAID,
    NOT_FOUND_V4,
    XDB_NEW_V4,
    XDB_NEW_V6,
    XDB_OLD,
    write_ipdb_files,
    write_xdb_files,
)
from tests.geoip_fixtures import CASES


def code_of(label: Label) -> str:
    return label.territory.code if label.reason is None else f"ZZ:{label.reason}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("geodb")
    return {**write_xdb_files(d), **write_ipdb_files(d)}


# --- region strings and country names ---------------------------------------------------------------------


@pytest.mark.parametrize(("region", "want"), [(r, w) for _n, r, _ip, w in XDB_OLD])
def test_old_layout_region_strings(region: str, want: str) -> None:
    assert code_of(xdb_label(region, "old")) == want


@pytest.mark.parametrize(("region", "want"), [(r, w) for _n, r, _ip, w in XDB_NEW_V4 + XDB_NEW_V6])
def test_new_layout_region_strings(region: str, want: str) -> None:
    assert code_of(xdb_label(region, "new")) == want


def test_special_regions_and_names_are_the_platforms() -> None:
    for region, layout in (
        ("中国|0|香港|0|0", "old"),
        ("中国|香港特别行政区|0|0|CN", "new"),
        ("Hong Kong|0|0|0|HK", "new"),
    ):
        t = xdb_label(region, layout).territory  # type: ignore[arg-type]
        assert (t.code, t.name_zh, t.scope, t.country_code) == ("HK", "中国香港", "special_region", "HK")
    t = xdb_label("中国|0|台湾省|0|0", "old").territory
    assert (t.code, t.name_zh, t.scope) == ("TW", "中国台湾", "special_region")
    # overseas names are the built-in short ones, whatever the file calls the country
    assert xdb_label("阿拉伯联合酋长国|0|0|0|0", "old").territory.name_zh == "阿联酋"
    assert xdb_label("United States|California|0|0|US", "new").territory.name_zh == "美国"


def test_layout_detection() -> None:
    assert detect_layout([r for _n, r, _ip, _w in XDB_OLD]) == "old"
    assert detect_layout([r for _n, r, _ip, _w in XDB_NEW_V4]) == "new"
    assert detect_layout(["中国|0|广东省|0|0"]) == "old"
    assert detect_layout(["中国|广东省|0|0|0"]) == "new"


@pytest.mark.parametrize(
    ("fields", "want"),
    [
        ({"country_name": "中国", "region_name": "广东"}, "CN-GD"),
        ({"country_name": "中国", "region_name": "广东省"}, "CN-GD"),
        ({"country_name": "中国", "region_name": "中国"}, "CN"),
        ({"country_name": "中国", "region_name": ""}, "CN"),
        ({"country_name": "中国", "region_name": "澳门"}, "MO"),
        ({"country_name": "香港", "region_name": "香港"}, "HK"),
        ({"country_name": "中国", "region_name": "", "china_admin_code": "650100"}, "CN-XJ"),
        ({"country_name": "China", "region_name": "Guangdong", "country_code": "CN"}, "CN-GD"),
        ({"country_name": "114DNS.COM", "region_name": "114DNS.COM"}, "ZZ:no_country"),
        ({"country_name": "本机地址", "region_name": "本机地址"}, "ZZ:loopback"),
        ({"country_name": "共享地址", "region_name": "共享地址"}, "ZZ:shared"),
        ({"country_name": "", "region_name": ""}, "ZZ:not_found"),
    ],
)
def test_ipdb_fields(fields: dict[str, str], want: str) -> None:
    assert code_of(ipdb_label(fields)) == want


def test_every_country_name_and_alias_gives_its_code() -> None:
    for cc, (zh, en) in COUNTRIES.items():
        assert country_code(zh) == cc, zh
        assert country_code(en) == cc, en
        assert country_code(cc.lower()) == cc
    for table in (ZH_ALIASES, EN_ALIASES):
        for name, cc in table.items():
            assert country_code(name) == cc, name
    assert country_code("刚果（金）") == "CD"  # full-width brackets as in the table
    for nothing in ("", "0", "内网IP", "GOOGLE.COM", "火星", "Reserved"):
        assert country_code(nothing) is None, nothing


# --- the files, read by shudi and by the official readers -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rows"),
    [("old", XDB_OLD), ("v4", XDB_NEW_V4), ("v6", XDB_NEW_V6), ("free", IPDB_FREE), ("paid", IPDB_PAID)],
)
def test_known_answers(files: dict[str, Path], name: str, rows: list[tuple[str, object, str, str]]) -> None:
    labeller = Labeller.open(files[name], 64)
    for _net, _region, ip, want in rows:
        assert code_of(labeller.label(ip)) == want, ip
        if ":" not in ip:
            assert labeller.label(f"::ffff:{ip}") == labeller.label(ip)  # IPv4-mapped IPv6
    if name != "v6":
        for ip in NOT_FOUND_V4:
            assert labeller.label(ip) == UNKNOWN_LABELS["not_found"], ip


def test_headers(files: dict[str, Path]) -> None:
    old, v4, v6 = (XdbDatabase.open(files[k]) for k in ("old", "v4", "v6"))
    assert (old.version, old.family, old.layout, old.build_epoch) == (2, 4, "old", CREATED_AT)
    assert (v4.version, v4.family, v4.layout) == (3, 4, "new")
    assert (v6.version, v6.family, v6.layout) == (3, 6, "new")
    assert v6.build == "ip2region-xdb-v3-IPv6 2026-01-01T00:00:00Z"
    paid = IpdbDatabase.open(files["paid"])
    assert (paid.language, paid.languages, paid.families, paid.build_epoch) == (
        "CN",
        ("CN", "EN"),
        (4,),
        CREATED_AT,
    )
    assert IpdbDatabase.open(files["free"]).families == (4, 6)


# Addresses near the fixtures' networks, and anywhere
_V4 = st.one_of(st.integers(0, 2**32 - 1), st.integers(0x01000000, 0x0100FFFF)).map(IPv4Address)
_V6 = st.one_of(
    st.integers(0, 2**128 - 1),
    st.integers(0x2400 << 112, (0x2400 << 112) + (1 << 112) - 1),
    st.integers(0x24002000 << 96, (0x24002000 << 96) + (1 << 66)),
).map(IPv6Address)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(v4=_V4, v6=_V6)
def test_xdb_agrees_with_the_official_searcher(
    files: dict[str, Path], v4: IPv4Address, v6: IPv6Address
) -> None:
    for key, version, ip in (
        ("old", xdb_util.IPv4, v4),
        ("v4", xdb_util.IPv4, v4),
        ("v6", xdb_util.IPv6, v6),
    ):
        official = xdb_searcher.new_with_buffer(version, xdb_util.load_content_from_file(str(files[key])))
        ours = XdbDatabase.open(files[key])
        _label, raw = ours.answer(ip)
        theirs = official.search(str(ip))
        # our writer fills gaps with 0|0|0|0|0, as the maker's source data does
        assert (raw or "0|0|0|0|0") == (theirs or "0|0|0|0|0"), (key, str(ip))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(v4=_V4, v6=_V6)
def test_ipdb_agrees_with_the_official_reader(
    files: dict[str, Path], v4: IPv4Address, v6: IPv6Address
) -> None:
    for key, language in (("free", "CN"), ("paid", "CN")):
        official = ipip.City(str(files[key]))
        ours = IpdbDatabase.open(files[key])
        for ip in (v4, v6) if key == "free" else (v4,):
            try:
                theirs: str | None = "\t".join(official.find(str(ip), language))
            except ipip.IPNotFound:
                theirs = None
            assert ours.answer(ip)[1] == theirs, (key, str(ip))


# --- the table: identical to looking each database up directly ---------------------------------------------


@pytest.fixture(scope="module")
def everything(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Source]:
    from tests.geoip_fixtures import build_fixture_db

    mmdb = build_fixture_db(tmp_path_factory.mktemp("mmdb") / "fixture.mmdb")
    return [open_database(p) for p in (files["v4"], files["v6"], files["free"], files["old"], mmdb)]


@pytest.fixture(scope="module")
def everything_table(everything: list[Source]) -> TerritoryTable:
    return compile_table(everything)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ip=st.one_of(_V4, _V6))
def test_table_labels_as_the_databases_do(
    everything: list[Source], everything_table: TerritoryTable, ip: IPv4Address | IPv6Address
) -> None:
    assert everything_table.labeller()(str(ip)) == direct_label(everything, parse_ip(str(ip)))[0], str(ip)


def test_table_on_every_address_of_the_label_tests(everything: list[Source]) -> None:
    from tests.pipeline.test_territory import test_special_ranges

    table = compile_table(everything)
    label = table.labeller()
    texts = [c[2] for c in CASES] + [r[2] for r in XDB_OLD + XDB_NEW_V4 + XDB_NEW_V6 + IPDB_FREE + IPDB_PAID]
    marks = test_special_ranges.pytestmark  # type: ignore[attr-defined]
    texts += [text for mark in marks if mark.name == "parametrize" for text, _reason in mark.args[1]]
    texts += ["::ffff:1.0.1.7", "2002:0100:0107::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "fe80::1%eth0"]
    for text in texts:
        assert label(text) == direct_label(everything, parse_ip(text))[0], text
    for source in everything:  # and a table of each database alone
        alone = compile_table([source]).labeller()
        for text in texts:
            assert alone(text) == direct_label([source], parse_ip(text))[0], (source.path.name, text)


# --- the ordered list -------------------------------------------------------------------------------------


def _one(tmp: Path, name: str, rows: list[tuple[str, str]]) -> Path:
    return write_xdb(tmp / name, segments_from_networks(rows), version=3, created_at=CREATED_AT)


def test_ordered_list_first_database_that_knows_wins(tmp_path: Path) -> None:
    first = _one(
        tmp_path,
        "first.xdb",
        [
            ("1.0.1.0/24", "中国|0|0|0|CN"),
            ("1.0.2.0/24", "中国|广东省|0|0|CN"),
            ("1.0.3.0/24", "0|0|0|0|0"),
            ("1.0.4.0/24", "中国|0|0|0|CN"),
            ("1.0.5.0/24", "Reserved|Reserved|Reserved|0|0"),
        ],
    )
    second = _one(
        tmp_path,
        "second.xdb",
        [
            ("1.0.1.0/24", "中国|四川省|0|0|CN"),
            ("1.0.2.0/24", "中国|四川省|0|0|CN"),
            ("1.0.3.0/24", "Japan|0|0|0|JP"),
            ("1.0.4.0/24", "United States|0|0|0|US"),
            ("1.0.6.0/24", "中国|香港特别行政区|0|0|CN"),
        ],
    )
    labeller = Labeller.open([first, second], 16)
    assert code_of(labeller.label("1.0.1.1")) == "CN-SC"  # "China" refined by the second database
    assert code_of(labeller.label("1.0.2.1")) == "CN-GD"  # the first database's province wins
    assert code_of(labeller.label("1.0.3.1")) == "JP"  # first database silent: the second answers
    assert code_of(labeller.label("1.0.4.1")) == "CN"  # a later database never overrides the country
    assert code_of(labeller.label("1.0.5.1")) == "ZZ:reserved"  # nobody knows: the first reason
    assert code_of(labeller.label("1.0.6.1")) == "HK"
    assert code_of(Labeller.open([second, first], 16).label("1.0.2.1")) == "CN-SC"
    assert (
        labeller.build
        == "ip2region-xdb-v3-IPv4 2026-01-01T00:00:00Z + ip2region-xdb-v3-IPv4 2026-01-01T00:00:00Z"
    )


def test_combine_rule() -> None:
    gd, sc = Label(parse_label("CN-GD")), Label(parse_label("CN-SC"))
    cn, us, hk = Label(parse_label("CN")), Label(parse_label("US")), Label(parse_label("HK"))
    nf, private = UNKNOWN_LABELS["not_found"], UNKNOWN_LABELS["private"]
    assert combine(nf, gd) == gd
    assert combine(gd, sc) == gd
    assert combine(cn, sc) == sc
    assert combine(cn, hk) == hk
    assert combine(cn, us) == cn
    assert combine(private, us) == us
    assert combine(private, nf) == private
    assert combine(nf, private) == private


def parse_label(code: str) -> Territory:
    table = {
        "CN-GD": xdb_label("中国|0|广东省|0|0", "old"),
        "CN-SC": xdb_label("中国|0|四川省|0|0", "old"),
        "CN": xdb_label("中国|0|0|0|0", "old"),
        "US": xdb_label("美国|0|0|0|0", "old"),
        "HK": xdb_label("香港|0|0|0|0", "old"),
    }
    return table[code].territory


# --- corrupt files ----------------------------------------------------------------------------------------


def _corrupt_xdbs(good: bytes) -> dict[str, bytes]:
    first, _last = struct.unpack_from("<II", good, 8)
    bad_version = bytearray(good)
    struct.pack_into("<H", bad_version, 0, 9)
    bad_family = bytearray(good)
    struct.pack_into("<H", bad_family, 16, 5)
    bad_pointers = bytearray(good)
    struct.pack_into("<I", bad_pointers, 12, len(good) + 100)
    bad_region = bytearray(good)
    struct.pack_into("<I", bad_region, first + 10, len(good) - 2)  # the first entry's region past the end
    bad_vector = bytearray(good)
    struct.pack_into("<I", bad_vector, 256 + 8 * 0x0100, first + 14)  # cell 1.0 points one entry late
    overlapping = bytearray(good)
    struct.pack_into("<I", overlapping, first + 14, 0)  # the second entry starts at 0.0.0.0
    return {
        "truncated": good[: len(good) // 2],
        "header only": good[:256],
        "version": bytes(bad_version),
        "ip version": bytes(bad_family),
        "pointers": bytes(bad_pointers),
        "region": bytes(bad_region),
        "vector index": bytes(bad_vector),
        "overlap": bytes(overlapping),
        "garbage": b"\x03\x00" + os.urandom(600_000),
    }


def test_corrupt_xdb_files_are_refused_with_a_clear_reason(files: dict[str, Path], tmp_path: Path) -> None:
    good = files["v4"].read_bytes()
    for what, content in _corrupt_xdbs(good).items():
        path = tmp_path / f"{what}.xdb"
        path.write_bytes(content)
        with pytest.raises(DatabaseError) as info:
            load([path])
        assert info.value.path == path, what
        assert "\n" not in str(info.value)
        assert str(path) in str(info.value)


def test_corrupt_ipdb_files_are_refused_with_a_clear_reason(files: dict[str, Path], tmp_path: Path) -> None:
    good = files["free"].read_bytes()
    meta_len = int.from_bytes(good[:4], "big")
    body = 4 + meta_len
    loop = bytearray(good)
    loop[body : body + 4] = (0).to_bytes(4, "big")  # node 0's 0-branch back to node 0
    loop[body + 4 : body + 8] = (0).to_bytes(4, "big")
    far = bytearray(good)
    far[body + 8 * 96 : body + 8 * 96 + 4] = (0xFFFFFF00).to_bytes(4, "big")  # a record pointer past the end
    cases = {
        "truncated": good[:-10],
        "no meta": b"\x00\x00\x00\x05{}" + good[9:],
        "bad json": good[:4] + b"[" + good[5:],
        "cycle": bytes(loop),
        "pointer": bytes(far),
        "not utf-8": ipdb_bytes([("1.0.0.0/24", ["中国", "广东", ""])]).replace(
            "广东".encode(), b"\xff\xfe\xfd\xfc\xfb\xfa"
        ),
    }
    for what, content in cases.items():
        path = tmp_path / f"{what.replace(' ', '-')}.ipdb"
        path.write_bytes(content)
        with pytest.raises(DatabaseError) as info:
            load([path])
        assert info.value.path == path, what
        assert "\n" not in str(info.value)


def test_format_by_content_not_name(files: dict[str, Path], tmp_path: Path) -> None:
    for key in ("v4", "free"):
        odd = tmp_path / f"current-{key}.dat"
        shutil.copyfile(files[key], odd)
        assert open_database(odd).kind == ("xdb" if key == "v4" else "ipdb")
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"nothing we know" * 100)
    with pytest.raises(DatabaseError, match=r"not a MaxMind DB, ip2region xdb or IPIP\.net ipdb"):
        open_database(junk)


# --- hot reload of every format ---------------------------------------------------------------------------


def _replace(content: bytes, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".new")
    tmp.write_bytes(content)
    os.replace(tmp, dst)


@pytest.mark.parametrize(
    ("key", "first_ip"), [("old", "1.0.1.7"), ("v4", "1.0.1.7"), ("v6", "2400:da00::1"), ("free", "1.0.1.7")]
)
def test_reload_each_format(files: dict[str, Path], tmp_path: Path, key: str, first_ip: str) -> None:
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b_files = {**write_xdb_files(b_dir, "b"), **write_ipdb_files(b_dir, "b")}
    live = tmp_path / files[key].name
    shutil.copyfile(files[key], live)
    other = tmp_path / "other.ipdb"
    shutil.copyfile(files["paid"], other)
    sources, table = load([live, other])
    labeller = Labeller(table, 64)
    watcher = DatabaseWatcher(labeller, sources)
    before = code_of(labeller.label(first_ip))
    assert before != "CN-SC"

    # a corrupt replacement: the old database and table stay, the failure names the file
    _replace(_corrupt_xdbs(files["v4"].read_bytes())["vector index"] if key != "free" else b"junk", live)
    (r,) = watcher.check()
    assert (r.status, r.db, r.build_epoch) == ("failed", live.name, CREATED_AT)
    assert code_of(labeller.label(first_ip)) == before
    assert watcher.check() == []

    _replace(b_files[key].read_bytes(), live)
    (r,) = watcher.check()
    assert (r.status, r.db, r.build_epoch) == ("reloaded", live.name, CREATED_AT_B)
    assert code_of(labeller.label(first_ip)) == "CN-SC"
    assert code_of(labeller.label("1.0.4.7")) in {
        "US",
        "CN-BJ",
        "HK",
        "CN-NM",
        "CN-JS",
    }  # other rows unchanged
    assert watcher.sources[1] is sources[1]  # the unchanged file kept its database


# --- the labeller's fast paths ----------------------------------------------------------------------------

_ADDRESSY = st.one_of(
    st.from_regex(r"\A[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\Z"),
    st.text(alphabet="0123456789abcdefABCDEF:.%e", max_size=45),
    st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n))),
    st.integers(0, 2**128 - 1).map(lambda n: str(IPv6Address(n))),
    st.integers(0, 2**128 - 1).map(lambda n: IPv6Address(n).exploded),
    st.integers(0, 2**32 - 1).map(lambda n: f"::ffff:{IPv4Address(n)}"),
    st.integers(0, 2**112 - 1).map(lambda n: str(IPv6Address((0x2002 << 112) | n))),
    st.text(max_size=20),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_ADDRESSY)
def test_fast_paths_accept_and_label_exactly_what_parse_ip_does(
    everything_table: TerritoryTable, text: str
) -> None:
    # The labeller parses with inet_pton (C) where it can; it must never accept text parse_ip refuses, nor
    # label differently from the full path.
    label = everything_table.labeller()
    try:
        want: Label | None = everything_table.lookup(parse_ip(text))
    except InvalidIP:
        want = None
    if want is None:
        with pytest.raises(InvalidIP):
            label(text)
    else:
        assert label(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.4\x00",
        "١.٢.٣.٤",
        "1.2.3.4/24",
        "0x1.2.3.4",
        "1::2::3",
        "::1%",
        "fe80::1%eth0 ",
        "00001::",
        "1.2.3.4.5",
        "256.1.1.1",
        "",
    ],
)
def test_fast_paths_refuse_what_parse_ip_refuses(everything_table: TerritoryTable, text: str) -> None:
    with pytest.raises(InvalidIP):
        everything_table.labeller()(text)


# --- the compiled table cached on disk --------------------------------------------------------------------


def test_table_cache_hit_miss_and_corruption(files: dict[str, Path], tmp_path: Path) -> None:
    from streams.pipeline.geodb import cache

    live = tmp_path / "live.xdb"
    shutil.copyfile(files["v4"], live)
    paths = [live, files["free"]]
    cache_dir = tmp_path / "cache"
    _sources, compiled = load(paths, cache_dir)
    assert not compiled.from_cache
    (cached_file,) = cache_dir.glob("*.table")
    _sources, cached = load(paths, cache_dir)
    assert cached.from_cache
    assert cached.sources == compiled.sources
    texts = [r[2] for r in XDB_NEW_V4 + IPDB_FREE] + ["10.0.0.1", "2400:da00::1", "9.9.9.9", "::1"]
    a, b = compiled.labeller(), cached.labeller()
    assert [a(t) for t in texts] == [b(t) for t in texts]

    cached_file.write_bytes(cached_file.read_bytes()[:1000])  # a damaged cache is ignored and rewritten
    _sources, again = load(paths, cache_dir)
    assert not again.from_cache
    assert [again.labeller()(t) for t in texts] == [a(t) for t in texts]

    shutil.copyfile(files["old"], live)  # another file, another key: never the old table
    _sources, other = load(paths, cache_dir)
    assert not other.from_cache
    assert code_of(other.labeller()("1.0.11.7")) == "HK"
    assert len(list(cache_dir.glob("*.table"))) == 2
    assert cache.cache_key(paths) != cache.cache_key([files["v4"], files["free"]])


@pytest.mark.parametrize("record_size", [24, 28, 32])
@given(data=st.binary(min_size=0, max_size=200))
def test_mmdb_node_records_decode_every_record_size(record_size: int, data: bytes) -> None:
    """The search tree decoded all at once (byte shuffles in C) gives each node's records as MaxMind's spec
    lays them out, for every record size: checked against a per-node decode written from the spec."""
    width = record_size // 4
    tree = data[: len(data) // width * width]
    want: list[int] = []
    for off in range(0, len(tree), width):
        node = tree[off : off + width]
        if record_size == 28:
            want += [
                ((node[3] >> 4) << 24) | int.from_bytes(node[0:3], "big"),
                ((node[3] & 0x0F) << 24) | int.from_bytes(node[4:7], "big"),
            ]
        else:
            half = width // 2
            want += [int.from_bytes(node[:half], "big"), int.from_bytes(node[half:], "big")]
    zeros, ones = node_records(tree, record_size)
    assert list(zeros) == want[0::2]
    assert list(ones) == want[1::2]


def test_xdb_fast_checks_decide_as_the_entry_by_entry_checks(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole-array checks of an xdb file (a shortcut for a million entries) accept exactly the files
    the entry-by-entry checks accept: good files of both families, and every corruption refused."""
    contents = {name: files[name].read_bytes() for name in ("v4", "v6")}
    contents |= {f"v4 {what}": c for what, c in _corrupt_xdbs(contents["v4"]).items()}
    contents |= {f"v6 {what}": c for what, c in _corrupt_xdbs(contents["v6"]).items()}

    def outcome(content: bytes) -> str:
        try:
            db = XdbDatabase.from_bytes(Path("x.xdb"), content)
        except DatabaseError:
            return "refused"
        return f"{list(db.ranges(db.family))}"

    fast = {name: outcome(c) for name, c in contents.items()}
    monkeypatch.setattr(xdb_module, "_vector_index_agrees", lambda *_args: False)
    slow = {name: outcome(c) for name, c in contents.items()}
    assert fast == slow
    assert fast["v4"] != "refused"
    assert fast["v6"] != "refused"
