"""bench.throughput's bookkeeping, without a broker: which input event an output is, latency sampling, the
accounting check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
import pytest

from bench.throughput.__main__ import main
from bench.throughput.harness import input_events
from bench.throughput.measure import InputTimes, event_index
from bench.throughput.modes import plan_modes
from bench.throughput.options import Options
from bench.throughput.report import Result, percentile, ratios, unaccounted


def test_event_index_from_the_key_or_the_value() -> None:
    assert event_index(b"e2-17", b"") == 17
    assert event_index(None, json.dumps({"event_id": "e2-5"}).encode()) == 5
    assert event_index(None, b"not json") is None
    assert event_index(None, b'{"event_id": 3}') is None


def test_input_times_sample_and_skip_the_warmup() -> None:
    times = InputTimes(1_200_000)
    assert times.stride == 2
    times.ts[0], times.ts[5] = 1000, 9000
    times.since = 5000
    assert times.sent_at(b"e2-10", b"") == 9000
    assert times.sent_at(b"e2-0", b"") is None  # before the warm-up's end
    assert times.sent_at(b"e2-11", b"") is None  # not sampled
    assert times.sent_at(b"e2-2", b"") is None  # never read


def test_input_events_are_keyed_by_their_position() -> None:
    ips = [f"1.0.0.{i}" for i in range(1, 200)]
    events = list(input_events(500, ips))
    assert [event_index(k, v) for k, v in events] == list(range(500))
    assert 400 < sum(len(v) for _, v in events) / len(events) < 800


def test_report_helpers() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([1, 2, 3, 4], 0.5) == 3.0
    ok, short = Result("raw", outputs=90, dead_letters=10), Result("naive", outputs=90)
    assert unaccounted([ok, short, Result("x", ran=False)], 100) == [
        "ACCOUNTING FAILED for naive: 90 outputs + 0 dead letters != 100 inputs"
    ]


def test_every_mode_has_its_own_topics_and_group(tmp_path: Path) -> None:
    opts = Options(
        "127.0.0.1:9",
        1000,
        tmp_path,
        db=(tmp_path / "x.mmdb",),
        modes=("raw", "naive", "faust-relay", "shudi", "shudi-x2"),
    )
    modes = plan_modes(opts, "bench-t", "bench-t-in")
    assert [m.name for m in modes][:2] == ["raw", "naive"]
    assert len(modes) == 6
    assert [len(m.processes) for m in modes][-2:] == [1, 2]
    assert all(m.input_topic == "bench-t-in" for m in modes)
    outs = [t for m in modes for t in m.output_topics]
    assert len(outs) == len(set(outs))
    assert len({m.group for m in modes}) == len(modes)
    assert all("bench-t" in t for t in outs)


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("a.mmdb", ["a.mmdb"]),
        ("v4.xdb,v6.xdb,city.mmdb", ["v4.xdb", "v6.xdb", "city.mmdb"]),
        (" x.ipdb , y.mmdb ,", ["x.ipdb", "y.mmdb"]),
    ],
)
def test_db_takes_an_ordered_comma_separated_list(given: str, want: list[str]) -> None:
    """``--db`` parses as SHUDI_GEOIP_DB does: an ordered list of files."""
    ctx = main.make_context("bench.throughput", ["--db", given])
    assert ctx.params["db"] == tuple(Path(p) for p in want)
    assert main.make_context("bench.throughput", []).params["db"] is None  # a synthetic .mmdb then


def test_db_refuses_an_empty_list() -> None:
    with pytest.raises(click.BadParameter, match="no database file"):
        main.make_context("bench.throughput", ["--db", " , "])


def test_modes_get_the_list_in_order_and_the_loops_its_mmdb(tmp_path: Path) -> None:
    db = (tmp_path / "v4.xdb", tmp_path / "city.mmdb", tmp_path / "other.mmdb")
    opts = Options("127.0.0.1:9", 1000, tmp_path, db=db, modes=("raw", "naive", "shudi"))
    raw, naive, shudi = plan_modes(opts, "bench-t", "bench-t-in")
    for mode in (raw, naive):
        args = mode.processes[0].args
        assert args[args.index("--db") + 1] == str(db[1])
    assert shudi.processes[0].env["SHUDI_GEOIP_DB"] == ",".join(str(p) for p in db)
    with pytest.raises(ValueError, match=r"naive mode needs a \.mmdb"):
        plan_modes(replace(opts, db=db[:1]), "bench-t", "bench-t-in")


def test_ratios_compare_modes_of_the_same_round() -> None:
    """With --rounds, each ratio is taken between modes run next to each other, never across rounds."""
    rates = {(1, "raw"): 40_000.0, (1, "shudi"): 30_000.0, (2, "raw"): 20_000.0, (2, "shudi"): 19_000.0}
    rates |= {(1, "naive"): 10_000.0}
    results = [Result(mode, events_per_s=v, round=k) for (k, mode), v in rates.items()]
    got = ratios(results)
    assert got["shudi/raw"] == [rates[1, "shudi"] / rates[1, "raw"], rates[2, "shudi"] / rates[2, "raw"]]
    assert got["shudi/naive"] == [rates[1, "shudi"] / rates[1, "naive"]]
    assert main.make_context("bench.throughput", ["--rounds", "3"]).params["rounds"] == 3
    with pytest.raises(click.BadParameter):
        main.make_context("bench.throughput", ["--rounds", "0"])
