"""Frame transports: how a secure channel's Noise frames travel.

The channel only needs an ordered, reliable pipe of discrete frames, each at most
:data:`MAX_FRAME` bytes (the Noise limit). Two adapters are provided because a node speaks to
peers both ways: raw TCP through asyncio streams (each frame prefixed by its length as a 2-byte
big-endian integer, the framing the Noise specification suggests, so an oversized frame cannot
even be announced) and aiohttp WebSockets (one binary message per frame), which is how the node
serves peers on its p2p port next to its HTTP API.

Adapters turn every transport failure into :class:`~chain.net.errors.ChannelClosed` (or
:class:`~chain.net.errors.FrameTooLarge`), so nothing from asyncio, the socket layer or aiohttp
leaks into the peer loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

import aiohttp
from aiohttp import web

from chain.net.errors import ChannelClosed, FrameTooLarge

MAX_FRAME = 65535
"""Largest Noise message, handshake or transport (Noise specification, section 3)."""

WS_MAX_MSG_SIZE = MAX_FRAME + 1
"""Pass as ``max_msg_size`` to ``web.WebSocketResponse`` and ``ClientSession.ws_connect`` so
aiohttp itself refuses larger WebSocket messages before buffering them (aiohttp refuses sizes
*equal* to its limit, hence the one extra byte; the adapter still checks :data:`MAX_FRAME`)."""

DEFAULT_CLOSE_TIMEOUT = 2.0
"""How long ``close`` waits for a clean shutdown (flush, WebSocket close reply) before dropping
the connection."""


@runtime_checkable
class FrameTransport(Protocol):
    """An ordered, reliable pipe of frames of at most :data:`MAX_FRAME` bytes.

    ``recv_frame`` raises :class:`ChannelClosed` at the end of the stream; ``close`` is
    idempotent and never raises. At most one ``recv_frame`` and one ``send_frame`` run at once
    (the channel guarantees it).
    """

    async def send_frame(self, frame: bytes) -> None: ...

    async def recv_frame(self) -> bytes: ...

    async def close(self) -> None: ...


class StreamTransport:
    """Frames over an asyncio stream pair, each prefixed by a 2-byte big-endian length.

    ``close`` lets already written frames flush for up to ``close_timeout`` seconds, then
    aborts the connection, so a peer that stopped reading cannot keep the socket (or the task
    closing it) alive.
    """

    __slots__ = ("_close_timeout", "_closer", "_reader", "_writer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._close_timeout = close_timeout
        self._closer: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        timeout: float = 10.0,
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> StreamTransport:
        """Open a TCP connection; a refusal or timeout is a :class:`ChannelClosed`."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise ChannelClosed(f"cannot connect to {host}:{port}: {exc or 'timed out'}") from exc
        return cls(reader, writer, close_timeout=close_timeout)

    async def send_frame(self, frame: bytes) -> None:
        if len(frame) > MAX_FRAME:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._writer.is_closing():
            raise ChannelClosed("connection closed")
        try:
            self._writer.write(len(frame).to_bytes(2, "big"))
            self._writer.write(frame)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise ChannelClosed(f"connection lost while sending: {exc}") from exc

    async def recv_frame(self) -> bytes:
        try:
            head = await self._reader.readexactly(2)
            return await self._reader.readexactly(int.from_bytes(head, "big"))
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ChannelClosed("connection closed in the middle of a frame") from exc
            raise ChannelClosed("connection closed by peer") from exc
        except (OSError, RuntimeError) as exc:
            raise ChannelClosed(f"connection lost while receiving: {exc}") from exc

    async def close(self) -> None:
        self._closer = _start_close(self._closer, self._shutdown)
        await _await_close(self._closer)

    async def _shutdown(self) -> None:
        self._writer.close()
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()


WebSocket = aiohttp.ClientWebSocketResponse | web.WebSocketResponse


class WebSocketTransport:
    """Frames as binary WebSocket messages, client or server side of aiohttp.

    A text message is a protocol violation and closes the connection; pings and pongs are left
    to aiohttp. ``close`` sends a WebSocket close and waits up to ``close_timeout`` seconds for
    the peer's reply (a peer that is reading answers at once), then drops the connection.
    """

    __slots__ = ("_close_timeout", "_closer", "_ws")

    def __init__(self, ws: WebSocket, *, close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        self._ws = ws
        self._close_timeout = close_timeout
        self._closer: asyncio.Task[None] | None = None

    async def send_frame(self, frame: bytes) -> None:
        if len(frame) > MAX_FRAME:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._ws.closed:
            raise ChannelClosed("WebSocket closed")
        try:
            await self._ws.send_bytes(frame)
        except (OSError, RuntimeError, aiohttp.ClientError) as exc:
            raise ChannelClosed(f"WebSocket lost while sending: {exc}") from exc

    async def recv_frame(self) -> bytes:
        while True:
            try:
                msg = await self._ws.receive()
            except (OSError, RuntimeError, ValueError, TimeoutError, aiohttp.ClientError) as exc:
                raise ChannelClosed(f"WebSocket lost while receiving: {exc}") from exc
            if msg.type == aiohttp.WSMsgType.BINARY:
                data = msg.data
                if not isinstance(data, bytes):  # pragma: no cover - aiohttp always gives bytes
                    data = bytes(data)
                if len(data) > MAX_FRAME:
                    await self.close()
                    raise FrameTooLarge(f"WebSocket frame of {len(data)} bytes exceeds {MAX_FRAME}")
                return data
            if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            if msg.type == aiohttp.WSMsgType.ERROR:
                error = msg.data
                await self.close()
                if (
                    isinstance(error, aiohttp.WebSocketError)
                    and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
                ):
                    raise FrameTooLarge(f"WebSocket message too big: {error}")
                raise ChannelClosed(f"WebSocket error: {error}")
            if msg.type == aiohttp.WSMsgType.TEXT:
                await self.close()
                raise ChannelClosed("text message on a binary channel")
            raise ChannelClosed("WebSocket closed by peer")

    async def close(self) -> None:
        self._closer = _start_close(self._closer, self._shutdown)
        await _await_close(self._closer)

    async def _shutdown(self) -> None:
        async with asyncio.timeout(self._close_timeout):
            await self._ws.close()


def _start_close(
    closer: asyncio.Task[None] | None, shutdown: Callable[[], Coroutine[Any, Any, None]]
) -> asyncio.Task[None]:
    """The one shutdown task of a transport, started on the first ``close``.

    Concurrent closers must share it (and the caller must store it before awaiting): two
    shutdowns would both wait on the stream's single close future, and asyncio cancels a bare
    future when a task waiting on it is cancelled, so one shutdown's timeout would break the
    other's wait.
    """
    if closer is None:
        closer = asyncio.ensure_future(shutdown())
        closer.add_done_callback(_swallow)
    return closer


async def _await_close(closer: asyncio.Task[None]) -> None:
    """Wait for the shutdown through a shield (a cancelled closer must not cancel it); never
    raise from it."""
    with contextlib.suppress(Exception):
        await asyncio.shield(closer)


def _swallow(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
