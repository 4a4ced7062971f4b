"""bench.faultproxy: bytes pass, a blackhole holds them (and new connections) until the restore, a reset cut
aborts every connection and refuses new ones. Loopback only, an echo server upstream, no Kafka."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from bench.faultproxy import FaultProxy

# Generous: the machine is shared; the tests only wait this long when something is broken.
WAIT_S = 30.0
# How long a blackholed connection is watched for bytes that must not come; a busy machine can only make
# a leak less visible, never fail a correct proxy.
QUIET_S = 0.5


class _Echo(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = _Echo(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    p = FaultProxy(upstream=server.server_address[1]).start()
    try:
        yield p
    finally:
        p.stop()
        server.shutdown()
        server.server_close()


def _connect(p: FaultProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", p.port), timeout=WAIT_S)
    s.settimeout(WAIT_S)
    return s


def _echo(s: socket.socket, payload: bytes) -> bytes:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_forwards_both_ways(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        assert _echo(s, b"hello kafka") == b"hello kafka"
    assert proxy.bytes_forwarded >= 2 * len(b"hello kafka")


def test_blackhole_holds_bytes_and_new_connections_until_restore(proxy: FaultProxy) -> None:
    with _connect(proxy) as before:
        assert _echo(before, b"ping") == b"ping"
        proxy.cut("blackhole")
        forwarded = proxy.bytes_forwarded
        before.sendall(b"held")
        before.settimeout(QUIET_S)
        with pytest.raises(TimeoutError):
            before.recv(4096)
        # A connection made during the cut is accepted (as a SYN would be retried) but gets nothing through.
        during = _connect(proxy)
        during.sendall(b"late")
        during.settimeout(QUIET_S)
        with pytest.raises(TimeoutError):
            during.recv(4096)
        assert proxy.bytes_forwarded == forwarded
        proxy.restore()
        before.settimeout(WAIT_S)
        during.settimeout(WAIT_S)
        assert before.recv(4096) == b"held"
        assert during.recv(4096) == b"late"
        during.close()


def test_reset_aborts_connections_and_refuses_new_ones_until_restore(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        assert _echo(s, b"ping") == b"ping"
        proxy.cut("reset")
        with pytest.raises(ConnectionResetError):
            s.recv(4096)
    # The proxy aborts a new connection on accept: the connect itself (when the RST comes before the client
    # looks) or its first read reports the reset, never an EOF.
    with pytest.raises((ConnectionResetError, BrokenPipeError)):  # noqa: PT012 -- either step may see it
        refused = _connect(proxy)
        with refused:
            refused.recv(4096)
    proxy.restore()
    with _connect(proxy) as s:
        assert _echo(s, b"back") == b"back"
