"""Labels from real .mmdb files through the territory table: validation, the cache, hot reload."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import maxminddb
import pytest

from streams.devtools.mmdbbuild import build_city_mmdb, cn_record
from streams.pipeline.geodb import Source, open_database
from streams.pipeline.geodb.labeller import (
    MISS_SAMPLE,
    DatabaseWatcher,
    Labeller,
    ReloadResult,
    compile_files,
    load,
)
from streams.pipeline.geoip import DatabaseError, GeoDatabase, MmdbDatabase, RecordError
from streams.pipeline.territory import (
    UNKNOWN,
    InvalidIP,
    Label,
    Territory,
    label_location,
    parse_ip,
    public_v4,
)
from tests.geoip_fixtures import BUILD_EPOCH_A, BUILD_EPOCH_B, CASES, NOT_FOUND, RELOADED_FIRST, Expected


def _label(want: Expected | str) -> Label:
    if isinstance(want, str):
        return Label(UNKNOWN, want)  # type: ignore[arg-type]
    code, zh, en, scope, cc = want
    return Label(Territory(code, zh, en, scope, cc))  # type: ignore[arg-type]


@pytest.fixture
def fixture_db(fixture_db_path: Path) -> MmdbDatabase:
    return MmdbDatabase.open(fixture_db_path)


# --- known answers from our own fixture database ------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "ip", "want"), [(c[0], c[2], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_fixture_answers(fixture_db_path: Path, network: str, ip: str, want: Expected | str) -> None:
    assert Labeller.open(fixture_db_path, 16).label(ip) == _label(want)


def test_fast_path_labels_as_the_full_path(fixture_db_path: Path, fixture_db: MmdbDatabase) -> None:
    # Dotted quads are looked up by their text (no address object); every other address goes through
    # parse_ip and an address object. Both must agree with the database read directly.
    labeller = Labeller.open(fixture_db_path, 16)
    texts = [c[2] for c in CASES if "." in c[2] and ":" not in c[2]] + [
        ip for ip in NOT_FOUND if ":" not in ip
    ]
    fast = [t for t in texts if public_v4(t)]
    assert len(fast) >= 10  # the fixture exercises the fast path
    for text in fast:
        assert labeller.label(text) == label_location(fixture_db.locate(parse_ip(text))), text


def test_fixture_misc(fixture_db_path: Path, fixture_db: MmdbDatabase) -> None:
    labeller = Labeller.open(fixture_db_path, 64)
    for ip in NOT_FOUND:
        assert labeller.label(ip) == Label(UNKNOWN, "not_found"), ip
    assert labeller.label("::ffff:1.0.1.9") == labeller.label("1.0.1.9")
    assert labeller.label("::ffff:1.0.1.9").territory.code == "CN-GD"
    assert labeller.label("10.0.0.1") == Label(UNKNOWN, "private")  # special ranges before the database
    assert labeller.label("2002:0100:0107::1").territory.code == "CN-GD"  # 6to4 of 1.0.1.7
    assert fixture_db.build == "GeoIP2-City 2026-01-01T00:00:00Z"
    assert fixture_db.build_epoch == BUILD_EPOCH_A
    assert isinstance(fixture_db, GeoDatabase)


# --- MaxMind's test databases (third party; answers as their source-data says) ------------------------------

MAXMIND_ANSWERS = [
    ("81.2.69.142", "GB", "英国", "United Kingdom", "overseas"),
    ("2.125.160.217", "GB", "英国", "United Kingdom", "overseas"),
    ("216.160.83.56", "US", "美国", "United States", "overseas"),
    ("89.160.20.112", "SE", "瑞典", "Sweden", "overseas"),
    ("202.196.224.1", "PH", "菲律宾", "Philippines", "overseas"),
    ("175.16.199.1", "CN-JL", "吉林", "Jilin", "domestic"),  # subdivision 22 / "Jilin Sheng" / 吉林
    ("2001:218::1", "JP", "日本", "Japan", "overseas"),
    ("2001:220::1", "KR", "韩国", "South Korea", "overseas"),
    ("2001:2e0::1", "HK", "中国香港", "Hong Kong", "special_region"),  # the database says 香港
    ("2001:238::1", "TW", "中国台湾", "Taiwan", "special_region"),  # the database says 台湾
    ("2001:250::1", "CN", "中国", "China", "domestic"),  # CN without subdivision
]


@pytest.mark.parametrize("name", ["GeoIP2-City-Test.mmdb", "GeoLite2-City-Test.mmdb"])
def test_maxmind_test_databases(maxmind_dir: Path, name: str) -> None:
    db = MmdbDatabase.open(maxmind_dir / name)
    labeller = Labeller.open(maxmind_dir / name, 64)
    for ip, code, zh, en, scope in MAXMIND_ANSWERS:
        t = labeller.label(ip).territory
        assert (t.code, t.name_zh, t.name_en, t.scope) == (code, zh, en, scope), ip
    assert labeller.label("1.1.1.1") == Label(UNKNOWN, "not_found")
    assert db.build.startswith(name.removesuffix("-Test.mmdb") + " 20")


def test_maxmind_record_without_country(maxmind_dir: Path) -> None:
    labeller = Labeller.open(maxmind_dir / "GeoIP2-City-Test.mmdb", 8)
    assert labeller.label("2.3.3.1") == Label(UNKNOWN, "no_country")  # continent only
    assert labeller.label("214.1.1.1") == Label(UNKNOWN, "no_country")  # traits only


def test_corrupt_record_refused_at_load(maxmind_dir: Path) -> None:
    path = maxmind_dir / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
    with pytest.raises(DatabaseError, match="corrupt"):
        MmdbDatabase.open(path)  # validation catches it ...
    # ... and so does compiling the table, which reads every record: never a half-read table
    db = MmdbDatabase(path, maxminddb.open_database(str(path), maxminddb.MODE_AUTO))
    from streams.pipeline.geodb.mmdb import MmdbSource
    from streams.pipeline.geodb.table import compile_table

    with pytest.raises(DatabaseError, match="corrupt") as info:
        compile_table([MmdbSource(db)])
    assert info.value.path == path
    # the reader itself still turns one bad record into RecordError (shudi label --explain uses it)
    with pytest.raises(RecordError):
        db.locate(parse_ip("81.2.69.142"))


# --- opening -----------------------------------------------------------------------------------------------


def test_open_failures_name_the_path(tmp_path: Path, maxmind_dir: Path) -> None:
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"\x00not a database" * 100)
    truncated = tmp_path / "truncated.mmdb"
    truncated.write_bytes((maxmind_dir / "GeoIP2-City-Test.mmdb").read_bytes()[:5000])
    country = build_city_mmdb(tmp_path / "country.mmdb", [("1.0.1.0/24", cn_record())], "GeoIP2-Country")
    cases = {
        tmp_path / "missing.mmdb": "no such file",
        tmp_path: "not a regular file",
        garbage: "not a valid MaxMind DB",
        truncated: "not a valid MaxMind DB",
        maxmind_dir / "GeoIP2-City-Test-Invalid-Node-Count.mmdb": "not a valid MaxMind DB",
        country: "not a City database",
    }
    for path, reason in cases.items():
        with pytest.raises(DatabaseError) as info:
            open_database(path)
        assert info.value.path == path
        assert reason in info.value.reason
        assert str(path) in str(info.value)
        assert "\n" not in str(info.value)


# --- the cache ---------------------------------------------------------------------------------------------


def test_cache_counts_and_invalid_input(fixture_db_path: Path) -> None:
    labeller = Labeller.open(fixture_db_path, 4)
    for _ in range(3):
        assert labeller.label("1.0.1.7").territory.code == "CN-GD"
    s = labeller.stats()
    assert (s.hits, s.misses, s.cached) == (2, 1, 1)
    assert labeller.cache_counts() == (2, 1)
    assert (s.timed_misses, s.timed_miss_seconds > 0) == (1, True)  # the first miss is timed
    for _ in range(2):
        with pytest.raises(InvalidIP):
            labeller.label("1.0.1.7 ")
    s = labeller.stats()
    assert (s.hits, s.misses, s.cached) == (2, 3, 1)  # invalid text is never cached
    for i in range(10):
        labeller.label(f"1.0.2.{i}")
    assert labeller.stats().cached == 4  # bounded
    with pytest.raises(ValueError, match="cache_size"):
        Labeller.open(fixture_db_path, 0)


def test_one_miss_in_the_sample_interval_is_timed(fixture_db_path: Path, fixture_db_b_path: Path) -> None:
    """``on_miss`` hears of the first miss and then of one miss in MISS_SAMPLE, never of a hit; a swapped-in
    table's cache times its first miss again."""
    timings: list[float] = []
    labeller = Labeller.open(fixture_db_path, 1024, on_miss=timings.append)
    misses = 3 * MISS_SAMPLE + 2
    for i in range(misses):
        labeller.label(f"1.0.2.{i}")
        labeller.label(f"1.0.2.{i}")  # a hit
    want = len(range(0, misses, MISS_SAMPLE))
    assert len(timings) == want
    assert all(t > 0 for t in timings)
    s = labeller.stats()
    assert (s.misses, s.hits, s.timed_misses) == (misses, misses, want)
    assert s.timed_miss_seconds == pytest.approx(sum(timings))
    labeller.swap(compile_files(fixture_db_b_path))
    labeller.label("1.0.2.1")
    assert len(timings) == want + 1


# --- hot reload --------------------------------------------------------------------------------------------


def _replace(src: Path, dst: Path) -> None:
    """Atomic replace, as geoipupdate does: write beside, rename over."""
    tmp = dst.with_name(dst.name + ".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@pytest.fixture
def live(tmp_path: Path, fixture_db_path: Path) -> Path:
    path = tmp_path / "live.mmdb"
    shutil.copyfile(fixture_db_path, path)
    return path


FIRST_IP = CASES[0][2]


def _watched(path: Path, cache_size: int, **options: object) -> tuple[Labeller, DatabaseWatcher]:
    sources, table = load([path])
    labeller = Labeller(table, cache_size)
    return labeller, DatabaseWatcher(labeller, sources, **options)  # type: ignore[arg-type]


def _check(watcher: DatabaseWatcher) -> ReloadResult | None:
    """The one file's result of a check; None when nothing changed."""
    results = watcher.check()
    assert len(results) <= 1
    return results[0] if results else None


def test_reload_swaps_database_and_cache(live: Path, fixture_db_b_path: Path) -> None:
    labeller, watcher = _watched(live, 128)
    assert labeller.label(FIRST_IP).territory.code == "CN-GD"
    assert _check(watcher) is None

    _replace(fixture_db_b_path, live)
    r = _check(watcher)
    assert r is not None
    assert (r.status, r.db, r.build_epoch, r.reason) == ("reloaded", "live.mmdb", BUILD_EPOCH_B, None)
    assert r.build == "GeoIP2-City 2026-02-01T00:00:00Z"
    assert labeller.stats().cached == 0
    assert labeller.label(FIRST_IP) == _label(RELOADED_FIRST)
    assert labeller.table.sources[0].build_epoch == BUILD_EPOCH_B
    assert labeller.build == "GeoIP2-City 2026-02-01T00:00:00Z"
    assert _check(watcher) is None
    assert labeller.stats().misses == 2  # counters survive the swap
    assert labeller.cache_counts() == (0, 2)


def test_reload_keeps_old_database_on_corrupt_file(
    live: Path, tmp_path: Path, maxmind_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labeller, watcher = _watched(live, 128)
    labeller.label(FIRST_IP)
    for corrupt in (maxmind_dir / "GeoIP2-City-Test-Invalid-Node-Count.mmdb", tmp_path / "junk"):
        if not corrupt.exists():
            corrupt.write_bytes(b"junk" * 1000)
        with caplog.at_level(logging.WARNING, logger="streams.pipeline.geodb.labeller"):
            caplog.clear()
            _replace(corrupt, live)
            r = _check(watcher)
        assert r is not None
        assert r.status == "failed"
        assert r.build_epoch == BUILD_EPOCH_A
        assert r.reason is not None
        assert "not a valid MaxMind DB" in r.reason
        assert len(caplog.records) == 1
        message = caplog.records[0].getMessage()
        assert str(live) in message
        assert FIRST_IP not in message
        assert labeller.label(FIRST_IP).territory.code == "CN-GD"
        assert labeller.stats().hits >= 1  # cache kept
        assert _check(watcher) is None  # reported once per change


def test_reload_keeps_old_database_when_file_removed(live: Path, fixture_db_b_path: Path) -> None:
    labeller, watcher = _watched(live, 128)
    live.unlink()
    r = _check(watcher)
    assert r is not None
    assert r.status == "failed"
    assert r.reason is not None
    assert "removed" in r.reason
    assert _check(watcher) is None
    assert labeller.label(FIRST_IP).territory.code == "CN-GD"  # the table is in memory
    _replace(fixture_db_b_path, live)
    r = _check(watcher)
    assert r is not None
    assert r.status == "reloaded"
    assert labeller.label(FIRST_IP) == _label(RELOADED_FIRST)


def test_reload_under_concurrent_lookups(live: Path, fixture_db_path: Path, fixture_db_b_path: Path) -> None:
    labeller, watcher = _watched(live, 8)
    allowed = {_label(CASES[0][3]), _label(RELOADED_FIRST)}
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[Label] = set()

    def reader() -> None:
        try:
            i = 0
            while not stop.is_set():
                seen.add(labeller.label(FIRST_IP))
                labeller.label(f"1.0.2.{i % 250}")  # evictions, misses
                i += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(20):
            _replace(fixture_db_b_path if i % 2 == 0 else fixture_db_path, live)
            r = _check(watcher)
            assert r is not None
            assert r.status == "reloaded"
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert seen <= allowed
    assert labeller.label(FIRST_IP) == _label(CASES[0][3])  # last swap: variant a


def test_watcher_run_reports_on_the_loop(live: Path, fixture_db_b_path: Path) -> None:
    results: list[ReloadResult] = []
    labeller, watcher = _watched(live, 8, on_result=results.append)

    async def scenario() -> None:
        task = asyncio.create_task(watcher.run(0.01))
        await asyncio.sleep(0.05)
        _replace(fixture_db_b_path, live)
        for _ in range(200):
            if results:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert [r.status for r in results] == ["reloaded"]
    assert labeller.label(FIRST_IP) == _label(RELOADED_FIRST)


# --- the builders ------------------------------------------------------------------------------------------


def test_demo_db_and_sample_ips(tmp_path: Path) -> None:
    from streams.devtools.mmdbbuild import build_demo_db, build_synthetic_db, sample_ips

    demo = build_demo_db(tmp_path / "demo.mmdb")
    labeller = Labeller.open(demo, 1024)
    for code in ("CN-GD", "CN-NM", "CN-XZ", "HK", "MO", "TW", "US", "JP", "CN"):
        ips = sample_ips(demo, code, 5, seed=3)
        assert len(ips) == 5
        assert any(":" in ip for ip in sample_ips(demo, code, 40, seed=3))  # IPv6 networks too
        assert {labeller.label(ip).territory.code for ip in ips} == {code}
    with pytest.raises(ValueError, match="no network"):
        sample_ips(demo, "AQ", 1)
    syn = build_synthetic_db(tmp_path / "syn.mmdb", 2000, seed=5)
    labeller = Labeller.open(syn, 1024)
    labels = [labeller.label(ip) for ip in sample_ips(syn, None, 500, seed=5)]
    assert all(lb.reason is None for lb in labels)
    assert sum(lb.territory.scope == "domestic" for lb in labels) > 200


def test_watcher_reloads_off_the_event_loop(live: Path, fixture_db_b_path: Path) -> None:
    """A reload opens and compiles in a thread: the loop keeps running while a (deliberately slow) reload
    goes on. The opener waits for the loop to turn; on the loop's own thread it would wait in vain."""
    ticked = threading.Event()
    threads: list[int] = []
    began: list[Callable[[], None]] = []  # tells the loop, from the opener's thread, that the reload began

    def slow_opener(path: Path) -> Source:
        threads.append(threading.get_ident())
        began[0]()
        if not ticked.wait(60):
            raise AssertionError("the event loop made no progress while the database was being reloaded")
        return open_database(path)

    results: list[ReloadResult] = []
    labeller, watcher = _watched(live, 8, opener=slow_opener)

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        started, done = asyncio.Event(), asyncio.Event()

        def on_result(result: ReloadResult) -> None:
            results.append(result)
            done.set()

        def tell_began() -> None:
            loop.call_soon_threadsafe(started.set)

        began.append(tell_began)
        watcher._on_result = on_result
        _replace(fixture_db_b_path, live)
        task = asyncio.create_task(watcher.run(0))
        await started.wait()
        for _ in range(5):  # the loop turns while the reload runs
            await asyncio.sleep(0)
        ticked.set()
        await done.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert loop_thread not in threads
    assert [r.status for r in results] == ["reloaded"]
    assert labeller.label(FIRST_IP) == _label(RELOADED_FIRST)
