"""The territory label (IP属地): pure functions from a GeoIP location to what the platforms display.

No Faust, no Kafka, no I/O. See ../README.md "The territory label" for the rules.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_network
from typing import Final, Literal, NamedTuple, get_args

import msgspec

from streams.pipeline.countries import COUNTRIES

Scope = Literal["domestic", "special_region", "overseas", "unknown"]
SCOPES: Final[tuple[Scope, ...]] = ("domestic", "special_region", "overseas", "unknown")

# Why a lookup ended as unknown. A fixed vocabulary: it is a metric label.
UnknownReason = Literal[
    "not_found",  # the database has no network for the address
    "no_country",  # the database has the network but no country for it
    "private",  # RFC 1918, fc00::/7
    "loopback",
    "link_local",
    "shared",  # carrier-grade NAT, 100.64.0.0/10
    "documentation",  # TEST-NETs, 2001:db8::/32
    "multicast",
    "unspecified",
    "reserved",  # every other special-purpose range
    "db_error",  # the database raised while reading the record
]
UNKNOWN_REASONS: Final[tuple[UnknownReason, ...]] = get_args(UnknownReason)  # a metric label's vocabulary


class Territory(msgspec.Struct, frozen=True, gc=False):
    """What an enriched comment carries and the platforms show."""

    code: str  # CN-GD, CN, HK, US, ZZ ...
    name_zh: str
    name_en: str
    scope: Scope
    country_code: str | None  # ISO 3166-1 alpha-2; None when unknown


class Location(NamedTuple):
    """A database record reduced to what labelling needs; every database adapter produces one.

    A NamedTuple, not a dataclass: ``label_location`` memoises on it, and a tuple hashes in C (a frozen
    dataclass's ``__hash__`` is Python code, half a microsecond per cache miss).
    """

    country_code: str | None
    country_name_zh: str | None = None
    country_name_en: str | None = None
    subdivision_code: str | None = None  # as the database spells it: "GD", "44", "CN-GD", None
    subdivision_name_zh: str | None = None
    subdivision_name_en: str | None = None


class Label(msgspec.Struct, frozen=True, gc=False):
    """A territory plus, when it is unknown, why."""

    territory: Territory
    reason: UnknownReason | None = None


UNKNOWN: Final = Territory(code="ZZ", name_zh="未知", name_en="Unknown", scope="unknown", country_code=None)


# ----------------------------------------------------------------------------------------------------
# The divisions: one table, every lookup below is derived from it at import.
# ----------------------------------------------------------------------------------------------------

DivisionKind = Literal["municipality", "province", "autonomous region", "special region"]


@dataclass(frozen=True, slots=True)
class Division:
    """A province-level division of mainland China, or Hong Kong / Macau / Taiwan (kind "special region").

    ``zh_variants`` and ``en_variants`` are the spellings databases use besides ``name_zh``/``name_en``;
    lookups also strip the usual suffixes (省 市 自治区 …, Sheng Shi Zizhiqu Province …), so the lists hold
    the forms that suffix stripping alone does not reach, plus the common full forms for the tests.
    """

    iso: str  # ISO 3166-2:CN since 2017: CN-GD; CN-HK for the special regions
    gb: tuple[str, ...]  # GB/T 2260 (= pre-2017 ISO 3166-2:CN numeric): ("44",)
    name_zh: str  # the short display form: 广东, 内蒙古, 中国香港
    name_en: str
    kind: DivisionKind
    zh_variants: tuple[str, ...] = ()
    en_variants: tuple[str, ...] = ()

    @property
    def territory(self) -> Territory:
        if self.kind == "special region":
            code = self.iso[3:]
            return Territory(code, self.name_zh, self.name_en, "special_region", code)
        return Territory(self.iso, self.name_zh, self.name_en, "domestic", "CN")


def _p(iso: str, gb: str, zh: str, en: str, kind: DivisionKind, full_zh: str, *en_variants: str) -> Division:
    return Division(iso, (gb,), zh, en, kind, (full_zh,), en_variants)


DIVISIONS: Final[tuple[Division, ...]] = (
    _p("CN-BJ", "11", "北京", "Beijing", "municipality", "北京市", "Beijing Shi", "Peking"),
    _p("CN-TJ", "12", "天津", "Tianjin", "municipality", "天津市", "Tianjin Shi"),
    _p("CN-HE", "13", "河北", "Hebei", "province", "河北省", "Hebei Sheng"),
    _p("CN-SX", "14", "山西", "Shanxi", "province", "山西省", "Shanxi Sheng"),
    _p(
        "CN-NM",
        "15",
        "内蒙古",
        "Inner Mongolia",
        "autonomous region",
        "内蒙古自治区",
        "Nei Mongol",
        "Nei Menggu",
        "Nei Mongol Zizhiqu",
        "Inner Mongolia Autonomous Region",
    ),
    _p("CN-LN", "21", "辽宁", "Liaoning", "province", "辽宁省", "Liaoning Sheng"),
    _p("CN-JL", "22", "吉林", "Jilin", "province", "吉林省", "Jilin Sheng"),
    _p("CN-HL", "23", "黑龙江", "Heilongjiang", "province", "黑龙江省", "Heilongjiang Sheng"),
    _p("CN-SH", "31", "上海", "Shanghai", "municipality", "上海市", "Shanghai Shi"),
    _p("CN-JS", "32", "江苏", "Jiangsu", "province", "江苏省", "Jiangsu Sheng"),
    _p("CN-ZJ", "33", "浙江", "Zhejiang", "province", "浙江省", "Zhejiang Sheng"),
    _p("CN-AH", "34", "安徽", "Anhui", "province", "安徽省", "Anhui Sheng"),
    _p("CN-FJ", "35", "福建", "Fujian", "province", "福建省", "Fujian Sheng"),
    _p("CN-JX", "36", "江西", "Jiangxi", "province", "江西省", "Jiangxi Sheng"),
    _p("CN-SD", "37", "山东", "Shandong", "province", "山东省", "Shandong Sheng"),
    _p("CN-HA", "41", "河南", "Henan", "province", "河南省", "Henan Sheng"),
    _p("CN-HB", "42", "湖北", "Hubei", "province", "湖北省", "Hubei Sheng"),
    _p("CN-HN", "43", "湖南", "Hunan", "province", "湖南省", "Hunan Sheng"),
    _p("CN-GD", "44", "广东", "Guangdong", "province", "广东省", "Guangdong Sheng", "Kwangtung"),
    _p(
        "CN-GX",
        "45",
        "广西",
        "Guangxi",
        "autonomous region",
        "广西壮族自治区",
        "Guangxi Zhuangzu Zizhiqu",
        "Guangxi Zhuang Autonomous Region",
    ),
    _p("CN-HI", "46", "海南", "Hainan", "province", "海南省", "Hainan Sheng"),
    _p("CN-CQ", "50", "重庆", "Chongqing", "municipality", "重庆市", "Chongqing Shi"),
    _p("CN-SC", "51", "四川", "Sichuan", "province", "四川省", "Sichuan Sheng"),
    _p("CN-GZ", "52", "贵州", "Guizhou", "province", "贵州省", "Guizhou Sheng"),
    _p("CN-YN", "53", "云南", "Yunnan", "province", "云南省", "Yunnan Sheng"),
    _p(
        "CN-XZ",
        "54",
        "西藏",
        "Tibet",
        "autonomous region",
        "西藏自治区",
        "Xizang",
        "Xizang Zizhiqu",
        "Tibet Autonomous Region",
    ),
    _p("CN-SN", "61", "陕西", "Shaanxi", "province", "陕西省", "Shaanxi Sheng"),
    _p("CN-GS", "62", "甘肃", "Gansu", "province", "甘肃省", "Gansu Sheng"),
    _p("CN-QH", "63", "青海", "Qinghai", "province", "青海省", "Qinghai Sheng"),
    _p(
        "CN-NX",
        "64",
        "宁夏",
        "Ningxia",
        "autonomous region",
        "宁夏回族自治区",
        "Ningxia Huizu Zizhiqu",
        "Ningxia Hui Autonomous Region",
    ),
    _p(
        "CN-XJ",
        "65",
        "新疆",
        "Xinjiang",
        "autonomous region",
        "新疆维吾尔自治区",
        "Xinjiang Uygur Zizhiqu",
        "Xinjiang Uyghur Autonomous Region",
    ),
    Division(
        "CN-HK",
        ("81", "91"),
        "中国香港",
        "Hong Kong",
        "special region",
        ("香港", "香港特别行政区", "中国香港特别行政区"),
        ("Hong Kong SAR", "Xianggang", "HongKong"),
    ),
    Division(
        "CN-MO",
        ("82", "92"),
        "中国澳门",
        "Macau",
        "special region",
        ("澳门", "澳门特别行政区", "中国澳门特别行政区"),
        ("Macao", "Macau SAR", "Macao SAR", "Aomen"),
    ),
    Division("CN-TW", ("71",), "中国台湾", "Taiwan", "special region", ("台湾", "台湾省"), ("Taiwan Sheng",)),
)
PROVINCES: Final[tuple[Division, ...]] = tuple(d for d in DIVISIONS if d.kind != "special region")
SPECIAL_REGIONS: Final[tuple[Division, ...]] = tuple(d for d in DIVISIONS if d.kind == "special region")

CHINA: Final = Territory(code="CN", name_zh="中国", name_en="China", scope="domestic", country_code="CN")

_ZH_SUFFIXES: Final = ("特别行政区", "自治区", "省", "市", "壮族", "回族", "维吾尔")
_EN_SUFFIXES: Final = (
    " special administrative region", " autonomous region", " province", " municipality", " sar",
    " zizhiqu", " sheng", " shi", " zhuangzu", " zhuang", " huizu", " hui", " uygur", " uyghur",
)  # fmt: skip


def _norm_code(code: str) -> str:
    c = code.strip().upper()
    if c.startswith(("CN-", "CN_")):
        c = c[3:]
    if len(c) == 6 and c.isdigit() and c.endswith("0000"):  # six-digit GB/T 2260 form: 440000
        c = c[:2]
    return c


def _norm_zh(name: str) -> str:
    n = "".join(name.split())
    if n.startswith("中国") and len(n) > 2:
        n = n[2:]
    changed = True
    while changed:
        changed = False
        for s in _ZH_SUFFIXES:
            if n.endswith(s) and len(n) > len(s):
                n = n[: -len(s)]
                changed = True
    return n


def _norm_en(name: str) -> str:
    n = " ".join(name.replace("-", " ").replace("_", " ").replace("'", "").casefold().split())
    changed = True
    while changed:
        changed = False
        for s in _EN_SUFFIXES:
            if n.endswith(s) and len(n) > len(s):
                n = n[: -len(s)]
                changed = True
    return n


def _build_index() -> tuple[dict[str, Division], dict[str, Division], dict[str, Division]]:
    by_code: dict[str, Division] = {}
    by_zh: dict[str, Division] = {}
    by_en: dict[str, Division] = {}

    def put(index: dict[str, Division], key: str, d: Division) -> None:
        if index.setdefault(key, d) is not d:
            raise AssertionError(f"ambiguous division key {key!r}")

    for d in DIVISIONS:
        put(by_code, _norm_code(d.iso), d)
        for gb in d.gb:
            put(by_code, gb, d)
        for zh in (d.name_zh, *d.zh_variants):
            put(by_zh, _norm_zh(zh), d)
        for en in (d.name_en, *d.en_variants):
            put(by_en, _norm_en(en), d)
    return by_code, by_zh, by_en


_BY_CODE, _BY_ZH, _BY_EN = _build_index()


def find_division(
    code: str | None = None, name_zh: str | None = None, name_en: str | None = None
) -> Division | None:
    """The division a database's subdivision denotes: a recognised code first, else the zh name, else en."""
    if code:
        d = _BY_CODE.get(_norm_code(code))
        if d is not None:
            return d
    if name_zh:
        d = _BY_ZH.get(_norm_zh(name_zh))
        if d is not None:
            return d
    if name_en:
        return _BY_EN.get(_norm_en(name_en))
    return None


# ----------------------------------------------------------------------------------------------------
# Addresses
# ----------------------------------------------------------------------------------------------------

_MAX_TEXT = 100  # longer than any IPv6 text with a sane scope id
_ECHO = 40  # at most this much of a bad input goes into an error message
_SCOPE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class InvalidIP(ValueError):  # noqa: N818 - the name the callers use
    """The text is not an IP address in the strict form shudi accepts. The message truncates the input."""


def _shorten(text: str) -> str:
    """A printable, bounded rendering of bad input for error messages (at most ~80 characters)."""
    r = repr(text[:_ECHO])
    if len(r) > _ECHO + 20:
        r = r[: _ECHO + 20] + "…"
    return r if len(text) <= _ECHO else f"{r}… ({len(text)} chars)"


_OCTET: Final = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # 0-255, no leading zero
_DOTTED_QUAD: Final = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}").fullmatch
# Only ever given text _DOTTED_QUAD accepted, so its leniency (127.1, 0x7f.1) never applies.
_inet_aton: Final = socket.inet_aton


def parse_ip(text: str) -> IPv4Address | IPv6Address:
    """Parse an address strictly, with :mod:`ipaddress`; never resolve it.

    Accepted: dotted-quad IPv4 (no leading zeros, exactly four parts), any IPv6 text form, IPv6 with a
    ``%scope`` of ``[A-Za-z0-9_.-]``. An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) is returned as its IPv4
    address. Rejected with :class:`InvalidIP`: empty text, any whitespace (also around the address: callers
    strip if they want to, this function does not guess), non-ASCII, prefixes (``1.2.3.4/24``), ports,
    brackets, shorthand such as ``127.1`` or ``1.2.3``, octal-looking ``010.0.0.1``.
    """
    if _DOTTED_QUAD(text) is not None:  # the common case, in a third of the time of the checks below
        return IPv4Address(int.from_bytes(_inet_aton(text)))
    if not text:
        raise InvalidIP("empty address")
    if len(text) > _MAX_TEXT:
        raise InvalidIP(f"not an IP address: {_shorten(text)}")
    if not text.isascii() or not text.isprintable() or " " in text:
        raise InvalidIP(f"not an IP address (whitespace or non-ASCII): {_shorten(text)}")
    parts = text.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        # Four numbers that are not a dotted quad: leading zeros (octal to some parsers) or over 255.
        raise InvalidIP(f"not an IP address: {_shorten(text)}")
    if "%" in text and not set(text.partition("%")[2]) <= _SCOPE_CHARS:
        raise InvalidIP(f"bad IPv6 scope id: {_shorten(text)}")
    try:
        if ":" in text:
            ip6 = IPv6Address(text)
            mapped = ip6.ipv4_mapped
            return ip6 if mapped is None else mapped
        return IPv4Address(text)
    except ValueError:
        # ipaddress's message echoes the whole input; ours does not, and does not chain it
        raise InvalidIP(f"not an IP address: {_shorten(text)}") from None


_6TO4: Final = IPv6Network("2002::/16")
_TEREDO: Final = IPv6Network("2001::/32")


def unwrap_tunnel(ip: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    """The IPv4 address a 6to4 (2002::/16) or Teredo (2001::/32) address carries, else ``ip`` itself.

    Decision: these are labelled as the client's public IPv4 address they embed (6to4: bits 16-48; Teredo:
    the de-obfuscated client address), the way MaxMind aliases 2002::/16 onto the IPv4 tree. Both are
    near-extinct, so this matters little; it beats calling a real client "reserved".
    """
    if ip.version == 6:
        assert isinstance(ip, IPv6Address)
        v4 = ip.sixtofour
        if v4 is not None:
            return v4
        teredo = ip.teredo
        if teredo is not None:
            return teredo[1]
    return ip


def _ranges(*spec: tuple[str, UnknownReason]) -> tuple[tuple[int, int, UnknownReason], ...]:
    out = []
    for cidr, reason in spec:
        net = ip_network(cidr)
        out.append((int(net.network_address), int(net.broadcast_address), reason))
    return tuple(out)


# First match wins, so the specific entries come before the ranges that contain them. From the IANA
# special-purpose address registries (not ipaddress's is_* flags, which changed between Python versions).
_SPECIAL_V4: Final = _ranges(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),  # "this network"
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),  # benchmarking
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255
)
_SPECIAL_V6: Final = _ranges(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),  # RFC 9637
    ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo is unwrapped before this)
    ("fc00::/7", "private"),  # unique local
    ("fe80::/10", "link_local"),
    ("fec0::/10", "private"),  # deprecated site-local
    ("ff00::/8", "multicast"),
)
_GLOBAL_UNICAST_V6: Final = IPv6Network("2000::/3")
# For each first octet: can an address starting with it be special? Most cannot; skip the scan for those.
_V4_FIRST_OCTET_SPECIAL: Final = tuple(
    any(lo >> 24 <= octet <= hi >> 24 for lo, hi, _ in _SPECIAL_V4) for octet in range(256)
)


def public_v4(text: str) -> bool:
    """Whether ``text`` is a dotted-quad IPv4 address that no special range can hold (checked on its first
    octet only): its label is then the database's alone, and :func:`parse_ip` and :func:`special_reason`
    would accept it and return None. The cache-miss fast path, for most addresses in real traffic."""
    return _DOTTED_QUAD(text) is not None and not _V4_FIRST_OCTET_SPECIAL[_inet_aton(text)[0]]


def special_reason(ip: IPv4Address | IPv6Address) -> UnknownReason | None:
    """Why ``ip`` has no territory whatever the database says, or None for an ordinary public address.

    IPv6 outside 2000::/3 that no entry names (::/8 leftovers, 64:ff9b::/96 NAT64, 100::/64 ...) is
    "reserved". 6to4 and Teredo addresses are judged by the IPv4 address they embed (see unwrap_tunnel).
    """
    ip = unwrap_tunnel(ip)
    n = int(ip)
    if ip.version == 4:
        if not _V4_FIRST_OCTET_SPECIAL[n >> 24]:
            return None
        table = _SPECIAL_V4
    else:
        table = _SPECIAL_V6
    for lo, hi, reason in table:
        if lo <= n <= hi:
            return reason
    if ip.version == 6 and ip not in _GLOBAL_UNICAST_V6:
        return "reserved"
    return None


# ----------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------

UNKNOWN_LABELS: Final[dict[UnknownReason, Label]] = {r: Label(UNKNOWN, r) for r in get_args(UnknownReason)}
_DIVISION_LABELS: Final[dict[str, Label]] = {d.iso: Label(d.territory) for d in DIVISIONS}
_CHINA_LABEL: Final = Label(CHINA)
_SPECIAL_BY_COUNTRY: Final[dict[str, Label]] = {d.iso[3:]: _DIVISION_LABELS[d.iso] for d in SPECIAL_REGIONS}
_MEMO: dict[Location, Label] = {}
_MEMO_MAX = 65_536  # distinct records a database yields are few (countries x subdivisions); bound it anyway


def _label(loc: Location) -> Label:
    cc = loc.country_code
    if not cc:
        return UNKNOWN_LABELS["no_country"]
    cc = cc.strip().upper()
    if len(cc) != 2 or not cc.isascii() or not cc.isalpha():
        return UNKNOWN_LABELS["no_country"]
    special = _SPECIAL_BY_COUNTRY.get(cc)
    if special is not None:
        return special
    if cc == "CN":
        d = find_division(loc.subdivision_code, loc.subdivision_name_zh, loc.subdivision_name_en)
        return _CHINA_LABEL if d is None else _DIVISION_LABELS[d.iso]
    table_zh, table_en = COUNTRIES.get(cc, (cc, cc))
    zh = (loc.country_name_zh or "").strip() or table_zh
    en = (loc.country_name_en or "").strip() or table_en
    return Label(Territory(cc, zh, en, "overseas", cc))


def label_location(loc: Location | None) -> Label:
    """The label for a database record (None: the database has no network for the address).

    Memoised per distinct Location, so it costs one dict lookup in the steady state.
    """
    if loc is None:
        return UNKNOWN_LABELS["not_found"]
    label = _MEMO.get(loc)
    if label is None:
        label = _label(loc)
        if len(_MEMO) < _MEMO_MAX:
            _MEMO[loc] = label
    return label
