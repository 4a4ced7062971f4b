"""The modes the harness compares, each one or more child processes reading the same input:

* ``raw`` and ``naive``: the plain aiokafka loops of :mod:`bench.throughput.loops`;
* ``faust-relay[VARIANT]``: a bare Faust worker of :mod:`bench.faust_relay`, one per ``--relay-variants``;
* ``shudi`` and ``shudi-x2``: one ``shudi worker``, or two in one group sharing the partitions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.throughput.options import REPO_ROOT, Options
from streams.testing import ChildProcess, WorkerProcess, child_env, run_settings


@dataclass
class Mode:
    name: str
    input_topic: str
    out_topic: str
    dlq_topic: str | None
    group: str
    processes: list[ChildProcess]  # started side by side; the first is the one --profile samples

    @property
    def output_topics(self) -> list[str]:
        return [self.out_topic] + ([self.dlq_topic] if self.dlq_topic else [])


def plan_modes(opts: Options, run_tag: str, shared_input: str | None) -> list[Mode]:
    """The modes ``opts`` asks for, their topics named after ``run_tag``; each reads ``shared_input`` (a
    preloaded backlog) or, with ``--rate``, its own input produced while it runs."""
    assert opts.db is not None
    modes: list[Mode] = []
    # The loops read a GeoIP2-City .mmdb with geoip2 (naive) or nothing (raw): the first .mmdb of the list.
    mmdb = next((p for p in opts.db if p.suffix == ".mmdb"), None)
    for name in ("raw", "naive"):
        if name in opts.modes:
            if name == "naive" and mmdb is None:
                raise ValueError("the naive mode needs a .mmdb in --db")
            modes.append(_loop_mode(opts, name, _Names(run_tag, name, shared_input), mmdb))
    if "faust-relay" in opts.modes:
        for variant in opts.relay_variants:
            modes.append(_relay_mode(opts, variant, _Names(run_tag, f"faust-relay[{variant}]", shared_input)))
    # Two workers in one group share the partitions: on 2 cores with the broker beside them, the gain is
    # bounded by the cores, not by shudi.
    for name, workers in (("shudi", 1), ("shudi-x2", 2)):
        if name in opts.modes:
            modes.append(_shudi_mode(opts, workers, _Names(run_tag, name, shared_input), opts.db))
    return modes


class _Names:
    """A mode's topic, group and log names."""

    def __init__(self, run_tag: str, mode: str, shared_input: str | None) -> None:
        # Kafka topic names (and Faust's app-id-derived ones) allow only [A-Za-z0-9._-].
        tag = mode.replace("[", "-").replace("]", "").replace(",", "-").replace("+", ".")
        self.mode = mode
        self.tag = tag
        self.input = shared_input or f"{run_tag}-in-{tag}"
        self.out = f"{run_tag}-out-{tag}"
        self.dlq = f"{run_tag}-dlq-{tag}"
        self.group = f"{run_tag}-{tag}"


def _child(opts: Options, names: _Names, args: list[str]) -> ChildProcess:
    log = opts.workdir / f"{names.tag}.log"
    return ChildProcess(names.mode, [sys.executable, *args], child_env(), log, cwd=REPO_ROOT)


def _loop_mode(opts: Options, name: str, names: _Names, db: Path | None) -> Mode:
    args = ["-m", "bench.throughput.loops", name, "--bootstrap", opts.bootstrap]
    args += ["--db", str(db)] if db is not None else []
    args += ["--in-topic", names.input, "--out-topic", names.out, "--dlq-topic", names.dlq]
    args += ["--group", names.group]
    dlq = names.dlq if name == "naive" else None
    return Mode(names.mode, names.input, names.out, dlq, names.group, [_child(opts, names, args)])


def _relay_mode(opts: Options, variant: str, names: _Names) -> Mode:
    args = ["-m", "bench.faust_relay", "--variant", variant, "--bootstrap", opts.bootstrap]
    args += ["--in-topic", names.input, "--out-topic", names.out, "--app-id", names.group]
    args += ["--data-dir", str(opts.workdir / names.group), "--partitions", str(opts.partitions)]
    return Mode(names.mode, names.input, names.out, None, names.group, [_child(opts, names, args)])


def _shudi_mode(opts: Options, workers: int, names: _Names, db: tuple[Path, ...]) -> Mode:
    settings = run_settings(opts.bootstrap, names.group, partitions=opts.partitions) | {
        "SHUDI_INPUT_TOPIC": names.input,
        "SHUDI_ENRICHED_TOPIC": names.out,
        "SHUDI_DLQ_TOPIC": names.dlq,
        "SHUDI_GEOIP_DB": ",".join(str(p) for p in db),
        "SHUDI_METRICS_PORT": "0",
        "SHUDI_LOG_LEVEL": "error",
    }
    processes: list[ChildProcess] = [
        WorkerProcess.configure(opts.workdir, f"{names.group}-{i}", settings) for i in range(workers)
    ]
    return Mode(names.mode, names.input, names.out, names.dlq, names.group, processes)
