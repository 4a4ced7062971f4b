"""Small GeoIP2-City-shaped .mmdb files with KNOWN answers, built with mmdb-writer.

Every entry states the label it must produce, written by hand (not computed by the code). The
networks look public (1.0.x, 36.x, 2400:...) but nothing is ever contacted; the data is made up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.devtools.mmdbbuild import build_city_mmdb, cn_record, country_record

# (code, name_zh, name_en, scope, country_code) or ("ZZ", reason)
Expected = tuple[str, str, str, str, str | None]


def _cn(code: str, zh: str, en: str) -> Expected:
    return (code, zh, en, "domestic", "CN")


GD = _cn("CN-GD", "广东", "Guangdong")
CHINA = ("CN", "中国", "China", "domestic", "CN")
HK = ("HK", "中国香港", "Hong Kong", "special_region", "HK")
MO = ("MO", "中国澳门", "Macau", "special_region", "MO")
TW = ("TW", "中国台湾", "Taiwan", "special_region", "TW")

EUROPE = {"continent": {"code": "EU", "names": {"en": "Europe", "zh-CN": "欧洲"}}}

# (network, record, an address in it, expected label)
CASES: list[tuple[str, dict[str, Any], str, Expected | str]] = [
    ("1.0.1.0/24", cn_record("GD", "广东", "Guangdong"), "1.0.1.7", GD),
    ("1.0.2.0/24", cn_record("44"), "1.0.2.7", GD),
    ("1.0.3.0/24", cn_record("CN-44"), "1.0.3.7", GD),
    ("1.0.4.0/24", cn_record("CN-GD"), "1.0.4.7", GD),
    ("1.0.5.0/24", cn_record(None, "广东省"), "1.0.5.7", GD),
    ("1.0.6.0/24", cn_record(None, None, "Guangdong Sheng"), "1.0.6.7", GD),
    ("1.0.7.0/24", cn_record("gd"), "1.0.7.7", GD),
    ("1.0.8.0/24", cn_record(None, "北京市", "Beijing Shi"), "1.0.8.7", _cn("CN-BJ", "北京", "Beijing")),
    (
        "1.0.9.0/24",
        cn_record(None, "内蒙古自治区", "Nei Mongol"),
        "1.0.9.7",
        _cn("CN-NM", "内蒙古", "Inner Mongolia"),
    ),
    (
        "1.0.10.0/24",
        cn_record(None, None, "Guangxi Zhuangzu Zizhiqu"),
        "1.0.10.7",
        _cn("CN-GX", "广西", "Guangxi"),
    ),
    ("1.0.11.0/24", cn_record("54", "西藏自治区", "Xizang"), "1.0.11.7", _cn("CN-XZ", "西藏", "Tibet")),
    (
        "1.0.12.0/24",
        cn_record(None, "新疆维吾尔自治区", "Xinjiang Uygur Zizhiqu"),
        "1.0.12.7",
        _cn("CN-XJ", "新疆", "Xinjiang"),
    ),
    ("1.0.13.0/24", cn_record(None, "宁夏回族自治区"), "1.0.13.7", _cn("CN-NX", "宁夏", "Ningxia")),
    ("1.0.14.0/24", cn_record("22", "吉林", "Jilin Sheng"), "1.0.14.7", _cn("CN-JL", "吉林", "Jilin")),
    ("1.0.15.0/24", cn_record(), "1.0.15.7", CHINA),
    ("1.0.16.0/24", cn_record("ZZ9", "火星省", "Mars"), "1.0.16.7", CHINA),
    ("1.0.17.0/24", cn_record("XX", "四川省"), "1.0.17.7", _cn("CN-SC", "四川", "Sichuan")),
    ("1.0.18.0/24", cn_record("GD", "四川", "Sichuan"), "1.0.18.7", GD),  # a recognised code wins
    ("1.0.19.0/24", cn_record(None, "广西壮族自治区", "Hunan"), "1.0.19.7", _cn("CN-GX", "广西", "Guangxi")),
    ("36.0.1.0/24", country_record("HK", "香港", "Hong Kong"), "36.0.1.7", HK),
    ("36.0.2.0/24", country_record("MO", "澳门", "Macao"), "36.0.2.7", MO),
    ("36.0.3.0/24", country_record("TW", "台湾", "Taiwan"), "36.0.3.7", TW),
    ("36.0.4.0/24", cn_record("CN-HK"), "36.0.4.7", HK),
    ("36.0.5.0/24", cn_record("92"), "36.0.5.7", MO),
    ("36.0.6.0/24", cn_record("71"), "36.0.6.7", TW),
    ("36.0.7.0/24", cn_record(None, "台湾省"), "36.0.7.7", TW),
    ("36.0.8.0/24", cn_record("81", "香港特别行政区"), "36.0.8.7", HK),
    (
        "36.1.1.0/24",
        country_record("US", "美国", "United States"),
        "36.1.1.7",
        ("US", "美国", "United States", "overseas", "US"),
    ),
    (  # the database's own names win over the table
        "36.1.2.0/24",
        {"country": {"iso_code": "KR", "names": {"zh-CN": "大韩民国", "en": "Republic of Korea"}}},
        "36.1.2.7",
        ("KR", "大韩民国", "Republic of Korea", "overseas", "KR"),
    ),
    (  # no zh name in the database: from the table
        "36.1.3.0/24",
        {"country": {"iso_code": "DE", "names": {"en": "Germany"}}},
        "36.1.3.7",
        ("DE", "德国", "Germany", "overseas", "DE"),
    ),
    (
        "36.1.4.0/24",
        {"country": {"iso_code": "FR"}},
        "36.1.4.7",
        ("FR", "法国", "France", "overseas", "FR"),
    ),
    (
        "36.1.5.0/24",
        {"country": {"iso_code": "XK"}},
        "36.1.5.7",
        ("XK", "科索沃", "Kosovo", "overseas", "XK"),
    ),
    ("36.2.0.0/24", EUROPE, "36.2.0.7", "no_country"),
    ("36.2.1.0/24", {"registered_country": {"iso_code": "US"}}, "36.2.1.7", "no_country"),
    ("2400:da00::/32", cn_record("SH", "上海", "Shanghai"), "2400:da00::1", _cn("CN-SH", "上海", "Shanghai")),
    (
        "2400:1000::/32",
        country_record("GB", "英国", "United Kingdom"),
        "2400:1000::1",
        ("GB", "英国", "United Kingdom", "overseas", "GB"),
    ),
    ("2400:2000::/32", cn_record("CN-11"), "2400:2000:abcd::1", _cn("CN-BJ", "北京", "Beijing")),
    ("2400:3000::/32", country_record("HK", "香港", "Hong Kong"), "2400:3000::1", HK),
]

# Addresses the fixture database has no network for.
NOT_FOUND = ("1.0.200.1", "9.9.9.9", "2400:f000::1", "2a00::1")

# The second build of the fixture (for hot reload): the first network moves to Sichuan.
RELOADED_FIRST: Expected = _cn("CN-SC", "四川", "Sichuan")
BUILD_EPOCH_A = 1_767_225_600  # 2026-01-01T00:00:00Z
BUILD_EPOCH_B = 1_769_904_000  # 2026-02-01T00:00:00Z


def build_fixture_db(path: Path, *, variant: str = "a") -> Path:
    """Write the known-answer database to ``path``. Variant "b" relabels CASES[0]'s network as Sichuan."""
    entries = [(net, rec) for net, rec, _ip, _want in CASES]
    if variant == "b":
        entries[0] = (entries[0][0], cn_record("SC", "四川", "Sichuan"))
    elif variant != "a":
        raise ValueError(variant)
    return build_city_mmdb(
        path,
        entries,
        description="shudi test fixture (made-up data)",
        build_epoch=BUILD_EPOCH_A if variant == "a" else BUILD_EPOCH_B,
    )


MAXMIND_DIR = Path(__file__).resolve().parent / "data" / "maxmind"
