"""A throwaway single-node Kafka (KRaft) for development and tests, without Docker.

Jars come from Maven Central through ``mvn`` (needs only ``java`` 17+ and ``mvn`` on PATH) and
are cached outside the repo; every broker gets its own data directory and a state file keyed
by port, so ``shudi kafka stop --port N`` works from another process.

POSIX only: the broker runs in its own session so it outlives ``start`` and is stopped by
signalling its process group.

``secure=True`` (``shudi kafka start --secure``) runs it with TLS, SASL/SCRAM, mutual TLS and the ACL
authorizer instead of the PLAINTEXT listener (:mod:`streams.devtools.securekafka`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from streams.cli.errors import EXIT_FAILED, CommandError
from streams.devtools.securekafka import (
    DEFAULT_SCRAM_USERS,
    DEFAULT_TLS_USERS,
    SecureSetup,
    make_secure_setup,
)
from streams.runtime.admin import probe
from streams.runtime.kafka import KafkaConnection
from streams.testing import free_port, port_in_use, user_cache_dir

__all__ = [
    "KAFKA_VERSION",
    "Broker",
    "BrokerError",
    "cache_root",
    "ensure_jars",
    "kafka",
    "kafka_version",
    "start",
    "status",
    "stop",
]

# The only place the default Kafka version lives; the cache directory is named after the version so an
# upgrade fetches into a fresh directory instead of mixing jars. ``KAFKA_LOCAL_VERSION`` picks another one
# (the fault harness runs its rows on several): see :func:`kafka_version`.
KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka's jars log through slf4j 1.x; without a binding the broker logs nothing at all.
LOG4J_VERSION = "2.24.3"
# Pinned so the fetch does not depend on which plugin version the local mvn defaults to.
DEPENDENCY_PLUGIN_VERSION = "2.8"

_MARKER = ".complete"
_LOG_TAIL_LINES = 40

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by streams/devtools/localkafka.py: only used to fetch a Kafka broker's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>shudi.local</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala_version}</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{plugin_version}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""

# Quiet by default (a dev broker left running for days should not fill the disk with INFO), but
# keep kafka.server at INFO so startup/shutdown and the reason for a failed start are in the log.
_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server
logger.server.level = info
"""


def kafka_version() -> str:
    """The Kafka version of the local broker: ``$KAFKA_LOCAL_VERSION``, or :data:`KAFKA_VERSION`."""
    return os.environ.get("KAFKA_LOCAL_VERSION") or KAFKA_VERSION


def _pom(version: str) -> str:
    return _POM.format(
        kafka_version=version,
        scala_version=SCALA_VERSION,
        log4j_version=LOG4J_VERSION,
        plugin_version=DEPENDENCY_PLUGIN_VERSION,
    )


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


@dataclass
class Broker:
    port: int
    controller_port: int
    pid: int
    data_dir: Path
    throwaway: bool
    startup_s: float = 0.0
    # Listeners, users and certificates of a secured broker (`start(secure=True)`); None: PLAINTEXT.
    secure: SecureSetup | None = None
    # Only set in the process that started the broker; lets stop() reap the child cleanly.
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def connection(self) -> KafkaConnection:
        """How to reach it with every right: PLAINTEXT, or the SCRAM super user of a secured broker."""
        return self.secure.admin() if self.secure is not None else KafkaConnection.plaintext(self.bootstrap)

    def to_json(self) -> dict[str, Any]:
        return {
            "kafka_version": kafka_version(),
            "port": self.port,
            "controller_port": self.controller_port,
            "pid": self.pid,
            "data_dir": str(self.data_dir),
            "throwaway": self.throwaway,
            "secure": self.secure.to_json() if self.secure is not None else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Broker:
        return cls(
            port=int(raw["port"]),
            controller_port=int(raw["controller_port"]),
            pid=int(raw["pid"]),
            data_dir=Path(raw["data_dir"]),
            throwaway=bool(raw["throwaway"]),
            secure=SecureSetup.from_json(raw["secure"]) if raw.get("secure") else None,
        )


# --------------------------------------------------------------------------- jars


def cache_root() -> Path:
    explicit = os.environ.get("KAFKA_LOCAL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return user_cache_dir() / f"kafka-{kafka_version()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Parallel test workers or two terminals may fetch at once; one fetch, the rest wait for it.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Return a directory holding the broker's jars, fetching them with mvn the first time."""
    root = cache_dir if cache_dir is not None else cache_root()
    jars = root / "jars"
    marker = jars / _MARKER
    if marker.exists():
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("`mvn` not found on PATH; it is needed once to fetch the Kafka jars")
    with _locked(root / ".fetch.lock"):
        if marker.exists():  # another process finished the fetch while we waited
            return jars
        pom = root / "pom.xml"
        pom.write_text(_pom(kafka_version()))
        # Fetch into a scratch dir and rename: an interrupted download never looks complete.
        # Leftovers of a killed fetch are safe to drop: we hold the lock.
        for stale in root.glob("jars.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f"jars.partial-{os.getpid()}"
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(partial.glob(f"kafka_{SCALA_VERSION}-*.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            output = (result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:]
            raise BrokerError(
                f"fetching Kafka {kafka_version()} jars failed (exit {result.returncode}):\n"
                + "\n".join(output)
            )
        (partial / _MARKER).write_text(f"kafka {kafka_version()}\n")
        shutil.rmtree(jars, ignore_errors=True)
        partial.rename(jars)
    return jars


# --------------------------------------------------------------------------- start / stop


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    # Readiness polling expects refused connections; aiokafka logs each one at ERROR, which would
    # bury the one line `start`/`status` prints.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _ask(kafka: KafkaConnection | str, timeout: float, warm_group_coordinator: bool = False) -> None:
    check = probe(kafka, warm_group_coordinator=warm_group_coordinator)
    with _quiet_aiokafka():
        asyncio.run(asyncio.wait_for(check, timeout))


def _state_path(port: int) -> Path:
    return cache_root() / "run" / f"broker-{port}.json"


def _load_state(port: int) -> Broker | None:
    try:
        return Broker.from_json(json.loads(_state_path(port).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _server_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    secure: SecureSetup | None = None,
    proxied: tuple[int, int] | None = None,
) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Static voters let `format` run without --standalone and keep restarts of a kept
        # data dir trivial.
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        # shudi creates its topics explicitly; a typo should fail loudly, not make a new topic.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Internal topics default to RF 3 / 50 partitions, which a single node cannot (or need
        # not) host.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "4",
        # Tests create many short-lived groups; the default 3 s delay would slow each one.
        "group.initial.rebalance.delay.ms": "0",
        # Small segments and retention so a long-lived dev broker stays small on disk.
        "log.segment.bytes": str(16 * 1024 * 1024),
        "log.retention.bytes": str(64 * 1024 * 1024),
        "log.retention.hours": "24",
        "log.retention.check.interval.ms": "60000",
        # The default 128 MiB dedupe buffer is a quarter of a 512 MiB heap.
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }
    if secure is not None:
        props.update(secure.server_properties(controller_port))
    if proxied is not None:
        # A second PLAINTEXT listener whose advertised address is a proxy's in front of it: a client that
        # bootstraps through the proxy learns the proxy's address from metadata, so its reconnections go
        # through the proxy too, while clients of the first listener reach the broker directly.
        bound, advertised = proxied
        props["listeners"] += f",PROXIED://127.0.0.1:{bound}"
        props["advertised.listeners"] += f",PROXIED://127.0.0.1:{advertised}"
        props["listener.security.protocol.map"] += ",PROXIED:PLAINTEXT"
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _cluster_id() -> str:
    # Same shape as `kafka-storage random-uuid` (URL-safe base64, no padding) without paying
    # for an extra JVM start; Kafka rejects ids beginning with '-'.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("`java` (17 or newer) not found on PATH")
    return java


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _previous_controller_port(props: Path) -> int | None:
    try:
        for line in props.read_text().splitlines():
            if line.startswith("controller.quorum.voters="):
                return int(line.rsplit(":", 1)[1])
    except (OSError, ValueError):
        return None
    return None


def start(
    port: int = 9092,
    controller_port: int | None = None,
    data_dir: Path | None = None,
    heap: str = "512m",
    wait_s: float = 120,
    *,
    secure: bool = False,
    ssl_port: int | None = None,
    scram_users: tuple[str, ...] = DEFAULT_SCRAM_USERS,
    tls_users: tuple[str, ...] = DEFAULT_TLS_USERS,
    proxied: tuple[int, int] | None = None,
) -> Broker:
    """Start a detached single-node broker on 127.0.0.1:port and wait until it answers metadata.

    A ``data_dir`` given by the caller is kept (and reused if already formatted); without one a
    throwaway temp dir is created and deleted again by :func:`stop`.
    ``secure``: no PLAINTEXT listener; ``port`` is a SASL_SSL listener and ``ssl_port`` (default: any free
    port) an SSL listener requiring client certificates, with ACLs enforced (see
    :mod:`streams.devtools.securekafka`; ``scram_users`` and ``tls_users`` are the clients made for it).
    ``proxied=(bound, advertised)``: a second PLAINTEXT listener on ``bound``, advertised as ``advertised``
    (a TCP proxy in front of it, e.g. ``bench.faultproxy``); not with ``secure``.
    Must not be called from inside a running event loop (it uses ``asyncio.run``).
    """
    if port_in_use(port):
        raise BrokerError(f"127.0.0.1:{port} is already in use (a broker already running? try `status`)")
    if proxied is not None and secure:
        raise BrokerError("a proxied listener is PLAINTEXT: not with a secured broker")
    java = _java()
    jars = ensure_jars()

    throwaway = data_dir is None
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix=f"shudi-kafka-{port}-"))
    else:
        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
    props_path = data_dir / "server.properties"
    log_dir = data_dir / "logs"
    formatted = (log_dir / "meta.properties").exists()
    if controller_port is None:
        # A kept data dir remembers its controller address in the quorum state; reuse it.
        controller_port = (_previous_controller_port(props_path) if formatted else None) or free_port()
    if port_in_use(controller_port):
        if throwaway:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise BrokerError(f"controller port 127.0.0.1:{controller_port} is already in use")

    setup = _secure_setup(data_dir, throwaway, port, ssl_port, scram_users, tls_users) if secure else None
    props_path.write_text(_server_properties(port, controller_port, log_dir, setup, proxied))
    props_path.chmod(0o600)  # a secured broker's file holds the PLAIN users' passwords
    jvm = _jvm_command(java, heap, jars, data_dir)
    if not formatted:
        _format_storage(jvm, props_path, data_dir, throwaway, setup.format_args() if setup else [])
    t0 = time.monotonic()
    broker = _launch(jvm, port, controller_port, data_dir, throwaway, setup)
    _wait_ready(broker, t0 + wait_s, wait_s)
    broker.startup_s = time.monotonic() - t0
    return broker


def _secure_setup(
    data_dir: Path,
    throwaway: bool,
    port: int,
    ssl_port: int | None,
    scram_users: tuple[str, ...],
    tls_users: tuple[str, ...],
) -> SecureSetup:
    """The certificates, passwords and users of a secured broker, under ``data_dir/secure``."""
    if ssl_port is None:
        ssl_port = free_port()
    try:
        if port_in_use(ssl_port):
            raise BrokerError(f"SSL port 127.0.0.1:{ssl_port} is already in use")
        try:
            return make_secure_setup(data_dir / "secure", port, ssl_port, scram_users, tls_users)
        except RuntimeError as exc:
            raise BrokerError(str(exc)) from None
    except BrokerError:
        if throwaway:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise


def _jvm_command(java: str, heap: str, jars: Path, data_dir: Path) -> list[str]:
    """``java`` with the broker's heap, logging configuration (written to ``data_dir``) and classpath."""
    log4j = data_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    classpath = f"{jars}{os.sep}*"
    return [
        java,
        f"-Xmx{heap}",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
    ]


def _format_storage(
    jvm: list[str], props_path: Path, data_dir: Path, throwaway: bool, extra: list[str]
) -> None:
    """``StorageTool format``; ``extra``: e.g. the ``--add-scram`` users of a secured broker."""
    fmt = subprocess.run(
        [*jvm, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props_path), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        if throwaway:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")


def _launch(
    jvm: list[str],
    port: int,
    controller_port: int,
    data_dir: Path,
    throwaway: bool,
    secure: SecureSetup | None = None,
) -> Broker:
    """Start the broker process, detached, and write its pid and state files."""
    with (data_dir / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(data_dir / "server.properties")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            # Own session: Ctrl-C in the terminal that ran `start` must not kill the broker.
            start_new_session=True,
        )
    broker = Broker(port, controller_port, proc.pid, data_dir, throwaway, secure=secure, proc=proc)
    (data_dir / "kafka.pid").write_text(f"{proc.pid}\n")
    state = _state_path(port)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(broker.to_json(), indent=2) + "\n")
    return broker


def _wait_ready(broker: Broker, deadline: float, wait_s: float) -> None:
    """Until the broker answers metadata (and a group-coordinator lookup). A broker that exits, or is not
    ready at the monotonic ``deadline`` (``wait_s`` after its start), is cleaned up and raises BrokerError
    with its log's tail."""
    assert broker.proc is not None
    last: BaseException | None = None
    while True:
        if broker.proc.poll() is not None:
            tail = _log_tail(broker.log_path)
            _cleanup(broker)
            raise BrokerError(
                f"Kafka exited with code {broker.proc.returncode} during startup; log tail:\n{tail}"
            )
        try:
            if not port_in_use(broker.port):
                raise ConnectionRefusedError(f"nothing listening on 127.0.0.1:{broker.port} yet")
            _ask(broker.connection, 10, warm_group_coordinator=True)
        except Exception as exc:  # noqa: BLE001 - any failure just means "not ready yet"
            last = exc
        else:
            break
        if time.monotonic() > deadline:
            tail = _log_tail(broker.log_path)
            stop(broker)
            raise BrokerError(
                f"Kafka on {broker.bootstrap} not ready after {wait_s:.0f}s (last error: {last!r}); "
                f"log tail:\n{tail}"
            )
        time.sleep(0.5)


def _alive(broker: Broker) -> bool:
    if broker.proc is not None:
        return broker.proc.poll() is None
    # Reap it if it happens to be our child (started by this process through the state file),
    # otherwise a zombie would look alive to kill(pid, 0) forever.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(broker.pid, os.WNOHANG)
        if reaped == broker.pid:
            return False
    try:
        os.kill(broker.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _is_our_kafka(broker)


def _is_our_kafka(broker: Broker) -> bool:
    # Guards against a recycled pid after a reboot or a long-dead broker: only signal a process
    # whose command line names this broker's server.properties.
    cmdline = Path(f"/proc/{broker.pid}/cmdline")
    if not Path("/proc/self/cmdline").exists():
        return True  # no procfs (macOS): trust the state file
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in args and str(broker.data_dir / "server.properties").encode() in args


def _signal(broker: Broker, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(broker.pid, sig)


def _wait_dead(broker: Broker, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(broker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _cleanup(broker: Broker) -> None:
    if broker.proc is not None:
        broker.proc.wait()
    state = _state_path(broker.port)
    if (existing := _load_state(broker.port)) is not None and existing.pid == broker.pid:
        state.unlink(missing_ok=True)
    if broker.throwaway:
        shutil.rmtree(broker.data_dir, ignore_errors=True)
    else:
        (broker.data_dir / "kafka.pid").unlink(missing_ok=True)


def stop(target: Broker | int = 9092, timeout: float = 30.0) -> bool:
    """Stop a broker (given directly or by port via its state file); True if one was running.

    SIGTERM first so Kafka shuts down cleanly (a kept data dir then restarts without log
    recovery), SIGKILL after ``timeout``; a throwaway data dir is removed afterwards.
    """
    broker = target if isinstance(target, Broker) else _load_state(target)
    if broker is None:
        return False
    if not _alive(broker):
        _cleanup(broker)
        return False
    _signal(broker, signal.SIGTERM)
    if not _wait_dead(broker, timeout):
        _signal(broker, signal.SIGKILL)
        if not _wait_dead(broker, 10):
            raise BrokerError(f"Kafka pid {broker.pid} survived SIGKILL")
    _cleanup(broker)
    return True


def status(port: int = 9092, timeout: float = 5.0) -> bool:
    """True when a Kafka broker on 127.0.0.1:port answers a metadata request."""
    if not port_in_use(port):
        return False  # fail fast; the client would otherwise retry until its timeout
    state = _load_state(port)
    kafka = state.connection if state is not None else KafkaConnection.plaintext(f"127.0.0.1:{port}")
    try:
        _ask(kafka, timeout)
    except Exception:  # noqa: BLE001 - anything but a good answer means "not usable"
        return False
    return True


# --------------------------------------------------------------------------- CLI


@click.group(name="kafka")
def kafka() -> None:
    """A local single-node Kafka for development and tests (no Docker needed)."""


@kafka.command()
def fetch() -> None:
    """Download the Kafka jars into the cache (done automatically by `start`)."""
    t0 = time.monotonic()
    jars = ensure_jars()
    click.echo(f"Kafka {kafka_version()} jars in {jars} ({time.monotonic() - t0:.1f}s)")


_port_option = click.option("--port", default=9092, show_default=True, help="PLAINTEXT port on 127.0.0.1.")


@kafka.command(name="start")
@_port_option
@click.option("--controller-port", type=int, default=None, help="KRaft controller port [default: any free].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep data here across restarts [default: a temp dir deleted by `stop`].",
)
@click.option("--heap", default="512m", show_default=True, help="JVM -Xmx.")
@click.option("--wait", "wait_s", default=120.0, show_default=True, help="Seconds to wait for readiness.")
@click.option("--foreground", is_flag=True, help="Stay attached; Ctrl-C stops the broker.")
@click.option(
    "--secure",
    is_flag=True,
    help="TLS and SASL/SCRAM on PORT, mutual TLS on --ssl-port, ACLs enforced; no PLAINTEXT listener.",
)
@click.option("--ssl-port", type=int, default=None, help="With --secure: mutual-TLS port [default: free].")
def start_cmd(
    port: int,
    controller_port: int | None,
    data_dir: Path | None,
    heap: str,
    wait_s: float,
    foreground: bool,
    secure: bool,
    ssl_port: int | None,
) -> None:
    """Start a broker on 127.0.0.1:PORT and return once it is ready."""
    existing = _load_state(port)
    if existing is not None and _alive(existing) and status(port):
        click.echo(f"Kafka already running on 127.0.0.1:{port} (pid {existing.pid}, {existing.data_dir})")
        if existing.secure is not None:
            click.echo(client_settings_text(existing.secure))
        return
    try:
        broker = start(port, controller_port, data_dir, heap, wait_s, secure=secure, ssl_port=ssl_port)
    except BrokerError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from exc
    click.echo(
        f"Kafka {kafka_version()} ready on {broker.bootstrap} in {broker.startup_s:.1f}s "
        f"(pid {broker.pid}, log {broker.log_path})"
    )
    if broker.secure is not None:
        click.echo(client_settings_text(broker.secure))
    if not foreground:
        click.echo(f"Stop it with: shudi kafka stop --port {port}")
        return

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # The broker is in its own session, so a SIGTERM to us would not reach it: forward it.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        assert broker.proc is not None
        code = broker.proc.wait()
        click.echo(f"Kafka exited with code {code}; log tail:\n{_log_tail(broker.log_path)}", err=True)
        _cleanup(broker)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("stopping Kafka ...")
        stop(broker)


def client_settings_text(setup: SecureSetup) -> str:
    """What `start --secure` prints: the listeners and the client settings for each kind of client."""
    scram_user, tls_user = setup.scram_users[0], setup.tls_users[0]
    lines = [
        f"secured: SASL_SSL (SCRAM-SHA-512/256, PLAIN) on {setup.sasl_bootstrap}, SSL with client "
        f"certificates on {setup.ssl_bootstrap}; CA {setup.ca_file}",
        "ACLs are enforced (nothing is allowed without one); super users: admin (SCRAM) and the broker.",
        f"Grant the worker's ACLs with: shudi kafka grant --port {setup.sasl_port} --user {scram_user}",
        f"SCRAM-SHA-512 as {scram_user}:",
        "  export " + " ".join(f"{k}={v}" for k, v in setup.scram_env(scram_user).items()),
        f"mutual TLS as User:CN={tls_user}:",
        "  export " + " ".join(f"{k}={v}" for k, v in setup.tls_env(tls_user).items()),
    ]
    return "\n".join(lines)


@kafka.command(name="grant")
@_port_option
@click.option("--user", "users", multiple=True, help="SCRAM user to grant to (User:<name>).")
@click.option("--tls-user", "tls_users", multiple=True, help="Certificate CN to grant to (User:CN=<name>).")
@click.option("--no-create", is_flag=True, help="No CREATE: someone else creates the topics.")
def grant_cmd(port: int, users: tuple[str, ...], tls_users: tuple[str, ...], no_create: bool) -> None:
    """Give principals of the secured broker on PORT the ACLs a worker with the current SHUDI_* settings
    needs (the README's production checklist), plus CREATE on its topics unless --no-create."""
    from streams.cli.errors import settings_or_exit
    from streams.runtime.access import required_acls
    from streams.runtime.admin import create_acls

    state = _load_state(port)
    if state is None or state.secure is None:
        raise CommandError(f"no secured local broker on port {port} (start one with `start --secure`)")
    settings = settings_or_exit()
    acls = required_acls(settings, create_topics=not no_create)
    principals = [f"User:{u}" for u in users] + [f"User:CN={u}" for u in tls_users]
    if not principals:
        principals = [f"User:{state.secure.scram_users[0]}", f"User:CN={state.secure.tls_users[0]}"]
    rules = [(a.resource, a.name, int(a.operation)) for a in acls]
    for principal in principals:
        asyncio.run(create_acls(state.connection, principal, rules))
        click.echo(f"{principal}: " + ", ".join(str(a) for a in acls))


@kafka.command(name="stop")
@_port_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds before SIGKILL.")
def stop_cmd(port: int, timeout: float) -> None:
    """Stop the broker started by `start --port PORT`."""
    try:
        stopped = stop(port, timeout)
    except BrokerError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from exc
    click.echo(f"stopped Kafka on 127.0.0.1:{port}" if stopped else f"no local Kafka running on port {port}")


@kafka.command(name="status")
@_port_option
def status_cmd(port: int) -> None:
    """Exit 0 if a broker answers on 127.0.0.1:PORT, else 1."""
    if status(port):
        state = _load_state(port)
        where = f" (pid {state.pid}, {state.data_dir})" if state is not None else ""
        click.echo(f"Kafka reachable on 127.0.0.1:{port}{where}")
        sys.exit(0)
    click.echo(f"no Kafka reachable on 127.0.0.1:{port}")
    sys.exit(1)


if __name__ == "__main__":
    kafka()
