"""streams.devtools.simulate: traffic whose ground truth (territories, cycle, bursts, bad events) holds."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli.simulate import simulate
from streams.devtools.mmdbbuild import build_demo_db
from streams.devtools.simulate import (
    TZ_CN,
    WEIGHTS,
    Burst,
    BurstFileError,
    DailyCycle,
    SimConfig,
    SimEvent,
    Simulation,
    TerritoryPool,
    load_bursts,
    parse_bursts,
    poisson,
    random_bursts,
    rfc3339,
    territory_shares,
    write_jsonl,
)
from streams.pipeline.enrich import Enricher, InRecord
from streams.pipeline.events import DEAD_LETTER_REASONS, RFC3339_PATTERN, decode_comment
from streams.pipeline.geodb.labeller import Labeller
from streams.pipeline.territory import CHINA, PROVINCES, UNKNOWN, Territory

START = datetime(2026, 11, 25, 0, 0, tzinfo=TZ_CN)  # a Wednesday midnight, Beijing time
BURSTS_FILE = Path(__file__).resolve().parents[1] / "data" / "bursts.jsonl"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_db(tmp_path_factory.mktemp("sim") / "demo.mmdb")


@pytest.fixture(scope="module")
def pool(demo_db: Path) -> TerritoryPool:
    return TerritoryPool.from_db(demo_db)


@pytest.fixture(scope="module")
def labeller(demo_db: Path) -> Labeller:
    return Labeller.open(demo_db, cache_size=1 << 16)


def run(
    pool: TerritoryPool,
    config: SimConfig,
    *,
    duration: float | None = None,
    limit: int | None = None,
    bursts: list[Burst] | tuple[Burst, ...] = (),
) -> tuple[Simulation, list[SimEvent]]:
    sim = Simulation(pool, config, bursts)
    return sim, list(sim.events(duration=duration, limit=limit))


def z_ok(observed: float, expected: float, z: float = 4.0) -> bool:
    return abs(observed - expected) <= z * math.sqrt(max(expected, 1.0))


# ----------------------------------------------------------------------------------------------------------
# The pool
# ----------------------------------------------------------------------------------------------------------


def test_pool_has_every_territory_of_the_demo_db_and_no_unknown(pool: TerritoryPool) -> None:
    codes = set(pool.codes)
    assert {d.iso for d in PROVINCES} <= codes
    assert {"CN", "HK", "MO", "TW", "US", "JP", "SG"} <= codes
    assert UNKNOWN.code not in codes
    assert len(codes) == 31 + 1 + 3 + 25
    assert pool.network_count("CN-GD") == (3, 1)  # /16, /17, /22 and a /32 of IPv6


def test_addresses_label_back_to_their_territory(pool: TerritoryPool, labeller: Labeller) -> None:
    rng = random.Random(7)
    for code in pool.codes:
        for ipv6 in (False, True):
            for _ in range(30):
                ip = pool.draw(code, rng, ipv6=ipv6)
                assert labeller.label(ip).territory.code == code, (code, ip)
                assert (":" in ip) == ipv6  # the demo database has both families everywhere


def test_pool_from_xdb_and_ipdb_files(tmp_path: Path) -> None:
    # Any format, and an ordered list: addresses come from the compiled table's ranges per territory.
    from tests.geodb_fixtures import write_ipdb_files, write_xdb_files

    files = {**write_xdb_files(tmp_path), **write_ipdb_files(tmp_path)}
    dbs = f"{files['v4']},{files['v6']},{files['free']}"
    pool = TerritoryPool.from_db(dbs, seed=3)
    assert {"CN-GD", "CN-BJ", "HK", "TW", "US", "JP", "CN-SH", "GB", "CN-ZJ"} <= set(pool.codes)
    labeller = Labeller.open([files["v4"], files["v6"], files["free"]], 256)
    rng = random.Random(5)
    for code in pool.codes:
        for _ in range(20):
            ip = pool.draw(code, rng, ipv6=code in {"CN-SH", "GB"})
            assert labeller.label(ip).territory.code == code, (code, ip)


def test_addresses_are_deterministic_per_hash_and_spread(pool: TerritoryPool) -> None:
    assert pool.address("CN-SD", 12345) == pool.address("CN-SD", 12345)
    many = {pool.address("CN-SD", h) for h in range(2000)}
    assert len(many) > 1900
    # IPv4 picks weigh networks by size: 36.x/16 holds 64 of every 64 + 32 + 1 /22-units
    in_16 = sum(ip.startswith("36.") for ip in many)
    assert 0.6 < in_16 / len(many) < 0.72


def test_pool_skips_special_tunnel_and_unknown_networks() -> None:
    gd = next(d.territory for d in PROVINCES if d.iso == "CN-GD")
    pool = TerritoryPool.from_networks(
        [
            (IPv4Network("10.0.0.0/8"), gd),  # private
            (IPv6Network("2002::/16"), gd),  # 6to4: labelled by the IPv4 address inside
            (IPv6Network("2001::/32"), gd),  # Teredo
            (IPv6Network("::ffff:0:0/96"), gd),  # outside 2000::/3
            (IPv4Network("1.2.3.0/24"), UNKNOWN),
            (IPv4Network("1.0.1.0/24"), gd),
            (IPv4Network("1.0.8.0/24"), CHINA),
        ]
    )
    assert pool.codes == ["CN", "CN-GD"]
    assert pool.network_count("CN-GD") == (1, 0)
    assert pool.address("CN-GD", 1, ipv6=True).startswith("1.0.1.")  # falls back to IPv4


def test_pool_memory_is_bounded_by_sampling_networks() -> None:
    us = Territory("US", "美国", "United States", "overseas", "US")
    nets = [(IPv4Network((0x0B000000 + (i << 8), 24)), us) for i in range(5000)]
    a = TerritoryPool.from_networks(nets, max_networks=100, seed=1)
    b = TerritoryPool.from_networks(list(reversed(nets)), max_networks=100, seed=1)
    assert a.network_count("US") == (100, 0)
    assert {a.address("US", h) for h in range(50)} != set()
    assert b.network_count("US") == (100, 0)


# ----------------------------------------------------------------------------------------------------------
# Rates, cycle, noise
# ----------------------------------------------------------------------------------------------------------


def test_shares_renormalise_over_present_territories() -> None:
    shares = territory_shares(["CN-GD", "CN-XZ", "HK", "ZW"])
    assert math.isclose(sum(shares.values()), 1.0)
    assert shares["CN-GD"] / shares["CN-XZ"] == pytest.approx(WEIGHTS["CN-GD"] / WEIGHTS["CN-XZ"])
    assert shares["ZW"] < shares["CN-XZ"]  # an unlisted country gets the small default weight
    assert "ZW" not in territory_shares(["CN-GD", "ZW"], other_weight=0)
    big = sorted((d.iso for d in PROVINCES), key=lambda c: -WEIGHTS[c])
    assert set(big[:5]) <= {"CN-GD", "CN-SD", "CN-HA", "CN-JS", "CN-ZJ", "CN-SC"}
    assert set(big[-3:]) == {"CN-XZ", "CN-QH", "CN-NX"}


def test_daily_cycle_shape() -> None:
    cycle = DailyCycle(ratio=5.0)

    def at(hour: float) -> float:
        return cycle(START.timestamp() + hour * 3600)

    assert at(21) == pytest.approx(cycle.peak)
    assert at(4) == pytest.approx(cycle.trough)
    assert at(21) / at(4) == pytest.approx(5.0)
    mean = sum(at(m / 60) for m in range(24 * 60)) / (24 * 60)
    assert mean == pytest.approx(1.0, abs=1e-3)
    assert max(at(m / 60) for m in range(24 * 60)) == pytest.approx(cycle.peak)
    assert DailyCycle(ratio=1.0)(0) == pytest.approx(1.0)


@pytest.mark.parametrize("lam", [0.0, 0.3, 4.0, 29.0, 31.0, 250.0, 5000.0])
def test_poisson_mean_and_variance(lam: float) -> None:
    rng = random.Random(1)
    xs = [poisson(rng, lam) for _ in range(4000)]
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / len(xs)
    assert abs(mean - lam) <= 5 * math.sqrt(max(lam, 0.01) / len(xs))
    if lam:
        assert 0.85 < var / lam < 1.15


def test_deterministic_for_a_seed(pool: TerritoryPool) -> None:
    config = SimConfig(start=START, rate=300.0, bad_fraction=0.05, seed=3)
    sim, a = run(pool, config, limit=3000)
    _, b = run(pool, config, limit=3000)
    _, c = run(pool, replace(config, seed=4), limit=3000)
    assert a == b
    assert [e.value for e in a] != [e.value for e in c]
    assert list(sim.events(limit=3000)) == a  # each call starts afresh
    offsets = [e.offset for e in a]
    assert offsets == sorted(offsets)


def test_share_per_territory_follows_the_weights(pool: TerritoryPool) -> None:
    # flat cycle, plain Poisson: counts per territory are Poisson(n * share) given the run
    sim, events = run(
        pool, SimConfig(start=START, rate=1000.0, dispersion=0.0, cycle=DailyCycle(ratio=1.0)), duration=30
    )
    n = len(events)
    assert z_ok(n, 30_000)
    got = Counter(e.territory for e in events)
    chi2 = dof = 0.0
    for code, share in sim.shares.items():
        expected = n * share
        if expected >= 5:
            chi2 += (got[code] - expected) ** 2 / expected
            dof += 1
        if expected >= 300:
            assert abs(got[code] / expected - 1) < 4 / math.sqrt(expected), code
    assert chi2 < dof + 5 * math.sqrt(2 * dof)  # mean dof, sd sqrt(2 dof)
    top = [code for code, _ in got.most_common(3)]
    assert "CN-GD" in top


def test_daily_cycle_is_visible(pool: TerritoryPool) -> None:
    sim, events = run(pool, SimConfig(start=START, rate=0.3, dispersion=0.0, users=5_000), duration=86_400)
    by_hour = Counter(int(e.offset // 3600) for e in events)
    assert by_hour[21] / by_hour[4] == pytest.approx(5.0 * 0.98, rel=0.2)  # an hour averages the extremes
    assert max(by_hour, key=lambda h: by_hour[h]) in (20, 21, 22)
    assert min(by_hour, key=lambda h: by_hour[h]) in (3, 4, 5)
    assert z_ok(len(events), 0.3 * 86_400)
    # the per-window ground truth adds up, and the events carry their simulated time
    assert sum(sim.counts.values()) == len(events)
    for e in events[:: len(events) // 50]:
        created = json.loads(e.value)["created_at"]
        assert re.match(RFC3339_PATTERN, created)
        assert created.endswith("+08:00")
        delta = datetime.fromisoformat(created) - (START + timedelta(seconds=e.offset))
        assert timedelta(milliseconds=-1) < delta <= timedelta(0)  # milliseconds, truncated


def test_over_dispersion_widens_the_noise(pool: TerritoryPool) -> None:
    def variance(dispersion: float) -> float:
        config = SimConfig(
            start=START,
            rate=20.0,
            dispersion=dispersion,
            cycle=DailyCycle(1.0),
            step=1.0,
            window=1,
            weights={"CN-GD": 1.0},
            other_weight=0.0,
        )
        sim = Simulation(pool, config)
        assert sim.codes == ["CN-GD"]
        for _ in sim.events(duration=400):
            pass
        xs = [sim.counts[("CN-GD", int(START.timestamp()) + s)] for s in range(400)]
        mean = sum(xs) / len(xs)
        return sum((x - mean) ** 2 for x in xs) / len(xs) / mean  # Poisson: 1

    assert 0.7 < variance(0.0) < 1.3
    assert variance(0.5) > 5  # 1 + mean * 0.5 = 11 with a mean of 20


# ----------------------------------------------------------------------------------------------------------
# Bursts and their ground truth
# ----------------------------------------------------------------------------------------------------------


def test_burst_file_forms(pool: TerritoryPool) -> None:
    bursts = load_bursts(BURSTS_FILE, START)
    assert bursts == [
        Burst("CN-GD", 3600.0, 600.0, 8.0, ("p-hot-gd",)),
        Burst("HK", 3 * 3600.0, 900.0, 30.0, ("p-hot-hk1", "p-hot-hk2"), 0.9),
    ]
    as_list = json.dumps([json.loads(x) for x in BURSTS_FILE.read_text().splitlines() if x.startswith("{")])
    assert parse_bursts(as_list, START) == bursts
    default_posts = parse_bursts('{"territory": "US", "start": 5, "duration": 9, "multiplier": 2}', START)
    assert default_posts[0].post_ids == ("burst0-p0", "burst0-p1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"territory": "US", "start": 0, "duration": 9, "multiplier": 2, "size": 1}', "line 1"),
        ('{"territory": "US", "start": 0, "multiplier": 2}', "exactly one of duration and end"),
        ('{"territory": "US", "start": 0, "duration": 9, "end": 20, "multiplier": 2}', "exactly one"),
        ('{"territory": "US", "start": 0, "duration": 9, "multiplier": 0.5}', "multiplier"),
        ('{"territory": "US", "start": 0, "duration": -1, "multiplier": 2}', "duration"),
        ('{"territory": "US", "start": "yesterday", "duration": 9, "multiplier": 2}', "line 1"),
        ('[{"territory": "US"}]', "item 1"),
        ("[1, 2", "not JSON"),
    ],
)
def test_bad_burst_scripts(text: str, message: str) -> None:
    with pytest.raises(BurstFileError, match=message):
        parse_bursts(text, START)


def test_burst_territory_must_be_in_the_pool(pool: TerritoryPool) -> None:
    with pytest.raises(ValueError, match="ZW"):
        Simulation(pool, SimConfig(start=START), [Burst("ZW", 0, 60, 2, ("p",))])


def test_random_bursts(pool: TerritoryPool) -> None:
    shares = territory_shares(pool.codes)
    a = random_bursts(8, shares, seed=5, horizon=7200)
    assert a == random_bursts(8, shares, seed=5, horizon=7200)
    assert a != random_bursts(8, shares, seed=6, horizon=7200)
    assert len(a) == 8
    assert [b.start for b in a] == sorted(b.start for b in a)
    for b in a:
        assert b.territory in shares
        assert b.start >= 0
        assert b.end <= 7200
        assert 3 <= b.multiplier <= 20
        assert 1 <= len(b.post_ids) <= 3
    assert len({p for b in a for p in b.post_ids}) == sum(len(b.post_ids) for b in a)


def test_injected_bursts_and_their_truth(pool: TerritoryPool, tmp_path: Path) -> None:
    bursts = load_bursts(BURSTS_FILE, START)
    config = SimConfig(start=START, rate=5.0, dispersion=0.0, bad_fraction=0.01, seed=11)
    sim, events = run(pool, config, duration=3.3 * 3600, bursts=bursts)
    calm = Simulation(pool, config)  # the same traffic without the bursts

    truth_path = tmp_path / "truth.jsonl"
    write_jsonl(truth_path, sim.truth())
    truth = [json.loads(line) for line in truth_path.read_text(encoding="utf-8").splitlines()]
    assert len(truth) == len(bursts)
    for i, (b, t) in enumerate(zip(bursts, truth, strict=True)):
        assert t["burst"] == i
        assert t["territory"] == b.territory
        assert t["start"] == rfc3339(START + timedelta(seconds=b.start))
        assert t["end"] == rfc3339(START + timedelta(seconds=b.end))
        assert t["multiplier"] == b.multiplier
        assert t["post_ids"] == list(b.post_ids)
        assert t["expected_extra"] == pytest.approx(sim.expected_extra(b), abs=0.01)

        in_window = [
            e
            for e in events
            if e.territory == b.territory and b.start <= e.offset < b.end and not e.bad_reason
        ]
        extra = [e for e in events if e.burst == i]
        assert len(extra) == t["emitted_extra"]
        assert z_ok(len(extra), t["expected_extra"])
        # the territory's count in the window is about multiplier x what it is without the burst
        base = calm.expected_count(b.territory, b.start, b.end)
        assert len(in_window) / base == pytest.approx(b.multiplier, rel=0.25)
        assert z_ok(len(in_window), sim.expected_count(b.territory, b.start, b.end))
        # concentrated on the burst's posts, which nothing else touches
        on_posts = sum(e.post_id in b.post_ids for e in extra)
        assert on_posts == t["emitted_on_posts"]
        assert on_posts / len(extra) == pytest.approx(b.concentration, abs=0.08)
        assert all(e.burst == i for e in events if e.post_id in b.post_ids)
        # the per-window truth agrees with the events
        windows = {sim.window_start(e.offset) for e in in_window}
        assert sum(sim.counts[(b.territory, w)] for w in windows) >= len(in_window)
    # outside the bursts the territories keep their base rate
    gd_before = sum(1 for e in events if e.territory == "CN-GD" and 0 <= e.offset < 3600 and not e.bad_reason)
    assert z_ok(gd_before, calm.expected_count("CN-GD", 0, 3600))
    rows = sim.count_rows()
    assert sum(r["count"] for r in rows) == sum(1 for e in events if not e.bad_reason)
    assert {r["window_s"] for r in rows} == {60}


def test_truth_before_a_run_has_no_emitted_counts(pool: TerritoryPool) -> None:
    sim = Simulation(pool, SimConfig(start=START), load_bursts(BURSTS_FILE, START))
    assert [t["emitted_extra"] for t in sim.truth()] == [None, None]
    assert sim.active_bursts(3700) == [0]
    assert sim.active_bursts(3 * 3600 + 1) == [1]
    assert sim.active_bursts(0) == []


# ----------------------------------------------------------------------------------------------------------
# Bad events, users, addresses end to end
# ----------------------------------------------------------------------------------------------------------


def test_bad_fraction_and_reasons(pool: TerritoryPool) -> None:
    sim, events = run(pool, SimConfig(start=START, rate=500.0, bad_fraction=0.05, seed=2), limit=20_000)
    bad = [e for e in events if e.bad_reason is not None]
    assert 800 <= len(bad) <= 1200
    assert {e.bad_reason for e in bad} == set(DEAD_LETTER_REASONS) - {"internal_error"}
    assert Counter(e.bad_reason for e in bad) == +sim.bad_reasons
    assert sum(sim.counts.values()) == len(events) - len(bad)
    for e in events[:2000]:
        if e.bad_reason is None:
            comment = decode_comment(e.value)
            assert comment.ip == e.ip
            assert e.post_id is not None
            assert e.key == e.post_id.encode()
            assert comment.post_id == e.post_id


def test_the_enricher_labels_every_valid_event_as_its_territory(pool: TerritoryPool, demo_db: Path) -> None:
    bursts = [Burst("CN-XZ", 0, 30, 50, ("p-x",))]
    _, events = run(
        pool, SimConfig(start=START, rate=2000.0, bad_fraction=0.03, seed=8), limit=5000, bursts=bursts
    )
    enricher = Enricher(Labeller.open(demo_db, 4096), max_message_bytes=65_536)
    records = [InRecord("comments", 0, i, e.key, e.value) for i, e in enumerate(events)]
    result = enricher.process_batch(records)
    dead = {
        json.loads(d.value)["source"]["offset"]: json.loads(d.value)["reason"] for d in result.dead_letters
    }
    assert dead == {i: e.bad_reason for i, e in enumerate(events) if e.bad_reason is not None}
    labelled = [json.loads(o.value)["territory"]["code"] for o in result.enriched]
    assert labelled == [e.territory for e in events if e.bad_reason is None]


def test_addresses_repeat_like_real_users(pool: TerritoryPool) -> None:
    _, events = run(pool, SimConfig(start=START, rate=5.0, users=20_000, seed=4), duration=3 * 3600)
    valid = [e for e in events if e.bad_reason is None]
    assert len(valid) > 20_000
    ips = Counter(e.ip or "" for e in valid)
    users = Counter(json.loads(e.value)["user_id"] for e in valid[:5000])
    assert len(ips) < 0.3 * len(valid)
    assert ips.most_common(1)[0][1] > 50  # heavy posters
    assert max(users.values()) > 20
    posts = Counter(e.post_id for e in valid)
    assert posts.most_common(1)[0][1] > 0.05 * len(valid)  # a Zipf head of popular posts
    assert sum(":" in ip for ip in ips) / len(ips) == pytest.approx(0.2, abs=0.08)


# ----------------------------------------------------------------------------------------------------------
# The command, without a broker
# ----------------------------------------------------------------------------------------------------------


def test_command_rejects_a_bad_burst_file_before_connecting(demo_db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bursts.jsonl"
    bad.write_text('{"territory": "CN-GD", "start": 0, "multiplier": 3}\n', encoding="utf-8")
    args = ["--db", str(demo_db), "--bursts", str(bad), "--broker", "127.0.0.1:1", "--events", "1"]
    result = CliRunner().invoke(simulate, args)
    assert result.exit_code == 2
    assert "exactly one of duration and end" in result.output


def test_command_rejects_a_missing_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(simulate, ["--db", str(tmp_path / "none.mmdb"), "--events", "1"])
    assert result.exit_code == 2  # could not run: cli.errors.EXIT_USAGE
    assert "no such file" in result.output


def test_command_reports_an_unreachable_broker_and_still_writes_the_truth(
    demo_db: Path, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.jsonl"
    args = ["--db", str(demo_db), "--broker", "127.0.0.1:1", "--events", "5", "--seed", "1"]
    result = CliRunner().invoke(simulate, [*args, "--bursts", str(BURSTS_FILE), "--truth", str(truth)])
    assert result.exit_code == 1
    assert "127.0.0.1:1 failed" in result.output
    assert len(truth.read_text(encoding="utf-8").splitlines()) == 2
