"""The rows of the fault matrix (``bench.faults``) about what a worker reads and writes besides Kafka:
hostile input (``poison-pills``), its GeoIP database file replaced under it (``geodb-swap``), and its data
directory full or read-only (``disk-full``).

Each :func:`plan` configures the row's workers on a :class:`bench.faults.Run`, returns the injection and the
duplicate bound as the other rows do, and registers the row's own checks of the outputs (``Run.checks``),
which run before the common ones (:func:`bench.faults.verify`).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.faultrows import with_scripted_burst
from bench.poison import PoisonReport, Sent, check_poison, hostile_messages, send_hostile
from streams.cli.errors import EXIT_FATAL, EXIT_USAGE
from streams.devtools.mmdbbuild import build_city_mmdb, demo_entries, sample_ips
from streams.devtools.sample import SampleEvent, sample_events
from streams.pipeline.enrich import MAX_DEAD_LETTER_ORIGINAL
from streams.pipeline.geodb.labeller import Labeller, compile_files
from streams.testing import metric_value

if TYPE_CHECKING:
    from bench.faults import Outputs, RowOptions, RowResult, Run

Inject = Callable[["Run"], None]


def plan(run: Run, options: RowOptions) -> tuple[Inject, int]:
    if options.fault == "poison-pills":
        return _poison_pills(run, options)
    if options.fault == "geodb-swap":
        return _geodb_swap(run, options)
    if options.fault == "disk-full":
        return _disk_full(run, options)
    raise ValueError(f"not a row of bench.faults_input: {options.fault}")


def _say(msg: str) -> None:
    from bench.faults import _say as say

    say(msg)


def _log_problems(run: Run, result: RowResult, ips: set[str]) -> None:
    """Worker logs: no traceback (bad input is not a bug), no input address."""
    tracebacks = sum(w.log().count("Traceback") for w in run.workers)
    result.notes["tracebacks"] = tracebacks
    if tracebacks:
        result.problems.append(f"{tracebacks} tracebacks in the worker logs")
    leaked = {ip for w in run.workers for ip in ips if ip in w.log()}
    if leaked:
        result.problems.append(f"{len(leaked)} input addresses in the worker logs")


# --------------------------------------------------------------------------- poison-pills


def _poison_pills(run: Run, options: RowOptions) -> tuple[Inject, int]:
    """``options.events`` hostile messages (bench.poison) sent as fast as the broker takes them into a
    live worker, while the row's ordinary comments flow at ``--rate``."""
    ips = sample_ips(run.db, None, n=400, seed=options.seed)
    messages = list(hostile_messages(ips, options.events, seed=options.seed))
    sent: list[Sent] = []

    def inject(r: Run) -> None:
        t0 = time.monotonic()
        sent.extend(asyncio.run(send_hostile(r.bootstrap, r.settings["SHUDI_INPUT_TOPIC"], messages)))
        mb = sum(m.size for m in messages) / 1e6
        _say(f"sent {len(sent)} hostile messages ({mb:.0f} MB) in {time.monotonic() - t0:.1f}s")

    def check(out: Outputs, result: RowResult) -> None:
        report = PoisonReport()
        dead_before = {k: list(v) for k, v in out.dead_at.items()}
        enriched_before = Counter(out.enriched)
        check_poison(sent, out.dead_at, out.enriched, report)
        # The hostile records that were valid comments were counted too: the counts check must expect them.
        for s in sent:
            event_id = s.message.event_id
            if (s.partition, s.offset) in dead_before or event_id is None or not enriched_before[event_id]:
                continue
            if s.message.value is not None:
                run.counted_extra.append(SampleEvent(s.message.value, event_id, None, None))
        # The hostile messages' dead letters are accounted for here: take them out of what verify() compares
        # with the ordinary comments' bad events (matched there by their original bytes, cut as shudi cuts).
        for s in sent:
            for reason in dead_before.get((s.partition, s.offset), []):
                value = s.message.value
                k = (None if value is None else value[:MAX_DEAD_LETTER_ORIGINAL], reason)
                out.dead[k] -= 1
                if out.dead[k] <= 0:
                    del out.dead[k]
        result.notes["poison"] = {
            "sent": report.sent,
            "enriched": report.enriched,
            "dead_lettered": dict(sorted(report.dead_reasons.items())),
            "lost": report.lost,
            "wrong": dict(report.wrong),
            "duplicates": report.duplicates,
        }
        result.problems.extend(report.problems)
        if report.duplicates > result.duplicate_bound:
            result.problems.append(f"{report.duplicates} hostile messages came out more than once")
        leaked = {ip for v in out.other_values for ip in ips if ip.encode() in v}
        if leaked:
            result.problems.append(f"{len(leaked)} addresses of hostile messages in the output topics")
        _log_problems(run, result, set(ips))

    run.checks.append(check)
    # No worker stops: nothing is delivered twice.
    return inject, 0


# --------------------------------------------------------------------------- geodb-swap

RELOADS = "shudi_geoip_database_reloads_total"


def other_demo_db(path: Path, build_epoch: int) -> Path:
    """A valid database unlike the demo one: every network of the demo database labelled as the next
    place's, and another build time, so both the build and the territory of a known address change."""
    entries = demo_entries()
    records = [record for _, record in entries]
    shift = 4  # each place has four networks: the next place's record
    return build_city_mmdb(
        path,
        [(cidr, records[(i + shift) % len(records)]) for i, (cidr, _) in enumerate(entries)],
        build_epoch=build_epoch,
    )


def _write_in_place(path: Path, data: bytes, chunks: int = 8, pause_s: float = 0.3) -> None:
    """What ``cp new.mmdb $SHUDI_GEOIP_DB`` does, slowed down: the same file truncated, then written in
    pieces, so the reloader (checking once a second) can catch it half-written."""
    with path.open("r+b" if path.exists() else "wb") as f:
        f.truncate(0)
        step = max(1, len(data) // chunks)
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(pause_s)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data)
    tmp.replace(path)


def _geodb_swap(run: Run, options: RowOptions) -> tuple[Inject, int]:
    """The worker's database file replaced by another valid build, then by a corrupt file, then removed,
    then restored: once by rename (atomic) and once written in place (truncate + write, as a careless
    copy does); each step waits for the worker's reload counter to move, and a valid build is kept for a
    few seconds so that events are labelled with it."""
    db_a = run.db
    data_a = db_a.read_bytes()
    run.expect_scripted_burst = False  # the swap relabels whole territories: see Run.expect_scripted_burst
    db_b = other_demo_db(run.workdir / "other.mmdb", build_epoch=int(time.time()) - 30 * 86400)
    data_b = db_b.read_bytes()
    garbage = os.urandom(len(data_a))
    half = data_a[: len(data_a) // 2]
    lab_a, lab_b = (Labeller(compile_files([p])) for p in (db_a, db_b))
    build_a, build_b = lab_a.build, lab_b.build
    if build_a == build_b:
        raise AssertionError(f"geodb-swap: both databases are build {build_a}")
    labellers = {build_a: lab_a, build_b: lab_b}
    steps: list[tuple[str, str]] = []  # (step, what the reload counter said)

    def reloads(r: Run, result: str) -> float:
        try:
            text = r.workers[0].metrics()
        except OSError:
            return -1.0
        return metric_value(text, RELOADS, {"db": db_a.name, "result": result}) or 0.0

    def step(r: Run, name: str, change: Callable[[], None], expect: str, hold_s: float = 0.0) -> None:
        before = {k: reloads(r, k) for k in ("success", "failure")}
        t0 = time.monotonic()
        change()
        deadline = t0 + 60
        while reloads(r, expect) <= before[expect]:
            if time.monotonic() > deadline:
                raise AssertionError(f"geodb-swap: no reload {expect} within 60s of {name}")
            if not r.workers[0].running():
                raise AssertionError(f"geodb-swap: the worker exited at {name}")
            time.sleep(0.2)
        after = {k: int(reloads(r, k) - before[k]) for k in ("success", "failure")}
        steps.append(
            (name, f"{after['success']} ok/{after['failure']} failed in {time.monotonic() - t0:.1f}s")
        )
        _say(f"geodb-swap: {name}: reloads {after}")
        time.sleep(hold_s)

    def inject(r: Run) -> None:
        hold = 2.0  # seconds a step lasts once the worker reacted: events labelled under each state
        writers: tuple[tuple[str, Callable[[Path, bytes], None]], ...] = (
            ("rename", _write_atomic),
            ("in place", _write_in_place),
        )
        for how, write in writers:
            step(r, f"other build ({how})", functools.partial(write, db_a, data_b), "success", hold)
            step(r, f"random bytes ({how})", functools.partial(write, db_a, garbage), "failure", hold)
            step(r, f"first half ({how})", functools.partial(write, db_a, half), "failure", hold)
            step(r, f"removed (after {how})", db_a.unlink, "failure", hold)
            step(r, f"restored ({how})", functools.partial(write, db_a, data_a), "success", hold)

    ips = sample_ips(db_a, None, n=400, seed=options.seed)
    # The events run_row sends: the sample and the scripted burst merged in (bench.faultrows).
    sent_events = with_scripted_burst(
        db_a, list(sample_events(ips, options.events, bad_fraction=0.01, seed=options.seed)), options.seed
    )
    ip_of = {
        e.event_id: e.ip
        for e in sent_events
        if e.event_id is not None and e.ip is not None and e.bad_reason is None
    }

    def check(out: Outputs, result: RowResult) -> None:
        builds: Counter[str] = Counter()
        wrong: Counter[str] = Counter()
        for value in out.other_values:
            body = json.loads(value)
            if "event_id" not in body:
                continue  # a counts record
            build, code = body.get("db_build"), body["territory"]["code"]
            builds[build] += 1
            lab = labellers.get(build)
            ip = ip_of.get(body["event_id"])
            if lab is None or ip is None:
                wrong[f"unknown build {build}"] += 1
            elif lab.label(ip).territory.code != code:
                wrong[f"{code} under {build}"] += 1
        result.notes["geodb"] = {
            "builds": {("A" if b == build_a else "B" if b == build_b else b): n for b, n in builds.items()},
            "mislabelled": wrong.total(),
            "steps": dict(steps),
        }
        if wrong:
            result.problems.append(f"{wrong.total()} records labelled unlike their db_build: {dict(wrong)}")
        if not builds[build_b]:
            result.problems.append("no record labelled by the other build: the swap was not seen")
        _log_problems(run, result, set(ips))

    run.checks.append(check)
    return inject, 0


# --------------------------------------------------------------------------- disk-full


TMPFS_SIZE = "64m"
FULL_EXIT_WAIT_S = 120.0  # how long a worker may take to notice its data directory is full and exit


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=60)


def _fill(directory: Path) -> int:
    """Write a filler file until the file system refuses: bytes written."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with (directory / "filler").open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
                written += len(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return written


def _disk_full(run: Run, options: RowOptions) -> tuple[Inject, int]:
    """The worker's data directory (``SHUDI_STORE=rocksdb://``, on a tmpfs of its own) filled up while it
    runs, then freed and made read-only before a new worker starts on it. The running worker must exit
    70 and the starting one 2, each with one line naming the cause, and a new worker on the same
    directory, once it is writable again, must go on where the last commit left off."""
    if os.geteuid() != 0:
        raise AssertionError("disk-full mounts a tmpfs: run it as root")
    run.settings["SHUDI_STORE"] = "rocksdb://"
    run.workers.clear()  # configured before the store was set
    run.worker("worker-1")
    data = run.workdir / "worker-1-data"
    data.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(data))
    run.cleanups.append(lambda: subprocess.run(["umount", "-l", str(data)], check=False, timeout=60))
    phases: list[dict[str, object]] = []

    def wait_exit(name: str, t0: float, expect: int) -> None:
        w = run.workers[-1]
        deadline = t0 + FULL_EXIT_WAIT_S
        while w.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        code = w.returncode()
        if code is None:
            w.kill()
        # The one line that names the cause (the rest of the log is Faust's stop).
        lines = [
            line
            for line in w.log().splitlines()
            if "cannot write the data directory" in line or line.startswith("shudi: the data directory")
        ]
        phase: dict[str, object] = {
            "fault": name,
            "exit": code,
            "expected_exit": expect,
            "exit_after_s": round(time.monotonic() - t0, 1),
            "line": lines[0][:300] if lines else None,
        }
        phases.append(phase)
        _say(f"disk-full: {phase}")

    def restart(name: str) -> None:
        new = run.worker(name, data="worker-1")
        new.start()
        new.wait_ready(240)

    def inject(r: Run) -> None:
        t0 = time.monotonic()
        filled = _fill(data)
        _say(f"disk-full: {data} filled ({filled >> 20} MiB of filler)")
        wait_exit("full", t0, EXIT_FATAL)
        (data / "filler").unlink()
        # Read-only: Linux refuses to remount a file system read-only while a process has a file open on it
        # for writing (EBUSY), so the worker meets it at start, as on a volume mounted read-only or a file
        # system the kernel remounted read-only after an I/O error.
        _mount("-o", "remount,ro", str(data))
        _say(f"disk-full: {data} read-only; starting a worker on it")
        t0 = time.monotonic()
        run.worker("worker-2", data="worker-1").start()
        wait_exit("read-only at start", t0, EXIT_USAGE)
        _mount("-o", "remount,rw", str(data))
        restart("worker-3")

    def check(out: Outputs, result: RowResult) -> None:
        result.notes["disk"] = phases
        for phase in phases:
            if phase["exit"] != phase["expected_exit"]:
                result.problems.append(
                    f"data dir {phase['fault']}: exit {phase['exit']}, not {phase['expected_exit']}"
                )
            if not phase["line"]:
                result.problems.append(f"data dir {phase['fault']}: no line naming the cause")

    run.checks.append(check)
    # Two workers stop without their final flush: each may leave one flush to be delivered again.
    return inject, 2 * options.in_flight_bound
