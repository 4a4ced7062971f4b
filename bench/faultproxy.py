"""A loopback TCP proxy that can cut the network between Kafka's clients and the broker, for the fault
harness (``bench.faults --fault network-cut``).

It forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream>`` on an event loop of its own (a daemon thread),
so the harness's synchronous fault steps can call :meth:`FaultProxy.cut` and :meth:`FaultProxy.restore`.
The broker advertises the proxy's port on the listener behind it
(``localkafka.start(proxied=(listener, proxy port))``), so a client that reconnects after a metadata update
goes through the proxy too; the harness's own clients use the broker's other listener and see no cut.

Two kinds of cut:

- ``reset``: every connection is aborted with an RST (``SO_LINGER`` 0) and every new one is reset as soon as
  it is accepted: what a client sees when a firewall rejects, or a peer restarts. Errors come at once.
- ``blackhole``: nothing is closed, bytes stop flowing both ways, new connections are accepted but get no
  upstream: what a client sees when a link or a security group drops packets silently. Only the clients'
  own timeouts notice it, which is the nastier and more realistic case. On :meth:`restore` the held bytes
  and connections flow again, as TCP retransmission would deliver them once the path is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Literal

CutMode = Literal["reset", "blackhole"]
CUT_MODES: tuple[CutMode, ...] = ("reset", "blackhole")
_CHUNK = 64 * 1024


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: the peer sees ``connection reset``, as with a rejecting
    firewall, not an orderly end of stream."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``127.0.0.1:port`` → ``127.0.0.1:upstream``; :meth:`cut` and :meth:`restore` may be called from any
    thread. ``port`` 0 picks a free one (read :attr:`port` after :meth:`start`)."""

    def __init__(self, upstream: int, port: int = 0) -> None:
        self.upstream = upstream
        self.port = port
        self.mode: CutMode | None = None
        self.connections_total = 0
        self.bytes_forwarded = 0  # both directions; a blackhole must hold it still
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._flowing: asyncio.Event | None = None

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self, mode: CutMode) -> None:
        """From now until :meth:`restore`, the network is down in the way ``mode`` says."""
        self._call(self._cut(mode))

    def restore(self) -> None:
        self._call(self._restore())

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def _call(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # ------------------------------------------------------------------ the proxy's own loop

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._drop(conn)
        # Let the cancelled pipes run their ends before the loop stops.
        await asyncio.sleep(0)

    async def _cut(self, mode: CutMode) -> None:
        assert self._flowing is not None
        self.mode = mode
        self._flowing.clear()
        if mode == "reset":
            for conn in list(self._conns):
                self._drop(conn)

    async def _restore(self) -> None:
        assert self._flowing is not None
        self.mode = None
        self._flowing.set()

    def _drop(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        for task in conn.tasks:
            task.cancel()
        _abort(conn.client)
        if conn.upstream is not None:
            _abort(conn.upstream)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.connections_total += 1
        if self.mode == "reset":
            _abort(writer)
            return
        conn = _Conn(writer)
        self._conns.add(conn)
        # A blackholed SYN gets no answer until the path is back: the upstream connection waits for it.
        await self._flowing.wait()
        if conn not in self._conns:  # reset while it waited
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            self._drop(conn)
            return
        conn.upstream = up_writer
        conn.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, conn)),
            asyncio.create_task(self._pipe(up_reader, writer, conn)),
        ]

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn) -> None:
        assert self._flowing is not None
        try:
            while True:
                # During a blackhole nothing is read, so the sender's socket buffers fill as on a dead link.
                await self._flowing.wait()
                data = await src.read(_CHUNK)
                if not data:
                    break
                # Bytes read just before the cut are held, not delivered through it.
                await self._flowing.wait()
                # Counted before the write, so that a peer that got the bytes always sees them counted.
                self.bytes_forwarded += len(data)
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other too (a FIN, as the peer sent), unless the cut already aborted it.
            if conn in self._conns:
                self._conns.discard(conn)
                for w in (conn.client, conn.upstream):
                    if w is not None:
                        w.close()
