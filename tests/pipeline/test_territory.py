"""streams.pipeline.territory: the division table, address parsing, special ranges, labels."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.countries import COUNTRIES
from streams.pipeline.territory import (
    CHINA,
    DIVISIONS,
    PROVINCES,
    SPECIAL_REGIONS,
    UNKNOWN,
    Division,
    InvalidIP,
    Label,
    Location,
    find_division,
    label_location,
    parse_ip,
    public_v4,
    special_reason,
    unwrap_tunnel,
)

# The reference table (/work/shared/territories.md), copied by hand: iso, gb, name_zh, name_en.
REFERENCE = """
CN-BJ 11 北京 Beijing|CN-TJ 12 天津 Tianjin|CN-HE 13 河北 Hebei|CN-SX 14 山西 Shanxi
CN-NM 15 内蒙古 Inner_Mongolia|CN-LN 21 辽宁 Liaoning|CN-JL 22 吉林 Jilin|CN-HL 23 黑龙江 Heilongjiang
CN-SH 31 上海 Shanghai|CN-JS 32 江苏 Jiangsu|CN-ZJ 33 浙江 Zhejiang|CN-AH 34 安徽 Anhui|CN-FJ 35 福建 Fujian
CN-JX 36 江西 Jiangxi|CN-SD 37 山东 Shandong|CN-HA 41 河南 Henan|CN-HB 42 湖北 Hubei|CN-HN 43 湖南 Hunan
CN-GD 44 广东 Guangdong|CN-GX 45 广西 Guangxi|CN-HI 46 海南 Hainan|CN-CQ 50 重庆 Chongqing
CN-SC 51 四川 Sichuan|CN-GZ 52 贵州 Guizhou|CN-YN 53 云南 Yunnan|CN-XZ 54 西藏 Tibet|CN-SN 61 陕西 Shaanxi
CN-GS 62 甘肃 Gansu|CN-QH 63 青海 Qinghai|CN-NX 64 宁夏 Ningxia|CN-XJ 65 新疆 Xinjiang
"""
REF_ROWS = [r.split() for r in REFERENCE.replace("\n", "|").split("|") if r.strip()]


def test_the_table_matches_the_reference() -> None:
    assert len(REF_ROWS) == 31 == len(PROVINCES)
    got = {(d.iso, d.gb[0], d.name_zh, d.name_en.replace(" ", "_")) for d in PROVINCES}
    assert got == {tuple(r) for r in REF_ROWS}
    assert {(d.iso, d.gb, d.name_zh, d.name_en) for d in SPECIAL_REGIONS} == {
        ("CN-HK", ("81", "91"), "中国香港", "Hong Kong"),
        ("CN-MO", ("82", "92"), "中国澳门", "Macau"),
        ("CN-TW", ("71",), "中国台湾", "Taiwan"),
    }


def _spellings(d: Division) -> list[tuple[str | None, str | None, str | None]]:
    letter = d.iso[3:]
    out: list[tuple[str | None, str | None, str | None]] = [
        (d.iso, None, None),
        (letter, None, None),
        (letter.lower(), None, None),
        (f" {d.iso} ", None, None),
    ]
    for gb in d.gb:
        out += [(gb, None, None), (f"CN-{gb}", None, None), (f"{gb}0000", None, None)]
    out += [(None, zh, None) for zh in (d.name_zh, *d.zh_variants)]
    out += [(None, None, en) for en in (d.name_en, *d.en_variants)]
    out += [(None, None, en.upper()) for en in (d.name_en, *d.en_variants)]
    return out


@pytest.mark.parametrize("division", DIVISIONS, ids=lambda d: d.iso)
def test_every_spelling_gives_the_same_territory(division: Division) -> None:
    want = division.territory
    for code, zh, en in _spellings(division):
        assert find_division(code, zh, en) is division, (code, zh, en)
        got = label_location(Location("CN", "中国", "China", code, zh, en))
        assert got == Label(want), (code, zh, en)


def test_special_regions_as_countries_and_subdivisions() -> None:
    for d in SPECIAL_REGIONS:
        cc = d.iso[3:]
        want = Label(d.territory)
        assert want.territory.scope == "special_region"
        assert want.territory.code == want.territory.country_code == cc
        assert label_location(Location(cc, "香港", "Hong Kong SAR China")) == want  # db names ignored
        assert label_location(Location(cc.lower())) == want
        assert label_location(Location("CN", subdivision_code=d.iso)) == want


@pytest.mark.parametrize(
    ("loc", "code", "zh"),
    [
        (Location("CN", subdivision_code="GD", subdivision_name_zh="四川"), "CN-GD", "广东"),  # code first
        (Location("CN", subdivision_code="QQ", subdivision_name_zh="四川省"), "CN-SC", "四川"),  # then zh
        (Location("CN", subdivision_name_zh="火星", subdivision_name_en="Hunan Sheng"), "CN-HN", "湖南"),
        (Location("CN", subdivision_name_en="Shaanxi"), "CN-SN", "陕西"),
        (Location("CN", subdivision_name_en="Shanxi"), "CN-SX", "山西"),
        (Location("CN", subdivision_name_zh="广西壮族自治区"), "CN-GX", "广西"),
        (Location("CN", subdivision_name_en="Nei Mongol Zizhiqu"), "CN-NM", "内蒙古"),
        (Location("CN", subdivision_name_en="Xizang"), "CN-XZ", "西藏"),
        (Location("CN", subdivision_name_en="Xinjiang Uygur Zizhiqu"), "CN-XJ", "新疆"),
    ],
)
def test_precedence_and_variants(loc: Location, code: str, zh: str) -> None:
    t = label_location(loc).territory
    assert (t.code, t.name_zh, t.scope, t.country_code) == (code, zh, "domestic", "CN")


def test_china_without_a_usable_subdivision() -> None:
    want = Label(CHINA)
    assert (CHINA.code, CHINA.name_zh, CHINA.name_en, CHINA.scope, CHINA.country_code) == (
        "CN",
        "中国",
        "China",
        "domestic",
        "CN",
    )
    for loc in (
        Location("CN"),
        Location("CN", "中华人民共和国", "People's Republic of China"),
        Location("CN", subdivision_code="99"),
        Location("CN", subdivision_name_zh="火星省", subdivision_name_en="Mars"),
    ):
        assert label_location(loc) == want


def test_overseas() -> None:
    us = label_location(Location("US")).territory
    assert (us.code, us.name_zh, us.name_en, us.scope, us.country_code) == (
        "US",
        "美国",
        "United States",
        "overseas",
        "US",
    )
    assert label_location(Location("JP", "日本国", "Nippon")).territory.name_zh == "日本国"  # db names first
    assert label_location(Location("KR", None, "Korea")).territory.name_zh == "韩国"
    assert label_location(Location("RU")).territory.name_zh == "俄罗斯"
    assert label_location(Location("QZ")).territory.name_zh == "QZ"  # not in the table, no names


def test_no_country_and_not_found() -> None:
    assert label_location(None) == Label(UNKNOWN, "not_found")
    for cc in (None, "", "1A", "USA", "中国"):
        assert label_location(Location(cc)) == Label(UNKNOWN, "no_country")


def test_countries_table() -> None:
    assert len(COUNTRIES) >= 249
    for cc, (zh, en) in COUNTRIES.items():
        assert len(cc) == 2, cc
        assert cc.isupper(), cc
        assert zh, cc
        assert en, cc
        assert "," not in en, cc
        assert "共和国" not in zh or cc in {"CF"}, (cc, zh)
    short = {
        "US": "美国",
        "JP": "日本",
        "KR": "韩国",
        "GB": "英国",
        "RU": "俄罗斯",
        "DE": "德国",
        "FR": "法国",
    }
    for cc, zh in short.items():
        assert COUNTRIES[cc][0] == zh


# --- addresses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1.2.3.4", IPv4Address("1.2.3.4")),
        ("::ffff:1.2.3.4", IPv4Address("1.2.3.4")),
        ("::FFFF:0102:0304", IPv4Address("1.2.3.4")),
        ("2400:DA00::1", IPv6Address("2400:da00::1")),
        ("fe80::1%eth0", IPv6Address("fe80::1%eth0")),
    ],
)
def test_parse_ip_accepts(text: str, want: IPv4Address | IPv6Address) -> None:
    assert parse_ip(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.1",
        "010.0.0.1",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1.2.3.4\n",
        "1.2.3.4/24",
        "1.2.3.4:80",
        "[::1]",
        "0x7f.0.0.1",
        "localhost",
        "fe80::1%",
        "fe80::1% eth0",
        "fe80::1%eth0\n",
        "::١",
        "١.٢.٣.٤",
        "x" * 10_000,
    ],
)
def test_parse_ip_rejects(text: str) -> None:
    with pytest.raises(InvalidIP) as info:
        parse_ip(text)
    assert len(str(info.value)) < 160  # never echoes long input
    assert info.value.__cause__ is None


def test_invalid_ip_is_a_value_error() -> None:
    assert issubclass(InvalidIP, ValueError)


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_invalid_ip(text: str) -> None:
    try:
        ip = parse_ip(text)
    except InvalidIP as e:
        message = str(e)
    else:
        special_reason(ip)  # nor does anything downstream raise
        message = ""
    assert len(message) < 160


@given(st.integers(0, 2**32 - 1))
def test_every_ipv4_round_trips(n: int) -> None:
    ip = IPv4Address(n)
    assert parse_ip(str(ip)) == ip
    assert parse_ip(f"::ffff:{ip}") == ip


@given(st.from_regex(r"\A[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\Z"))
def test_dotted_quads_agree_with_ipaddress(text: str) -> None:
    try:
        want: IPv4Address | None = IPv4Address(text)
    except ValueError:
        want = None
    if want is None:
        with pytest.raises(InvalidIP):
            parse_ip(text)
    else:
        assert parse_ip(text) == want


@given(
    st.one_of(
        st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n))),
        st.from_regex(r"\A[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\Z"),
        st.text(max_size=50),
    )
)
def test_public_v4_only_when_the_slow_path_finds_nothing_special(text: str) -> None:
    # The labeller's fast path skips parse_ip and special_reason for these: it must never accept text that
    # either of them rejects or calls special.
    if public_v4(text):
        assert special_reason(parse_ip(text)) is None
        assert str(parse_ip(text)) == text


@pytest.mark.parametrize("text", ["1.1.1.1", "114.114.114.114", "223.5.5.5", "8.8.8.8"])
def test_public_v4_accepts_ordinary_addresses(text: str) -> None:
    assert public_v4(text)


@pytest.mark.parametrize(
    "text", ["10.1.2.3", "127.0.0.1", "01.2.3.4", "1.2.3", "1.2.3.4 ", "::ffff:1.2.3.4", ""]
)
def test_public_v4_refuses_special_and_non_canonical_text(text: str) -> None:
    assert not public_v4(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link_local"),
        ("fe80::1", "link_local"),
        ("fe80::1%eth0", "link_local"),
        ("100.64.0.1", "shared"),
        ("100.127.255.255", "shared"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.255", "documentation"),
        ("2001:db8::1", "documentation"),
        ("224.0.0.1", "multicast"),
        ("239.1.1.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "reserved"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("198.18.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("64:ff9b::1.2.3.4", "reserved"),
        ("100::1", "reserved"),
        ("::1.2.3.4", "reserved"),  # deprecated IPv4-compatible
        ("2001:2::1", "reserved"),
        ("::ffff:10.0.0.1", "private"),  # mapped: judged as the IPv4 address
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:c000:0201::1", "documentation"),  # 6to4 of 192.0.2.1
        ("2002:0a00:0001::1", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_special_ranges(text: str, reason: str) -> None:
    assert special_reason(parse_ip(text)) == reason


@pytest.mark.parametrize(
    "text", ["1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.0", "172.32.0.1", "2400:da00::1", "2a00::1"]
)
def test_public_addresses_are_not_special(text: str) -> None:
    assert special_reason(parse_ip(text)) is None


def test_tunnels_unwrap_to_the_embedded_ipv4() -> None:
    assert unwrap_tunnel(parse_ip("2002:0102:0304::1")) == IPv4Address("1.2.3.4")
    # RFC 4380's example: client 192.0.2.45 behind the obfuscated bits
    assert unwrap_tunnel(parse_ip("2001:0:4136:e378:8000:63bf:3fff:fdd2")) == IPv4Address("192.0.2.45")
    assert special_reason(parse_ip("2001:0:4136:e378:8000:63bf:3fff:fdd2")) == "documentation"
    assert unwrap_tunnel(parse_ip("2400:da00::1")) == IPv6Address("2400:da00::1")
