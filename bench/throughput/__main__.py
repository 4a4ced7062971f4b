"""``python -m bench.throughput``: the command line of the throughput harness (see the package docstring)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from bench.throughput import __doc__ as _doc
from bench.throughput.harness import harness
from bench.throughput.options import REAL_SIZE_NETWORKS, Options, run_async
from streams.pipeline.geodb import parse_paths
from streams.testing import free_port

# click rewraps paragraphs; \b keeps the examples' lines as they are.
_HELP = (_doc or "").replace("Run from the repo root::\n\n", "Run from the repo root:\n\n\b\n")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)


def _db_list(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[Path, ...] | None:
    """``a.xdb,b.mmdb`` -> (a.xdb, b.mmdb): the ordered list SHUDI_GEOIP_DB takes."""
    if value is None:
        return None
    try:
        return tuple(parse_paths(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(
    name="python -m bench.throughput", help=_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--bootstrap", help="HOST:PORT of a running broker (else streams.devtools.localkafka starts one)"
)
@click.option("--events", type=click.IntRange(min=1), default=200_000, show_default=True)
@click.option("--tiny", is_flag=True, help="3k events; assert every event is accounted for (CI)")
@click.option("--long", "long_run", is_flag=True, help=">= 10M events, RSS reported every million")
@click.option("--partitions", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--rate", type=float, help="produce at this many events/s while each mode runs")
@click.option(
    "--warmup",
    type=float,
    default=5.0,
    show_default=True,
    help="with --rate: leave events of the first S seconds out of the latency figures (every mode)",
)
@click.option(
    "--db",
    callback=_db_list,
    metavar="FILE[,FILE...]",
    help="database file(s), an ordered comma-separated list as SHUDI_GEOIP_DB takes (.mmdb, .xdb, .ipdb; "
    "the naive mode uses the first .mmdb); else a synthetic .mmdb is built and cached",
)
@click.option("--networks", type=int, default=220_000, show_default=True, help="networks in the synthetic DB")
@click.option(
    "--real-size",
    is_flag=True,
    help=f"a synthetic DB of real size: {REAL_SIZE_NETWORKS:,} networks (~6.5 M nodes; built once, cached)",
)
@click.option("--distinct-ips", type=int, default=300_000, show_default=True)
@click.option("--modes", default="raw,naive,faust-relay,shudi", show_default=True)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="run the modes this many times in alternation on the same input; ratios per round and median",
)
@click.option(
    "--relay-variants",
    default="fast-drain+tuned+uvloop+quietlog,aiokafka+uvloop",
    show_default=True,
    help="bench.faust_relay variants, comma separated",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write the results here"
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="logs, Faust data dirs, profiles (default: a new temporary directory)",
)
@click.option("--profile", is_flag=True, help="py-spy each child while it processes (raw format)")
@click.option("--idle-timeout", type=float, default=20.0, show_default=True)
@click.option("--startup-timeout", type=float, default=120.0, show_default=True)
def main(
    bootstrap: str | None,
    events: int,
    tiny: bool,
    long_run: bool,
    partitions: int,
    rate: float | None,
    warmup: float,
    db: tuple[Path, ...] | None,
    networks: int,
    real_size: bool,
    distinct_ips: int,
    modes: str,
    rounds: int,
    relay_variants: str,
    json_path: Path | None,
    workdir: Path | None,
    profile: bool,
    idle_timeout: float,
    startup_timeout: float,
) -> None:
    if tiny:
        events = 3_000
    if long_run:
        events = max(events, 10_000_000)
    opts = Options(
        bootstrap=bootstrap or "",
        events=events,
        workdir=workdir or Path(tempfile.mkdtemp(prefix="shudi-bench-")),
        partitions=partitions,
        rate=rate,
        warmup=warmup,
        db=db,
        networks=REAL_SIZE_NETWORKS if real_size else networks,
        distinct_ips=distinct_ips,
        modes=_csv(modes),
        rounds=rounds,
        relay_variants=_csv(relay_variants),
        json=json_path,
        profile=profile,
        idle_timeout=idle_timeout,
        startup_timeout=startup_timeout,
        tiny=tiny,
        long=long_run,
    )
    if bootstrap:
        raise SystemExit(run_async(harness(opts)))
    from dataclasses import replace

    from streams.devtools import localkafka

    # localkafka.start runs asyncio.run itself: it must run before the harness's loop exists.
    broker = localkafka.start(port=free_port())
    try:
        raise SystemExit(run_async(harness(replace(opts, bootstrap=broker.bootstrap))))
    finally:
        localkafka.stop(broker)


if __name__ == "__main__":
    main()
