"""Realistic comment traffic with ground truth, for ``shudi simulate`` and for testing burst detection.

Pure: no Kafka, no wall clock. Deterministic for a seed (and a start time): the same
:class:`SimConfig`, pool and bursts give the same events, byte for byte.

The model
---------
* **Where**: :class:`TerritoryPool` reads a GeoIP database's own networks and groups them by the territory
  their record labels as (``CN-GD``, ``CN``, ``HK``, ``US`` …; never ``ZZ``), so an address drawn for a
  territory labels back to it with the same database. Works with any City database, including a real
  GeoLite2 file: it stores ``(start, size)`` ranges, at most ``max_networks`` per territory and address
  family (a uniform reservoir sample beyond that), never addresses.
* **How much**: a territory's base rate is the total rate times its share, where shares come from
  :data:`WEIGHTS` (roughly internet users; provinces dominate) restricted to the territories the database
  has and renormalised. The total base rate is ``rate / speedup`` events per *simulated* second, averaged
  over a day, i.e. ``rate`` events per wall second once paced at ``speedup`` simulated seconds per wall
  second. A :class:`DailyCycle` (trough 04:00, peak 21:00 Asia/Shanghai, peak/trough ``peak_ratio``, mean 1)
  modulates it; counts per (territory, time step) are Poisson, optionally over-dispersed by a gamma
  multiplier with mean 1 and variance ``dispersion`` (gamma-Poisson, i.e. negative binomial).
* **Who**: each territory has a Zipf-like population of users (a few post a lot). Most users keep one
  stable address; the others (mobile) rotate among a few. Posts have Zipf-like popularity.
* **Bad events**: a fraction ``bad_fraction`` of base events is replaced by a malformed one of
  :func:`streams.devtools.sample.bad_event`, cycling through its kinds, so every dead-letter reason shows up.
* **Bursts** (:class:`Burst`): during ``[start, end)`` a territory's rate is ``multiplier`` × its base rate;
  the extra comments (``(multiplier - 1)`` × base) go to the burst's ``post_ids`` with probability
  ``concentration`` (else to ordinary posts) and come from users drawn uniformly from the territory's
  population (many distinct people piling in). Extra comments are never malformed, so the ground truth
  counts are exact. Bursts come from a file (:func:`load_bursts`) or from a seed (:func:`random_bursts`).

Burst file format
-----------------
JSON lines (one object per line; blank lines and lines starting with ``#`` are ignored) or one JSON list
of the same objects::

    {"territory": "CN-GD", "start": 600, "duration": 300, "multiplier": 8, "post_ids": ["p-hot-1"]}
    {"territory": "HK", "start": "2026-11-25T21:30:00+08:00", "end": "2026-11-25T21:45:00+08:00",
     "multiplier": 20, "post_ids": ["p-hot-2", "p-hot-3"], "concentration": 0.9}

``territory`` (required): a label code as shudi writes it (``CN-GD``, ``CN``, ``HK``, ``MO``, ``TW``,
``US`` …), and it must be in the database. ``start`` (required): simulated seconds after the simulation
start (a number), or an RFC 3339 event time (a string). ``duration`` (seconds) or ``end`` (same forms as
``start``): exactly one. ``multiplier`` (required, ≥ 1): relative to the territory's base rate at that
time of day. ``post_ids`` (optional; default two generated ids ``burst<i>-p<k>``). ``concentration``
(optional, 0–1, default 0.8): the share of the extra comments that go to ``post_ids``. Unknown keys are an
error. The ground truth (:meth:`Simulation.truth`) is one JSON object per burst: ``territory``, ``start``,
``end`` (RFC 3339, +08:00), ``multiplier``, ``post_ids``, ``expected_extra`` (the expected number of extra
valid comments in the window) and, once the run is over, ``emitted_extra``/``emitted_on_posts``.
"""

from __future__ import annotations

import json
import math
import os
import random
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Final

import msgspec

from streams.devtools.sample import bad_event, comment, comment_text
from streams.pipeline.events import post_id_key
from streams.pipeline.geodb.table import TerritoryTable
from streams.pipeline.territory import Territory, special_reason, unwrap_tunnel

__all__ = [
    "OTHER_WEIGHT",
    "TZ_CN",
    "WEIGHTS",
    "Burst",
    "BurstFileError",
    "DailyCycle",
    "SimConfig",
    "SimEvent",
    "Simulation",
    "TerritoryPool",
    "load_bursts",
    "parse_bursts",
    "parse_time",
    "random_bursts",
    "rfc3339",
    "territory_shares",
    "write_jsonl",
]

TZ_CN: Final = timezone(timedelta(hours=8), "Asia/Shanghai")  # no DST since 1991: a fixed offset is exact

# Relative traffic weights, roughly internet users in millions. Provinces: resident population (2020
# census, National Bureau of Statistics) times an internet penetration of ~65-80 % (CNNIC's statistical
# reports, provincial figures), rounded; approximate on purpose — it only has to look plausible.
# "CN" stands for mainland networks a database places in no province. HK/MO/TW and overseas: the much
# smaller audience of a mainland platform there (guesses in proportion to diaspora and visitors).
WEIGHTS: Final[Mapping[str, float]] = {
    "CN-GD": 110, "CN-HA": 75, "CN-SD": 78, "CN-JS": 70, "CN-ZJ": 60, "CN-SC": 62, "CN-HE": 56,
    "CN-HN": 50, "CN-HB": 45, "CN-AH": 45, "CN-FJ": 35, "CN-GX": 36, "CN-YN": 33, "CN-JX": 32,
    "CN-LN": 33, "CN-SN": 31, "CN-SX": 27, "CN-GZ": 28, "CN-CQ": 25, "CN-HL": 23, "CN-BJ": 20,
    "CN-SH": 22, "CN-JL": 17, "CN-NM": 18, "CN-XJ": 18, "CN-GS": 17, "CN-TJ": 12, "CN-HI": 8,
    "CN-NX": 5, "CN-QH": 4.5, "CN-XZ": 2.8,
    "CN": 30,
    "HK": 5, "TW": 3, "MO": 0.6,
    "US": 8, "JP": 3, "KR": 2, "SG": 2, "GB": 2, "AU": 2, "CA": 2, "MY": 2, "DE": 1, "FR": 1,
    "RU": 0.8, "TH": 0.8, "NZ": 0.6, "VN": 0.6, "IT": 0.5, "ID": 0.5, "ES": 0.4, "NL": 0.4,
    "AE": 0.3, "IN": 0.3, "PH": 0.3, "BR": 0.2, "SE": 0.2, "CH": 0.2, "TR": 0.1,
}  # fmt: skip
OTHER_WEIGHT: Final = 0.05  # any other country the database has


def territory_shares(
    codes: Iterable[str], weights: Mapping[str, float] | None = None, other_weight: float = OTHER_WEIGHT
) -> dict[str, float]:
    """Each code's share of the traffic (summing to 1): ``weights`` (default :data:`WEIGHTS`), else
    ``other_weight``, renormalised over ``codes``. Codes with weight 0 are left out."""
    table = WEIGHTS if weights is None else weights
    raw = {c: float(table.get(c, other_weight)) for c in sorted(set(codes))}
    raw = {c: w for c, w in raw.items() if w > 0}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError("no territory has a positive weight")
    return {c: w / total for c, w in raw.items()}


# ------------------------------------------------------------------------------------------------------------
# Times
# ------------------------------------------------------------------------------------------------------------


def rfc3339(when: datetime) -> str:
    """RFC 3339 text at +08:00 with milliseconds, the form ``created_at`` uses."""
    return when.astimezone(TZ_CN).isoformat(timespec="milliseconds")


def parse_time(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 date-time; one without an offset is taken as Asia/Shanghai time."""
    when = datetime.fromisoformat(text.strip())
    return when.replace(tzinfo=TZ_CN) if when.tzinfo is None else when


@dataclass(frozen=True, slots=True)
class DailyCycle:
    """Relative activity over the day in Asia/Shanghai: ``trough`` at ``trough_hour``, ``peak`` at
    ``peak_hour``, half-cosine ramps between them, peak/trough = ``ratio``, mean exactly 1 over a day."""

    ratio: float = 5.0
    trough_hour: float = 4.0
    peak_hour: float = 21.0

    def __post_init__(self) -> None:
        if self.ratio < 1:
            raise ValueError("peak/trough ratio must be at least 1")
        if not 0 <= self.trough_hour < self.peak_hour < 24:
            raise ValueError("need 0 <= trough_hour < peak_hour < 24")

    @property
    def trough(self) -> float:
        return 2.0 / (1.0 + self.ratio)  # each half-cosine ramp averages (lo + hi) / 2, so the day does

    @property
    def peak(self) -> float:
        return 2.0 * self.ratio / (1.0 + self.ratio)

    def __call__(self, epoch_s: float) -> float:
        """The multiplier at ``epoch_s`` (seconds since the Unix epoch)."""
        hour = ((epoch_s + 8 * 3600) % 86_400) / 3600
        rise = self.peak_hour - self.trough_hour
        if self.trough_hour <= hour < self.peak_hour:
            phase = (hour - self.trough_hour) / rise
        else:
            phase = 1.0 - ((hour - self.peak_hour) % 24) / (24 - rise)
        lo, hi = self.trough, self.peak
        return lo + (hi - lo) * (1.0 - math.cos(math.pi * phase)) / 2.0


# ------------------------------------------------------------------------------------------------------------
# Addresses: the territory pool
# ------------------------------------------------------------------------------------------------------------

_M64: Final = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


_GLOBAL_V6: Final = IPv6Network("2000::/3")
_TUNNELS_V6: Final = (IPv6Network("2002::/16"), IPv6Network("2001::/32"))  # labelled by the IPv4 inside


class _Ranges:
    """One territory's networks of one family: a bounded uniform sample of (start, prefix length)."""

    __slots__ = ("_cum", "bits", "prefixes", "seen", "starts_hi", "starts_lo")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.starts_hi = array("Q")  # IPv6 only: the upper 64 bits
        self.starts_lo = array("Q")
        self.prefixes = array("B")
        self.seen = 0
        self._cum = array("Q")  # IPv4: cumulative sizes, for size-weighted picks

    def __len__(self) -> int:
        return len(self.prefixes)

    def offer(self, start: int, prefix: int, cap: int, rng: random.Random) -> None:
        self.seen += 1
        if len(self.prefixes) < cap:
            self.starts_hi.append(start >> 64)
            self.starts_lo.append(start & _M64)
            self.prefixes.append(prefix)
            return
        j = rng.randrange(self.seen)  # reservoir sampling: every network kept with equal probability
        if j < cap:
            self.starts_hi[j], self.starts_lo[j], self.prefixes[j] = start >> 64, start & _M64, prefix

    def freeze(self) -> None:
        # sorted by start, so the pool does not depend on the order the networks came in
        order = sorted(range(len(self)), key=lambda i: (self.starts_hi[i], self.starts_lo[i]))
        self.starts_hi = array("Q", (self.starts_hi[i] for i in order))
        self.starts_lo = array("Q", (self.starts_lo[i] for i in order))
        self.prefixes = array("B", (self.prefixes[i] for i in order))
        if self.bits == 32:
            total = 0
            cum = array("Q")
            for p in self.prefixes:
                total += 1 << (32 - p)
                cum.append(total)
            self._cum = cum

    def pick(self, h: int) -> int:
        """An address (as an int) chosen by the 64-bit hash ``h``: IPv4 uniformly over all addresses of the
        networks (so networks weigh by size), IPv6 a network uniformly then a host uniformly in it."""
        if self.bits == 32:
            total = self._cum[-1]
            x = h % total
            i = bisect_right(self._cum, x)
            before = self._cum[i - 1] if i else 0
            return self.starts_lo[i] + (x - before)
        i = h % len(self)
        size = 1 << (128 - self.prefixes[i])
        start = (self.starts_hi[i] << 64) | self.starts_lo[i]
        h2 = _mix(h)
        return start + (((h2 << 64) | _mix(h2)) % size)


class TerritoryPool:
    """A database's networks grouped by the territory they label as, for drawing addresses.

    Build with :meth:`from_db` (reads the whole tree: ~2 s per 100k networks) or :meth:`from_networks`.
    """

    def __init__(
        self, territories: Mapping[str, Territory], v4: Mapping[str, _Ranges], v6: Mapping[str, _Ranges]
    ) -> None:
        self.territories: dict[str, Territory] = {c: territories[c] for c in sorted(territories)}
        self._v4 = {c: r for c, r in v4.items() if len(r)}
        self._v6 = {c: r for c, r in v6.items() if len(r)}

    @classmethod
    def from_networks(
        cls,
        networks: Iterable[tuple[IPv4Network | IPv6Network, Territory]],
        *,
        max_networks: int = 20_000,
        seed: int = 0,
    ) -> TerritoryPool:
        """From ``(network, territory)`` pairs; unknown territories (``ZZ``) and networks no address of
        which could label as their territory (special-purpose, tunnel, outside 2000::/3) are left out."""
        if max_networks < 1:
            raise ValueError("max_networks must be at least 1")
        rng = random.Random(seed)
        territories: dict[str, Territory] = {}
        v4: dict[str, _Ranges] = {}
        v6: dict[str, _Ranges] = {}
        for net, territory in networks:
            if territory.scope == "unknown":
                continue
            if net.version == 6:
                assert isinstance(net, IPv6Network)
                if not net.subnet_of(_GLOBAL_V6) or any(net.overlaps(t) for t in _TUNNELS_V6):
                    continue
                tables, bits = v6, 128
            else:
                if special_reason(net.network_address) is not None and special_reason(net.broadcast_address):
                    continue
                tables, bits = v4, 32
            table = tables.get(territory.code)
            if table is None:
                table = tables[territory.code] = _Ranges(bits)
                territories[territory.code] = territory
            table.offer(int(net.network_address), net.prefixlen, max_networks, rng)
        for table in (*v4.values(), *v6.values()):
            table.freeze()
        return cls(territories, v4, v6)

    @classmethod
    def from_table(cls, table: TerritoryTable, *, max_networks: int = 20_000, seed: int = 0) -> TerritoryPool:
        """From the ranges of a compiled territory table (any database format, or an ordered list of them):
        each range offers the largest aligned network at its start, so every address drawn labels as its
        territory (ranges not aligned to a network weigh a little less than their size)."""

        def labelled() -> Iterator[tuple[IPv4Network | IPv6Network, Territory]]:
            for family, bits, net_cls in ((4, 32, IPv4Network), (6, 128, IPv6Network)):
                for start, end, label in table.ranges(family):  # type: ignore[arg-type]
                    if label.reason is not None:
                        continue
                    size_bits = (end - start + 1).bit_length() - 1
                    align = (start & -start).bit_length() - 1 if start else bits
                    yield net_cls((start, bits - min(size_bits, align))), label.territory

        return cls.from_networks(labelled(), max_networks=max_networks, seed=seed)

    @classmethod
    def from_db(cls, path: Path | str, *, max_networks: int = 20_000, seed: int = 0) -> TerritoryPool:
        """From the database file(s) at ``path`` (comma separated: an ordered list), labelled as shudi's
        labeller labels them."""
        from streams.pipeline.geodb import parse_paths
        from streams.pipeline.geodb.labeller import load

        sources, table = load(parse_paths(str(path)))
        for s in sources:
            s.close()
        return cls.from_table(table, max_networks=max_networks, seed=seed)

    @property
    def codes(self) -> list[str]:
        return list(self.territories)

    def network_count(self, code: str) -> tuple[int, int]:
        """(IPv4, IPv6) networks kept for ``code``."""
        r4, r6 = self._v4.get(code), self._v6.get(code)
        return (len(r4) if r4 else 0, len(r6) if r6 else 0)

    def address(self, code: str, h: int, *, ipv6: bool = False) -> str:
        """The address hash ``h`` (any int) chooses among ``code``'s networks: the same for the same ``h``.
        ``ipv6`` prefers IPv6 where the territory has IPv6 networks (IPv4 otherwise, and vice versa)."""
        r4, r6 = self._v4.get(code), self._v6.get(code)
        ranges = (r6 or r4) if ipv6 else (r4 or r6)
        if ranges is None:
            raise KeyError(code)
        h = _mix(h & _M64)
        for _ in range(64):
            n = ranges.pick(h)
            ip: IPv4Address | IPv6Address = IPv4Address(n) if ranges.bits == 32 else IPv6Address(n)
            if special_reason(ip) is None and unwrap_tunnel(ip) is ip:
                return str(ip)
            h = _mix(h)
        raise ValueError(f"no ordinary address found in the networks of {code}")

    def draw(self, code: str, rng: random.Random, *, ipv6: bool = False) -> str:
        """A random address of territory ``code``."""
        return self.address(code, rng.getrandbits(64), ipv6=ipv6)


# ------------------------------------------------------------------------------------------------------------
# Bursts
# ------------------------------------------------------------------------------------------------------------


class BurstFileError(ValueError):
    """A burst script cannot be used; the message names the line or item."""


@dataclass(frozen=True, slots=True)
class Burst:
    """During ``[start, start + duration)`` (simulated seconds after the simulation start) ``territory``'s
    rate is ``multiplier`` × its base rate; ``concentration`` of the extra comments go to ``post_ids``."""

    territory: str
    start: float
    duration: float
    multiplier: float
    post_ids: tuple[str, ...]
    concentration: float = 0.8

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise ValueError("burst duration must be positive")
        if not self.multiplier >= 1:
            raise ValueError("burst multiplier must be at least 1")
        if not 0 <= self.concentration <= 1:
            raise ValueError("burst concentration must be between 0 and 1")
        if not self.post_ids or not all(isinstance(p, str) and p for p in self.post_ids):
            raise ValueError("burst post_ids must be non-empty strings")

    @property
    def end(self) -> float:
        return self.start + self.duration


class _BurstSpec(msgspec.Struct, forbid_unknown_fields=True):
    territory: str
    start: float | str
    multiplier: float
    duration: float | None = None
    end: float | str | None = None
    post_ids: list[str] | None = None
    concentration: float = 0.8


def _offset(value: float | str, start: datetime) -> float:
    if isinstance(value, str):
        return (parse_time(value) - start).total_seconds()
    return float(value)


def parse_bursts(text: str, start: datetime) -> list[Burst]:
    """Bursts from a burst script (JSON lines or a JSON list, see the module docstring); string times are
    made relative to ``start``, the simulation start."""
    stripped = text.strip()
    items: list[tuple[str, bytes]]
    if stripped.startswith("["):
        try:
            raw = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise BurstFileError(f"not JSON: {e}") from None
        if not isinstance(raw, list):
            raise BurstFileError("expected a JSON list of burst objects")
        items = [(f"item {i + 1}", json.dumps(obj).encode()) for i, obj in enumerate(raw)]
    else:
        items = [
            (f"line {n}", line.encode())
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    bursts = []
    for i, (where, blob) in enumerate(items):
        try:
            spec = msgspec.json.decode(blob, type=_BurstSpec)
            if (spec.duration is None) == (spec.end is None):
                raise ValueError("give exactly one of duration and end")
            begin = _offset(spec.start, start)
            duration = spec.duration if spec.duration is not None else _offset(spec.end or 0, start) - begin
            posts = tuple(spec.post_ids) if spec.post_ids else (f"burst{i}-p0", f"burst{i}-p1")
            bursts.append(
                Burst(spec.territory, begin, float(duration), spec.multiplier, posts, spec.concentration)
            )
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise BurstFileError(f"{where}: {e}") from None
    return bursts


def load_bursts(path: Path | str, start: datetime) -> list[Burst]:
    """:func:`parse_bursts` on the file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BurstFileError(f"{path}: cannot read ({e})") from None
    try:
        return parse_bursts(text, start)
    except BurstFileError as e:
        raise BurstFileError(f"{path}: {e}") from None


def random_bursts(
    n: int, shares: Mapping[str, float], *, seed: int, horizon: float, first: int = 0
) -> list[Burst]:
    """``n`` bursts spread over ``[0, horizon)`` simulated seconds: territories drawn in proportion to the
    square root of their share (big ones more often, small ones too), multiplier log-uniform in 3–20,
    2–15 minutes long (at most a fifth of the horizon), on 1–3 new posts each."""
    if n <= 0:
        return []
    if horizon <= 0:
        raise ValueError("horizon must be positive")
    rng = random.Random(f"bursts-{seed}")
    codes = sorted(shares)
    weights = [math.sqrt(shares[c]) for c in codes]
    drawn = []
    for _ in range(n):
        duration = min(rng.uniform(120, 900), horizon / 5)
        begin = rng.uniform(0.05 * horizon, max(0.05 * horizon, 0.95 * horizon - duration))
        territory = rng.choices(codes, weights)[0]
        multiplier = round(math.exp(rng.uniform(math.log(3), math.log(20))), 2)
        drawn.append((round(begin, 3), round(duration, 3), territory, multiplier, rng.randint(1, 3)))
    drawn.sort()
    return [
        Burst(territory, begin, duration, multiplier, tuple(f"burst{i}-p{k}" for k in range(posts)), 0.8)
        for i, (begin, duration, territory, multiplier, posts) in enumerate(drawn, first)
    ]


# ------------------------------------------------------------------------------------------------------------
# The simulation
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything that shapes the traffic. ``rate``: mean base events per wall second over a day;
    ``speedup``: simulated seconds per wall second; so the base traffic is ``rate / speedup`` events per
    simulated second (bursts come on top)."""

    start: datetime
    rate: float = 200.0
    speedup: float = 1.0
    seed: int = 0
    bad_fraction: float = 0.0
    dispersion: float = 0.1  # variance of the gamma multiplier per (territory, step); 0: plain Poisson
    cycle: DailyCycle = field(default_factory=DailyCycle)
    users: int = 100_000  # in all, spread over territories by share (at least 20 each)
    user_zipf: float = 1.1
    stable_ip_fraction: float = 0.85  # users with one address; the others rotate among ips_per_mobile_user
    ips_per_mobile_user: int = 4
    ipv6_fraction: float = 0.2  # users on IPv6, where their territory has IPv6 networks
    posts: int = 5_000
    post_zipf: float = 1.0
    step: float | None = None  # simulated seconds per time step; None: chosen from the rate (1-60 s)
    window: int = 60  # seconds; the ground-truth counts are per (territory, window aligned to the epoch)
    weights: Mapping[str, float] | None = None  # default WEIGHTS
    other_weight: float = OTHER_WEIGHT
    event_prefix: str | None = None  # event_id prefix; default "sim-<seed>-<start epoch>-"

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if not (self.rate > 0 and self.speedup > 0):
            raise ValueError("rate and speedup must be positive")
        if not 0 <= self.bad_fraction <= 1:
            raise ValueError("bad_fraction must be between 0 and 1")
        if self.dispersion < 0:
            raise ValueError("dispersion must not be negative")
        if self.window < 1:
            raise ValueError("window must be at least 1 second")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be positive")

    @property
    def sim_rate(self) -> float:
        """Mean base events per simulated second."""
        return self.rate / self.speedup


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One event: ``offset`` simulated seconds after the start, its Kafka value and key, and the truth."""

    offset: float
    value: bytes
    key: bytes | None
    territory: str  # the territory the address was drawn for (a bad event's too)
    ip: str | None  # None for a bad event without a usable address
    bad_reason: str | None  # the dead-letter reason the worker must give; None: valid
    burst: int | None = None  # index of the burst this is an extra comment of
    post_id: str | None = None


_encoder = msgspec.json.Encoder()
_USER_CACHE: Final = 1 << 18  # users whose id and addresses are kept (a pure cache: they are hashes)
_STEPS: Final = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0)
_PLATFORMS: Final = ("android", "ios", "web", "harmonyos", "mini-program")
_PLATFORM_WEIGHTS: Final = (45, 30, 10, 10, 5)
_LANG: Final = {"HK": "zh-Hant-HK", "MO": "zh-Hant-MO", "TW": "zh-Hant-TW"}


def _zipf_rank(u: float, n: int, s: float) -> int:
    """Rank 1..n with P(k) roughly ∝ k^-s: the continuous bounded power law, inverted at ``u``, floored."""
    if s == 1.0:
        x = (n + 1) ** u
    else:
        a = 1.0 - s
        x = (1.0 - u * (1.0 - (n + 1) ** a)) ** (1.0 / a)
    return min(n, max(1, int(x)))


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson(lam) draw: inversion for small means, Hörmann's PTRS (as numpy) for large ones."""
    if lam <= 0:
        return 0
    if lam < 30:
        u = rng.random()
        k = 0
        p = math.exp(-lam)
        cdf = p
        while u > cdf and k < 1000:
            k += 1
            p *= lam / k
            cdf += p
        return k
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b) <= -lam + k * loglam - math.lgamma(
            k + 1
        ):
            return k


class Simulation:
    """The traffic of one :class:`SimConfig` over one :class:`TerritoryPool`, with ground truth.

    :meth:`events` yields :class:`SimEvent` in time order; while it runs, :attr:`counts` (valid events per
    (territory, window start in epoch seconds)), :attr:`emitted_extra` and :attr:`emitted_on_posts` (per
    burst) and :attr:`bad_reasons` count what has been yielded.
    """

    def __init__(self, pool: TerritoryPool, config: SimConfig, bursts: Sequence[Burst] = ()) -> None:
        self.pool = pool
        self.config = config
        self.shares = territory_shares(pool.codes, config.weights, config.other_weight)
        self.codes = list(self.shares)
        for i, b in enumerate(bursts):
            if b.territory not in self.shares:
                raise ValueError(f"burst {i}: territory {b.territory!r} is not in the database's pool")
        self.bursts = tuple(bursts)
        self.start_epoch = config.start.timestamp()
        self.step = config.step if config.step is not None else self._auto_step(config.sim_rate)
        self.prefix = (
            config.event_prefix
            if config.event_prefix is not None
            else f"sim-{config.seed}-{int(self.start_epoch)}-"
        )
        self._users = {c: max(20, round(config.users * s)) for c, s in self.shares.items()}
        self._tindex = {c: i for i, c in enumerate(self.codes)}
        self._salt = _mix(config.seed & _M64)
        self._start_cn = config.start.astimezone(TZ_CN)
        self._user_cache: dict[int, tuple[str, tuple[str, ...]]] = {}  # (user id, addresses) by user key
        self._reset()

    @staticmethod
    def _auto_step(sim_rate: float) -> float:
        for step in _STEPS:  # enough events per step that the per-territory draws do not dominate
            if sim_rate * step >= 50:
                return step
        return _STEPS[-1]

    def _reset(self) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()
        self.emitted_extra = [0] * len(self.bursts)
        self.emitted_on_posts = [0] * len(self.bursts)
        self.bad_reasons: Counter[str] = Counter()
        self.yielded = 0
        self.sim_offset = 0.0  # offset of the last event yielded

    # -- expectations ------------------------------------------------------------------------------------

    def time_of(self, offset: float) -> datetime:
        return self._start_cn + timedelta(seconds=offset)

    def base_rate(self, code: str, offset: float) -> float:
        """Expected base events (valid and bad) per simulated second of ``code`` at ``offset``."""
        return self.config.sim_rate * self.shares[code] * self.config.cycle(self.start_epoch + offset)

    def _pieces(self, t0: float, t1: float) -> Iterator[tuple[float, float, float]]:
        """(from, to, rate multiplier time) pieces of [t0, t1) cut at the step grid, as the sampler sees it:
        the cycle is taken at each step's midpoint."""
        step = self.step
        k = math.floor(max(t0, 0.0) / step)
        while k * step < t1:
            a, b = max(t0, k * step), min(t1, (k + 1) * step)
            if b > a:
                yield a, b, (k + 0.5) * step
            k += 1

    def expected_extra(self, burst: Burst) -> float:
        """Expected extra comments of ``burst`` (all valid)."""
        return sum(
            self.base_rate(burst.territory, mid) * (burst.multiplier - 1) * (b - a)
            for a, b, mid in self._pieces(burst.start, burst.end)
        )

    def expected_count(self, code: str, t0: float, t1: float) -> float:
        """Expected valid events of ``code`` in [t0, t1) (simulated seconds after the start), with bursts."""
        base = sum(self.base_rate(code, mid) * (b - a) for a, b, mid in self._pieces(t0, t1))
        total = base * (1.0 - self.config.bad_fraction)
        for burst in self.bursts:
            if burst.territory != code:
                continue
            lo, hi = max(t0, burst.start), min(t1, burst.end)
            if hi > lo:
                total += sum(
                    self.base_rate(code, mid) * (burst.multiplier - 1) * (b - a)
                    for a, b, mid in self._pieces(lo, hi)
                )
        return total

    def window_start(self, offset: float) -> int:
        """The epoch second the ground-truth window holding ``offset`` starts at."""
        w = self.config.window
        return int((self.start_epoch + offset) // w * w)

    def truth(self) -> list[dict[str, Any]]:
        """One JSON-ready object per burst (see the module docstring); ``emitted_*`` are None before a run."""
        ran = self.yielded > 0
        return [
            {
                "burst": i,
                "territory": b.territory,
                "name_zh": self.pool.territories[b.territory].name_zh,
                "start": rfc3339(self.time_of(b.start)),
                "end": rfc3339(self.time_of(b.end)),
                "start_offset_s": b.start,
                "duration_s": b.duration,
                "multiplier": b.multiplier,
                "post_ids": list(b.post_ids),
                "concentration": b.concentration,
                "base_rate_per_s": round(self.base_rate(b.territory, b.start + b.duration / 2), 4),
                "expected_extra": round(self.expected_extra(b), 2),
                "emitted_extra": self.emitted_extra[i] if ran else None,
                "emitted_on_posts": self.emitted_on_posts[i] if ran else None,
            }
            for i, b in enumerate(self.bursts)
        ]

    def count_rows(self) -> list[dict[str, Any]]:
        """The ground-truth counts so far, one JSON-ready object per (window, territory) with events."""
        w = self.config.window
        rows = []
        for (code, ws), n in sorted(self.counts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            t0 = ws - self.start_epoch
            rows.append(
                {
                    "territory": code,
                    "window_start": rfc3339(self.time_of(t0)),
                    "window_s": w,
                    "count": n,
                    "expected": round(self.expected_count(code, max(0.0, t0), t0 + w), 3),
                }
            )
        return rows

    def active_bursts(self, offset: float) -> list[int]:
        return [i for i, b in enumerate(self.bursts) if b.start <= offset < b.end]

    # -- generation --------------------------------------------------------------------------------------

    def events(self, *, duration: float | None = None, limit: int | None = None) -> Iterator[SimEvent]:
        """The events of ``duration`` simulated seconds (None: no end) or the first ``limit`` ones, in time
        order. Resets the counts; each call starts the same traffic afresh."""
        self._reset()
        cfg = self.config
        rng = random.Random(cfg.seed)
        dispersion = cfg.dispersion
        shape = 1.0 / dispersion if dispersion > 0 else 0.0
        bad_kind = 0
        step_no = 0
        while True:
            t0 = step_no * self.step
            if duration is not None and t0 >= duration:
                return
            t1 = t0 + self.step if duration is None else min(t0 + self.step, duration)
            mid = t0 + self.step / 2
            cyc = cfg.cycle(self.start_epoch + mid)
            planned: list[tuple[float, int, int]] = []  # (offset, territory index, burst index or -1)
            for ti, code in enumerate(self.codes):
                lam = cfg.sim_rate * self.shares[code] * cyc * (t1 - t0)
                if shape:
                    lam *= rng.gammavariate(shape, dispersion)
                for _ in range(poisson(rng, lam)):
                    planned.append((rng.uniform(t0, t1), ti, -1))
            for bi, b in enumerate(self.bursts):
                lo, hi = max(t0, b.start), min(t1, b.end)
                if hi <= lo:
                    continue
                lam = cfg.sim_rate * self.shares[b.territory] * cyc * (b.multiplier - 1) * (hi - lo)
                ti = self._tindex[b.territory]
                for _ in range(poisson(rng, lam)):
                    planned.append((rng.uniform(lo, hi), ti, bi))
            planned.sort()
            for offset, ti, bi in planned:
                code = self.codes[ti]
                burst = self.bursts[bi] if bi >= 0 else None
                event_id = f"{self.prefix}{self.yielded}"
                good, ip, post_id = self._comment(rng, code, event_id, offset, burst)
                if burst is None and cfg.bad_fraction and rng.random() < cfg.bad_fraction:
                    bad = bad_event(rng, bad_kind, event_id, good)
                    bad_kind += 1
                    assert bad.bad_reason is not None
                    self.bad_reasons[bad.bad_reason] += 1
                    event = SimEvent(offset, bad.value, post_id_key(bad.value), code, bad.ip, bad.bad_reason)
                else:
                    self.counts[(code, self.window_start(offset))] += 1
                    if burst is not None:
                        self.emitted_extra[bi] += 1
                        self.emitted_on_posts[bi] += post_id in burst.post_ids
                    event = SimEvent(
                        offset,
                        _encoder.encode(good),
                        post_id.encode(),
                        code,
                        ip,
                        None,
                        bi if bi >= 0 else None,
                        post_id,
                    )
                self.yielded += 1
                self.sim_offset = offset
                yield event
                if limit is not None and self.yielded >= limit:
                    return
            step_no += 1

    def retract(self, event: SimEvent) -> None:
        """Undo the counting of ``event``, the last one yielded, when the caller did not use it."""
        self.yielded -= 1
        if event.bad_reason is not None:
            self.bad_reasons[event.bad_reason] -= 1
            return
        self.counts[(event.territory, self.window_start(event.offset))] -= 1
        if event.burst is not None:
            burst = self.bursts[event.burst]
            self.emitted_extra[event.burst] -= 1
            self.emitted_on_posts[event.burst] -= event.post_id in burst.post_ids

    def _user(self, rng: random.Random, code: str, burst: Burst | None) -> tuple[str, str]:
        cfg = self.config
        population = self._users[code]
        if burst is None:
            rank = _zipf_rank(rng.random(), population, cfg.user_zipf)
        else:
            rank = rng.randint(1, population)
        key = (self._tindex[code] << 40) | rank
        user = self._user_cache.get(key)
        if user is None:
            if len(self._user_cache) >= _USER_CACHE:
                self._user_cache.clear()
            uh = _mix(self._salt ^ _mix(key))
            ipv6 = _mix(uh ^ 0x6) / 2**64 < cfg.ipv6_fraction
            stable = _mix(uh ^ 0x5) / 2**64 < cfg.stable_ip_fraction
            n_ips = 1 if stable else max(1, cfg.ips_per_mobile_user)
            ips = tuple(self.pool.address(code, _mix(uh + 0x100 + k), ipv6=ipv6) for k in range(n_ips))
            user = self._user_cache[key] = (f"u{uh % 10**10:010d}", ips)
        user_id, ips = user
        return user_id, ips[0] if len(ips) == 1 else ips[rng.randrange(len(ips))]

    def _comment(
        self, rng: random.Random, code: str, event_id: str, offset: float, burst: Burst | None
    ) -> tuple[dict[str, object], str, str]:
        cfg = self.config
        user_id, ip = self._user(rng, code, burst)
        if burst is not None and rng.random() < burst.concentration:
            post_id = rng.choice(burst.post_ids)
        else:
            post_id = f"p{_zipf_rank(rng.random(), cfg.posts, cfg.post_zipf)}"
        text = comment_text(rng, phrases=(1, 4))
        lang = _LANG.get(code, "zh-CN")
        if self.pool.territories[code].scope == "overseas" and rng.random() < 0.3:
            lang = "en"
        platform = rng.choices(_PLATFORMS, _PLATFORM_WEIGHTS)[0]
        when = self.time_of(offset)  # in Asia/Shanghai: created_at as rfc3339() writes it
        good = comment(
            rng, event_id, ip, when, text=text, user_id=user_id, post_id=post_id, platform=platform, lang=lang
        )
        return good, ip, post_id


def write_jsonl(path: Path | str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` as JSON lines (UTF-8, not escaped), atomically: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
