"""Small ip2region xdb and IPIP.net ipdb files with KNOWN answers, written with streams.devtools.geodbwrite.

Every row states the territory code (or unknown reason) it must give, written by hand. The networks look
public but the data is made up.
"""

from __future__ import annotations

from pathlib import Path

from streams.devtools.geodbwrite import IPDB_PAID_FIELDS, segments_from_networks, write_ipdb, write_xdb

CREATED_AT = 1_767_225_600  # 2026-01-01T00:00:00Z
CREATED_AT_B = 1_769_904_000  # 2026-02-01T00:00:00Z

# (network, region string, an address in it, expected code or "ZZ:reason")
XDB_OLD: list[tuple[str, str, str, str]] = [
    ("1.0.1.0/24", "中国|0|广东省|深圳市|电信", "1.0.1.7", "CN-GD"),
    ("1.0.2.0/24", "中国|0|广东|广州市|联通", "1.0.2.7", "CN-GD"),
    ("1.0.3.0/24", "中国|0|北京市|北京市|电信", "1.0.3.7", "CN-BJ"),
    ("1.0.4.0/24", "中国|0|北京|0|0", "1.0.4.7", "CN-BJ"),
    ("1.0.5.0/24", "中国|0|内蒙古|呼和浩特市|移动", "1.0.5.7", "CN-NM"),
    ("1.0.6.0/24", "中国|0|内蒙古自治区|0|0", "1.0.6.7", "CN-NM"),
    ("1.0.7.0/24", "中国|0|新疆|乌鲁木齐市|电信", "1.0.7.7", "CN-XJ"),
    ("1.0.8.0/24", "中国|0|广西壮族自治区|0|0", "1.0.8.7", "CN-GX"),
    ("1.0.9.0/24", "中国|华南|广西|南宁市|电信", "1.0.9.7", "CN-GX"),
    ("1.0.10.0/24", "中国|0|0|0|0", "1.0.10.7", "CN"),
    ("1.0.11.0/24", "中国|0|香港|0|阿里云", "1.0.11.7", "HK"),
    ("1.0.12.0/24", "中国|0|澳门|0|0", "1.0.12.7", "MO"),
    ("1.0.13.0/24", "中国|0|台湾省|台北|中华电信", "1.0.13.7", "TW"),
    ("1.0.14.0/24", "中国|0|台湾|0|0", "1.0.14.7", "TW"),
    ("1.0.15.0/24", "香港|0|0|0|0", "1.0.15.7", "HK"),
    ("1.0.16.0/24", "日本|0|北海道|0|0", "1.0.16.7", "JP"),
    ("1.0.17.0/24", "美国|0|华盛顿|0|0", "1.0.17.7", "US"),
    ("1.0.18.0/24", "韩国|0|0|0|KT", "1.0.18.7", "KR"),
    ("1.0.19.0/24", "阿拉伯联合酋长国|0|0|0|0", "1.0.19.7", "AE"),
    ("1.0.20.0/24", "0|0|0|内网IP|内网IP", "1.0.20.7", "ZZ:private"),
    ("1.0.21.0/24", "内网IP|0|0|内网IP|内网IP", "1.0.21.7", "ZZ:private"),
    ("1.0.22.0/24", "0|0|0|0|0", "1.0.22.7", "ZZ:not_found"),
    ("1.0.23.0/24", "火星|0|0|0|0", "1.0.23.7", "ZZ:no_country"),
    ("1.0.24.0/21", "中国|0|四川省|成都市|电信", "1.0.29.7", "CN-SC"),
]
XDB_NEW_V4: list[tuple[str, str, str, str]] = [
    ("1.0.1.0/24", "中国|广东省|深圳市|电信|CN", "1.0.1.7", "CN-GD"),
    ("1.0.2.0/24", "中国|北京|北京市|0|CN", "1.0.2.7", "CN-BJ"),
    ("1.0.3.0/24", "中国|内蒙古|0|0|CN", "1.0.3.7", "CN-NM"),
    ("1.0.4.0/24", "中国|香港特别行政区|0|0|CN", "1.0.4.7", "HK"),
    ("1.0.5.0/24", "中国|台湾省|0|0|CN", "1.0.5.7", "TW"),
    ("1.0.6.0/24", "中国|0|0|0|CN", "1.0.6.7", "CN"),
    ("1.0.7.0/24", "United States|California|0|Google LLC|US", "1.0.7.7", "US"),
    ("1.0.8.0/24", "Japan|Hokkaido|Sapporo|0|JP", "1.0.8.7", "JP"),
    ("1.0.9.0/24", "Hong Kong|0|0|0|HK", "1.0.9.7", "HK"),
    ("1.0.10.0/24", "Australia|Queensland|Brisbane|0|AU", "1.0.10.7", "AU"),
    ("1.0.11.0/24", "Reserved|Reserved|Reserved|0|0", "1.0.11.7", "ZZ:reserved"),
    ("1.0.12.0/24", "0|0|0|0|0", "1.0.12.7", "ZZ:not_found"),
    ("1.0.13.0/24", "Germany|0|0|0|0", "1.0.13.7", "DE"),  # no alpha-2: from the English name
]
XDB_NEW_V6: list[tuple[str, str, str, str]] = [
    ("2400:da00::/32", "中国|上海市|上海市|电信|CN", "2400:da00::1", "CN-SH"),
    ("2400:1000::/32", "United Kingdom|England|London|0|GB", "2400:1000::1", "GB"),
    ("2400:2000::/65", "中国|香港特别行政区|0|0|CN", "2400:2000::1", "HK"),
    ("2400:2000:0:0:8000::/65", "中国|广东省|广州市|0|CN", "2400:2000::8000:0:0:1", "CN-GD"),
    ("2400:3000::/32", "中国|0|0|0|CN", "2400:3000::1", "CN"),
]

# IPIP.net: the free layout (country, region, city) in CN
IPDB_FREE: list[tuple[str, list[str], str, str]] = [
    ("1.0.1.0/24", ["中国", "广东", "深圳"], "1.0.1.7", "CN-GD"),
    ("1.0.2.0/24", ["中国", "内蒙古", ""], "1.0.2.7", "CN-NM"),
    ("1.0.3.0/24", ["中国", "中国", ""], "1.0.3.7", "CN"),
    ("1.0.4.0/24", ["中国", "香港", ""], "1.0.4.7", "HK"),
    ("1.0.5.0/24", ["中国", "台湾", "台北"], "1.0.5.7", "TW"),
    ("1.0.6.0/24", ["日本", "东京都", ""], "1.0.6.7", "JP"),
    ("1.0.7.0/24", ["GOOGLE.COM", "GOOGLE.COM", ""], "1.0.7.7", "ZZ:no_country"),
    ("1.0.8.0/24", ["局域网", "局域网", ""], "1.0.8.7", "ZZ:private"),
    ("1.0.9.0/24", ["保留地址", "保留地址", ""], "1.0.9.7", "ZZ:reserved"),
    ("1.0.16.0/20", ["中国", "浙江", "杭州"], "1.0.20.7", "CN-ZJ"),
    ("2400:da00::/32", ["中国", "上海", "上海"], "2400:da00::1", "CN-SH"),
    ("2400:1000::/32", ["英国", "英格兰", "伦敦"], "2400:1000::1", "GB"),
]


def _paid(country: str, region: str, cc: str, admin: str) -> list[str]:
    row = dict.fromkeys(IPDB_PAID_FIELDS, "")
    row.update(country_name=country, region_name=region, country_code=cc, china_admin_code=admin)
    return [row[f] for f in IPDB_PAID_FIELDS]


# The paid layout, two languages (CN first, EN second): codes from country_code and china_admin_code
IPDB_PAID: list[tuple[str, list[str], str, str]] = [
    (
        "1.0.1.0/24",
        _paid("中国", "广东", "CN", "440300") + _paid("China", "Guangdong", "CN", "440300"),
        "1.0.1.7",
        "CN-GD",
    ),
    (
        "1.0.2.0/24",
        _paid("中国", "", "CN", "320000") + _paid("China", "", "CN", "320000"),
        "1.0.2.7",
        "CN-JS",
    ),
    ("1.0.3.0/24", _paid("中国", "香港", "HK", "") + _paid("China", "Hong Kong", "HK", ""), "1.0.3.7", "HK"),
    (
        "1.0.4.0/24",
        _paid("美国", "加利福尼亚州", "US", "") + _paid("United States", "California", "US", ""),
        "1.0.4.7",
        "US",
    ),
]

# Not in any of the files above
NOT_FOUND_V4 = ("9.9.9.9", "1.0.200.1")


def write_xdb_files(directory: Path, variant: str = "a") -> dict[str, Path]:
    """old.xdb (v2, older layout), v4.xdb and v6.xdb (v3, newer layout). Variant "b" moves the first row of
    each to Sichuan (hot reload)."""

    def rows(table: list[tuple[str, str, str, str]], sichuan: str) -> list[tuple[str, str]]:
        out = [(net, region) for net, region, _ip, _want in table]
        if variant == "b":
            out[0] = (out[0][0], sichuan)
        return out

    created = CREATED_AT if variant == "a" else CREATED_AT_B
    return {
        "old": write_xdb(
            directory / "old.xdb",
            segments_from_networks(rows(XDB_OLD, "中国|0|四川省|0|0")),
            version=2,
            created_at=created,
        ),
        "v4": write_xdb(
            directory / "v4.xdb",
            segments_from_networks(rows(XDB_NEW_V4, "中国|四川省|0|0|CN")),
            version=3,
            created_at=created,
        ),
        "v6": write_xdb(
            directory / "v6.xdb",
            segments_from_networks(rows(XDB_NEW_V6, "中国|四川省|0|0|CN")),
            family=6,
            version=3,
            created_at=created,
        ),
    }


def write_ipdb_files(directory: Path, variant: str = "a") -> dict[str, Path]:
    """free.ipdb (IPv4 and IPv6) and paid.ipdb (IPv4, CN and EN). Variant "b": first row → Sichuan."""
    free = [(net, vals) for net, vals, _ip, _want in IPDB_FREE]
    paid = [(net, vals) for net, vals, _ip, _want in IPDB_PAID]
    if variant == "b":
        free[0] = (free[0][0], ["中国", "四川", "成都"])
    build = CREATED_AT if variant == "a" else CREATED_AT_B
    return {
        "free": write_ipdb(directory / "free.ipdb", free, ip_version=3, build=build),
        "paid": write_ipdb(
            directory / "paid.ipdb", paid, fields=IPDB_PAID_FIELDS, languages=("CN", "EN"), build=build
        ),
    }
