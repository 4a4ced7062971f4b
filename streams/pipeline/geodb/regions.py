"""Region strings of the Chinese databases (ip2region xdb, IPIP.net ipdb) → shudi labels.

ip2region gives one ``|``-separated string per range, in one of two layouts:

- older (xdb files before 2025): ``国家|区域|省份|城市|ISP``, e.g. ``中国|0|广东省|深圳市|电信``,
  ``日本|0|北海道|0|0``, ``0|0|0|内网IP|内网IP``;
- newer (2025 on): ``国家|省份|城市|ISP|alpha2``, e.g. ``中国|广东省|深圳市|电信|CN``,
  ``United States|California|0|Google LLC|US``, ``Reserved|Reserved|Reserved|0|0``.

``0`` (or an empty field) means unknown. Which layout a file uses is decided once per file from all its
strings (:func:`detect_layout`), not per string: ``中国|0|0|0|0`` reads the same either way, but a short ISP
such as ``HE`` must not pass for an alpha-2 code in an old file.

IPIP.net gives named fields (``country_name``, ``region_name``, and in the paid editions ``country_code``
and ``china_admin_code``); :func:`ipdb_label` reads those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal

from streams.pipeline.countries import country_code
from streams.pipeline.territory import (
    UNKNOWN_LABELS,
    Label,
    Location,
    UnknownReason,
    label_location,
)

Layout = Literal["old", "new"]

# Words the databases put where a place name would be, for addresses that have no place. Matched on whole
# fields, case-insensitively. An address in a special range never reaches the database (the table lays the
# special ranges over every database), so these matter only for rows covering public addresses.
_NOT_A_PLACE: Final[dict[str, UnknownReason]] = {
    "内网ip": "private", "局域网": "private", "内网": "private", "私有地址": "private", "private": "private",
    "lan": "private", "本机地址": "loopback", "本地": "loopback", "回环地址": "loopback",
    "loopback": "loopback",
    "共享地址": "shared", "运营商级nat": "shared", "链路本地地址": "link_local", "组播": "multicast",
    "多播": "multicast", "组播地址": "multicast", "multicast": "multicast", "保留地址": "reserved",
    "保留": "reserved", "reserved": "reserved", "iana": "reserved", "iana保留地址": "reserved",
    "iana机构": "reserved", "未分配": "reserved", "未分配或者内网ip": "private",
}  # fmt: skip
_EMPTY: Final = frozenset({"", "0", "-", "*", "未知", "unknown", "null", "none"})
_ALPHA2: Final = re.compile(r"[A-Za-z]{2}").fullmatch
_NOT_FOUND: Final = UNKNOWN_LABELS["not_found"]
_NO_COUNTRY: Final = UNKNOWN_LABELS["no_country"]


def _field(parts: list[str], i: int) -> str | None:
    if i >= len(parts):
        return None
    v = parts[i].strip()
    return None if v.casefold() in _EMPTY else v


def _not_a_place(fields: Iterable[str | None]) -> UnknownReason | None:
    for f in fields:
        if f is not None:
            reason = _NOT_A_PLACE.get(f.casefold())
            if reason is not None:
                return reason
    return None


def detect_layout(regions: Iterable[str]) -> Layout:
    """The layout of a file's region strings: ``new`` when most fifth fields that say anything are alpha-2
    codes. A file with nothing in any fifth field is read as ``new`` unless its Chinese rows leave the second
    field (the old 区域) empty and name a province in the third."""
    alpha2 = other = old_cn = new_cn = 0
    for region in regions:
        parts = region.split("|")
        fifth = _field(parts, 4)
        if fifth is not None:
            if _ALPHA2(fifth) and country_code(fifth) is not None:
                alpha2 += 1
            else:
                other += 1
        if _field(parts, 0) == "中国":
            if _field(parts, 1) is None and _field(parts, 2) is not None:
                old_cn += 1
            elif _field(parts, 1) is not None:
                new_cn += 1
    if alpha2 or other:
        return "new" if alpha2 >= other else "old"
    return "old" if old_cn > new_cn else "new"


def _place(
    country: str | None, province: str | None, alpha2: str | None, admin_code: str | None = None
) -> Label:
    cc = None
    if alpha2 is not None and _ALPHA2(alpha2):
        cc = alpha2.upper()
    if cc is None and country is not None:
        cc = country_code(country)
    if cc is None:
        return _NO_COUNTRY
    if cc == "CN":
        zh = en = None
        if province is not None:
            if province.isascii():
                en = province
            else:
                zh = province
        return label_location(Location("CN", subdivision_code=admin_code, subdivision_name_zh=zh,
                                       subdivision_name_en=en))  # fmt: skip
    # The databases' own country names are long forms or English; the platforms show the short Chinese name,
    # which the built-in table has.
    return label_location(Location(cc))


def xdb_label(region: str, layout: Layout) -> Label:
    """The label of one ip2region region string; ``not_found`` for a row naming nothing (``0|0|0|0|0``)."""
    parts = region.split("|")
    country = _field(parts, 0)
    if layout == "new":
        province, alpha2 = _field(parts, 1), _field(parts, 4)
    else:
        province, alpha2 = _field(parts, 2), None
    reason = _not_a_place(
        [country, province, alpha2, *(_field(parts, i) for i in range(1, min(len(parts), 5)))]
    )
    if country is not None and reason is not None and country_code(country) is None:
        return UNKNOWN_LABELS[reason]
    if country is None and alpha2 is None:
        return _NOT_FOUND if reason is None else UNKNOWN_LABELS[reason]
    return _place(country, province, alpha2)


def _admin_province(code: str | None) -> str | None:
    # china_admin_code is the GB/T 2260 code of the finest known division (440300 for Shenzhen); its first
    # two digits are the province's.
    if code is None or len(code) < 2 or not code[:2].isdigit():
        return None
    return code[:2]


def ipdb_label(fields: dict[str, str]) -> Label:
    """The label of one IPIP.net record (its fields in the chosen language)."""
    country = fields.get("country_name", "").strip() or None
    province = fields.get("region_name", "").strip() or None
    if province is not None and (province.casefold() in _EMPTY or province == country):
        province = None  # IPIP repeats the country name when it knows no region: 中国\t中国
    alpha2 = fields.get("country_code", "").strip() or None
    if alpha2 is not None and not (_ALPHA2(alpha2) and country_code(alpha2) is not None):
        alpha2 = None
    if country is None or country.casefold() in _EMPTY:
        if alpha2 is None:
            return _NOT_FOUND
        country = None
    elif alpha2 is None and country_code(country) is None:
        reason = _not_a_place([country, province])
        return _NO_COUNTRY if reason is None else UNKNOWN_LABELS[reason]
    return _place(
        country, province, alpha2, _admin_province(fields.get("china_admin_code", "").strip() or None)
    )
