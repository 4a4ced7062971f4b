"""The territory label (IP属地): pure functions from a GeoIP location to what the platforms display.

No Faust, no Kafka, no I/O. See ../README.md "The territory label" for the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import msgspec

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


class Territory(msgspec.Struct, frozen=True, gc=False):
    """What an enriched comment carries and the platforms show."""

    code: str  # CN-GD, CN, HK, US, ZZ ...
    name_zh: str
    name_en: str
    scope: Scope
    country_code: str | None  # ISO 3166-1 alpha-2; None when unknown


@dataclass(frozen=True, slots=True)
class Location:
    """A database record reduced to what labelling needs; every database adapter produces one."""

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
