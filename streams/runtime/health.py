"""Liveness and readiness of a worker, and the HTTP endpoint that serves them beside ``/metrics``.

A process that is up is not necessarily working: an agent can die inside a live worker (faust-streaming
issues 175 and 640) or a consumer can stop making progress. ``/healthz`` fails in both cases, so a
Kubernetes liveness probe or a compose healthcheck restarts the worker; ``/readyz`` also waits for the
worker to have started consuming.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


@dataclass
class Health:
    """What the consuming loops report, and the verdicts derived from it. Written by the event loop's
    thread, read by the HTTP server's: every field is a single value, replaced whole."""

    stall_timeout_s: float
    clock: Callable[[], float] = time.monotonic
    started: bool = False
    fatal: str | None = None
    lag: int = 0
    last_poll: float = field(default=0.0)
    last_progress: float = field(default=0.0)
    # Longest a worker whose data directory failed takes to stop: the enrichment loop's final flush and
    # commit (about a second when the broker answers) and little else.
    storage_stop_deadline_s: float = 20.0

    def mark_started(self) -> None:
        now = self.clock()
        self.last_poll = self.last_progress = now
        self.started = True

    def polled(self, lag: int) -> None:
        """The consumer loop came round (with or without records); ``lag``: messages behind in all."""
        now = self.clock()
        self.last_poll = now
        if lag == 0 or lag < self.lag:
            self.last_progress = now
        self.lag = lag

    def progressed(self) -> None:
        self.last_progress = self.clock()

    def mark_fatal(self, reason: str) -> None:
        self.fatal = reason

    def stop_worker(self, stage: str, exc: BaseException) -> None:
        """A stage died: fail ``/healthz`` and stop the worker, which then exits with ``EXIT_FATAL`` (70).

        A worker whose stage died but that goes on running is the failure mode to avoid (faust-streaming
        issues 175 and 640: an agent's exception leaves a live process that no longer consumes).

        A stage that could not write the data directory (full, read-only, failing: :func:`storage_failure`)
        gets one line naming the cause and a shorter stop: Faust's own stop then waits for the acks of the
        counting agent that died (``Wait for streams...``) until the stop watchdog, 50 s, and it has nothing
        left to save (the store is what failed). Only the first failure stops the worker: Faust restarts a
        crashed agent, which fails again on the same store.
        """
        if self.fatal is not None:
            log.debug("%s failed while the worker stops: %s", stage, type(exc).__name__)
            return
        storage = storage_failure(exc)
        if storage is not None:
            log.critical(
                "%s cannot write the data directory (full, read-only or failing): %s; stopping the worker "
                "(exit 70): free space or make it writable, then start the worker again on it",
                stage,
                storage,
            )
            self.mark_fatal(f"{stage}: data directory not writable")
            arm_stop_watchdog(self.storage_stop_deadline_s)
        else:
            log.critical("%s failed, stopping the worker: %s", stage, type(exc).__name__, exc_info=exc)
            self.mark_fatal(f"{stage}: {type(exc).__name__}")
        os.kill(os.getpid(), signal.SIGTERM)

    def liveness(self) -> tuple[bool, str]:
        if self.fatal is not None:
            return False, f"fatal: {self.fatal}"
        if not self.started:
            return True, "starting"
        now = self.clock()
        if now - self.last_poll > self.stall_timeout_s:
            return False, f"consumer loop has not polled for {now - self.last_poll:.0f}s"
        if self.lag > 0 and now - self.last_progress > self.stall_timeout_s:
            return False, f"{self.lag} messages behind and no progress for {now - self.last_progress:.0f}s"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        live, why = self.liveness()
        if not live:
            return live, why
        if not self.started:
            return False, "starting"
        return True, "ok"


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    health: Health

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, why = self.health.liveness() if path == "/healthz" else self.health.readiness()
            self._reply(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would flood the log; stay quiet."""


# Longest a worker may take to stop once a stop began (SIGTERM, SIGINT or a fatal error). The enrichment
# loop's own stop is bounded (3 steps of 15 s), but Faust's is not: once, after a broker restart, a worker
# stayed in Faust's "Wait for streams..." for good and had to be killed (-9). Past this deadline the process
# exits anyway (what it had not committed is delivered again to the next worker: at-least-once).
STOP_DEADLINE_S = 50.0


# errnos of a data directory that cannot take writes, and the same in the text of errors that carry no
# errno: RocksDB's Status (rocksdict raises a plain Exception "IO error: No space left on device: While
# appending to file: .../000004.log: No space left on device").
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM})
_STORAGE_TEXTS = tuple(os.strerror(e) for e in sorted(_STORAGE_ERRNOS))


def storage_failure(exc: BaseException) -> str | None:
    """The first line of ``exc`` (or of an exception it was raised from) if it is a failure to write to
    disk, else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).splitlines()[0][:400] if str(e) else type(e).__name__
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            return text
        if text.startswith("IO error:") or any(t in text for t in _STORAGE_TEXTS):
            return text
        e = e.__cause__ or e.__context__
    return None


def awaiting(task: asyncio.Task[object]) -> str:
    """Where a pending task waits: its await chain, outermost first (``file:line function`` of each
    coroutine, then what the innermost one awaits). ``Task.get_stack`` gives only the outermost frame of a
    suspended coroutine, which names the task, not the wait."""
    steps: list[str] = []
    obj: object = task.get_coro()
    while obj is not None and len(steps) < 40:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            steps.append(type(obj).__name__)
            break
        code = frame.f_code
        steps.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}")
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    return " > ".join(steps)


def pending_tasks(loop: asyncio.AbstractEventLoop, limit: int = 30) -> list[str]:
    """One line per task of ``loop`` not yet done: its name and :func:`awaiting`. Read from another thread
    at a moment the loop is stuck; a task that changes meanwhile is skipped, not an error."""
    lines: list[str] = []
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    except RuntimeError:  # the loop's task set changed while it was read
        return lines
    for task in tasks[:limit]:
        try:
            lines.append(f"{task.get_name()}: {awaiting(task)}")
        except Exception as exc:  # noqa: BLE001 -- a diagnostic must not stop the exit
            lines.append(f"{task.get_name()}: ({type(exc).__name__})")
    return lines


def arm_stop_watchdog(
    deadline_s: float = STOP_DEADLINE_S, exit_code: int = 70, loop: asyncio.AbstractEventLoop | None = None
) -> threading.Timer:
    """Exit the process with ``exit_code`` if it is still alive ``deadline_s`` from now (a daemon thread:
    it does not itself keep a process alive that exits on time). With ``loop``, the line first lists where
    that loop's tasks wait: what the stop hangs on, for the operator and the bug report."""

    def expire() -> None:
        if loop is not None:
            for line in pending_tasks(loop):
                log.critical("stop hangs; task %s", line)
        log.critical("the worker did not stop within %.0fs of the stop signal: exiting now", deadline_s)
        logging.shutdown()
        os._exit(exit_code)

    timer = threading.Timer(deadline_s, expire)
    timer.daemon = True
    timer.name = "shudi-stop-watchdog"
    timer.start()
    return timer


def serve(host: str, port: int, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz from a daemon thread; returns the server (``.shutdown()``)."""
    handler = type("Handler", (_Handler,), {"registry": registry, "health": health})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="shudi-http", daemon=True).start()
    return server
