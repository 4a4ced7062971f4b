"""streams.runtime.kafka.patch_aiokafka_closed_transport: under uvloop, aiokafka's connection reports a write
to a connection the peer reset as a retriable KafkaConnectionError, not a RuntimeError that kills a
producer's sender task. A real loopback connection, reset by its peer; no broker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import pytest
import uvloop
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.admin import ApiVersionRequest

from streams.runtime.kafka import patch_aiokafka_closed_transport


async def _send_on_a_reset_connection() -> None:
    """An AIOKafkaConnection whose socket the peer reset (SO_LINGER 0), then one request sent on it."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = AIOKafkaConnection("127.0.0.1", port, max_idle_ms=60_000)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn._reader, conn._writer = reader, writer
        # Until the reset has closed the transport (it comes at once on loopback; bounded for a busy machine).
        for _ in range(500):
            if writer.transport.is_closing():
                break
            with contextlib.suppress(ConnectionResetError):
                await reader.read(1)
            await asyncio.sleep(0.01)
        assert writer.transport.is_closing()
        # Closing needs the read task connect() would have started.
        conn._read_task = asyncio.get_running_loop().create_future()
        conn._read_task.set_result(None)
        try:
            conn.send(ApiVersionRequest())  # what a connection sends first, at any version
        finally:
            conn.close()
    finally:
        server.close()


def test_unpatched_aiokafka_raises_runtime_error_under_uvloop_on_a_reset_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the patch is for (aio-libs/aiokafka#1038). If aiokafka fixes it, this fails: drop the patch."""
    send = AIOKafkaConnection.send
    monkeypatch.setattr(AIOKafkaConnection, "send", getattr(send, "__wrapped__", send))
    with pytest.raises(RuntimeError, match="closed"):
        uvloop.run(_send_on_a_reset_connection())


def test_patched_aiokafka_raises_a_connection_error() -> None:
    patch_aiokafka_closed_transport()
    patch_aiokafka_closed_transport()  # idempotent
    with pytest.raises(KafkaConnectionError):
        uvloop.run(_send_on_a_reset_connection())
