"""Frame transports: how a secure channel's Noise frames travel.

The channel only needs an ordered, reliable pipe of discrete frames, each at most
:data:`MAX_FRAME` bytes (the Noise limit). Two adapters are provided because a node speaks to
peers both ways: raw TCP (each frame prefixed by its length as a 2-byte big-endian integer, the
framing the Noise specification suggests, so an oversized frame cannot even be announced), which
carries fragments between owners and hosts and so is built for bulk, and aiohttp WebSockets
(one binary message per frame), which is how the node serves peers on its p2p port next to its
HTTP API.

Adapters turn every transport failure into :class:`~chain.net.channel.errors.ChannelClosed` (or
:class:`~chain.net.channel.errors.FrameTooLarge`), so nothing from asyncio, the socket layer or aiohttp
leaks into the peer loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

import aiohttp
from aiohttp import web

from chain.net.channel.errors import ChannelClosed, FrameTooLarge

MAX_FRAME = 65535
"""Largest Noise message, handshake or transport (Noise specification, section 3)."""

WS_MAX_MSG_SIZE = MAX_FRAME + 1
"""Pass as ``max_msg_size`` to ``web.WebSocketResponse`` and ``ClientSession.ws_connect`` so
aiohttp itself refuses larger WebSocket messages before buffering them (aiohttp refuses sizes
*equal* to its limit, hence the one extra byte; the adapter still checks :data:`MAX_FRAME`)."""

DEFAULT_CLOSE_TIMEOUT = 2.0
"""How long ``close`` waits for a clean shutdown (flush, WebSocket close reply) before dropping
the connection."""


Frame = bytes | bytearray | memoryview
"""A frame as a transport hands it out: bytes, or a view of the transport's receive buffer."""

RECV_BUFFER_SIZE = 1 << 20
"""Bytes a TCP transport receives into at once once the connection carries bulk data: many
frames per wake-up of the event loop (a quarter of this halves the throughput)."""

SEND_BUFFER_SIZE = (1 << 20) + (1 << 10)
"""A TCP transport's reusable send buffer: a 1 MiB message and its framing."""

WRITE_HIGH_WATER = 1 << 20
"""Bytes queued in a TCP transport before ``send_frame`` waits for the socket to drain."""

FrameFiller = Callable[[int, memoryview], None]
"""Writes frame ``i`` into the buffer given (see :meth:`FrameTransport.send_frames`)."""

_WIRE_FRAME = 2 + MAX_FRAME  # a length prefix and the largest frame
#: A new connection receives into this much (room for two whole frames); it gets the full
#: :data:`RECV_BUFFER_SIZE` once its reader has taken as many bytes of frames, so a peer
#: that connects and does not get through the handshake costs no more than that.
_FIRST_BUFFER = 2 * _WIRE_FRAME


@runtime_checkable
class FrameTransport(Protocol):
    """An ordered, reliable pipe of frames of at most :data:`MAX_FRAME` bytes.

    ``recv_frame`` raises :class:`ChannelClosed` at the end of the stream. The frame it returns
    is only valid until the caller next awaits (a transport may hand out a view of its receive
    buffer), and cancelling it loses no frame: the next call returns the frame the cancelled
    one would have. ``send_frames(sizes, fill)`` sends ``len(sizes)`` frames in order, as one
    write where it can: ``fill(i, out)`` writes frame ``i`` (``sizes[i]`` bytes) into ``out``,
    in order, so a sender can encrypt straight into the transport's buffer. ``close`` is
    idempotent and never raises. At most one ``recv_frame`` and one sender run at once (the
    channel guarantees it).
    """

    async def send_frame(self, frame: Frame) -> None: ...

    async def send_frames(self, sizes: list[int], fill: FrameFiller) -> None: ...

    async def recv_frame(self) -> Frame: ...

    async def close(self) -> None: ...


def _check_sizes(sizes: list[int]) -> None:
    for size in sizes:
        if size > MAX_FRAME:
            raise FrameTooLarge(f"frame of {size} bytes exceeds {MAX_FRAME}")


class _FrameProtocol(asyncio.BufferedProtocol):
    """The TCP side of :class:`StreamTransport`: the kernel writes received bytes straight
    into one buffer, frames are cut out of it as views (no copy, no task per frame, as many as
    arrived per wake-up), and writes are flow-controlled for ``drain``.

    Reading pauses while the buffer is nearly full of frames nobody has asked for, so a peer
    cannot make it grow; there is always room for one whole frame after the ones waiting. The
    buffer starts small and grows once, when the reader has taken as many bytes of frames.
    """

    def __init__(self, on_made: Callable[[asyncio.Transport, _FrameProtocol], None] | None = None,
                 ) -> None:
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray(_FIRST_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0  # first byte not yet handed out
        self._end = 0  # end of the bytes received
        self._taken = 0  # bytes of frames handed out, until the buffer has grown
        self._eof = False
        self._ended: ChannelClosed | None = None  # why, when not the peer's clean close
        self._read_paused = False
        self._reader: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self._transport: asyncio.Transport | None = None
        self._on_made = on_made
        self.lost: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self._on_made is not None:
            self._on_made(transport, self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Only called while the reader is not running, so no frame it holds can be moved.
        if self._taken >= _FIRST_BUFFER:
            self._taken = -1  # grown for good
            waiting = self._view[self._start : self._end]
            self._buffer = bytearray(RECV_BUFFER_SIZE)
            self._buffer[: waiting.nbytes] = waiting
            self._view = memoryview(self._buffer)
            self._start, self._end = 0, waiting.nbytes
        elif self._start and len(self._buffer) - self._end < _WIRE_FRAME:
            kept = self._end - self._start  # move the frames not yet taken to the front
            self._view[:kept] = self._view[self._start : self._end]
            self._start, self._end = 0, kept
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        if self._end - self._start > len(self._buffer) - _WIRE_FRAME and self._transport:
            self._transport.pause_reading()
            self._read_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.end_reading(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.end_reading(None if exc is None else
                         ChannelClosed(f"connection lost while receiving: {exc}"))
        for drainer in self._drainers:
            if not drainer.done():
                drainer.set_result(None)
        self._drainers.clear()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for drainer in self._drainers:
            if not drainer.done():
                drainer.set_result(None)
        self._drainers.clear()

    # -- for the transport ---------------------------------------------------------------

    def end_reading(self, reason: ChannelClosed | None) -> None:
        """No more bytes will come (``reason`` None: the peer closed the connection); frames
        already received can still be read."""
        if not self._eof:
            self._eof, self._ended = True, reason
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def next_frame(self) -> memoryview | None:
        """The next whole frame received, or None; see :class:`FrameTransport` for how long
        the view stays valid."""
        start = self._start
        if self._end - start < 2:
            return None
        size = self._buffer[start] << 8 | self._buffer[start + 1]
        end = start + 2 + size
        if end > self._end:
            return None
        self._start = end
        if self._taken >= 0:
            self._taken += end - start
        if self._read_paused and self._transport and self._end - end <= len(self._buffer) // 2:
            self._read_paused = False
            self._transport.resume_reading()
        return self._view[start + 2 : end]

    async def readable(self) -> None:
        """Wait for more bytes; :class:`ChannelClosed` once none will come."""
        if self._eof:
            if self._ended is not None:
                raise ChannelClosed(str(self._ended))
            if self._end > self._start:
                raise ChannelClosed("connection closed in the middle of a frame")
            raise ChannelClosed("connection closed by peer")
        self._reader = self._loop.create_future()
        try:
            await self._reader
        finally:
            self._reader = None

    async def drain(self) -> None:
        if self.lost.done():
            raise ChannelClosed("connection lost while sending")
        if self._write_paused:
            drainer = self._loop.create_future()
            self._drainers.append(drainer)
            await drainer
            if self.lost.done():
                raise ChannelClosed("connection lost while sending")


class StreamTransport:
    """Frames over a TCP connection, each prefixed by its length as a 2-byte big-endian integer.

    Built on a buffered protocol rather than asyncio streams: fragments stream through here,
    and streams cost two copies and a task per frame on the way in, and a system call per
    length prefix on the way out. ``close`` lets already written frames flush for up to
    ``close_timeout`` seconds, then aborts the connection, so a peer that stopped reading cannot
    keep the socket (or the task closing it) alive.
    """

    __slots__ = ("_close_timeout", "_closer", "_protocol", "_spare", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _FrameProtocol,
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._close_timeout = close_timeout
        self._closer: asyncio.Task[None] | None = None
        self._spare: bytearray | None = None  # the last send's buffer, when free again

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
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(_FrameProtocol, host, port)
        except (OSError, TimeoutError) as exc:
            raise ChannelClosed(f"cannot connect to {host}:{port}: {exc or 'timed out'}") from exc
        return cls(transport, protocol, close_timeout=close_timeout)

    @classmethod
    async def serve(
        cls,
        on_connect: Callable[[StreamTransport], None],
        host: str,
        port: int,
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> asyncio.Server:
        """Listen on ``host:port``; ``on_connect`` gets each accepted connection's transport
        (it is called on the event loop, so it should start a task and return)."""
        def made(transport: asyncio.Transport, protocol: _FrameProtocol) -> None:
            on_connect(cls(transport, protocol, close_timeout=close_timeout))

        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _FrameProtocol(made), host, port)

    async def send_frame(self, frame: Frame) -> None:
        def copy(_: int, out: memoryview) -> None:
            out[:] = frame

        await self.send_frames([len(frame)], copy)

    async def send_frames(self, sizes: list[int], fill: FrameFiller) -> None:
        _check_sizes(sizes)
        if self._transport.is_closing():
            raise ChannelClosed("connection closed")
        total = sum(sizes) + 2 * len(sizes)
        spare, self._spare = self._spare, None
        if spare is None or len(spare) < total:
            # small messages get buffers their size; the first bulk one, the reusable big one
            spare = bytearray(total if total <= _WIRE_FRAME else max(total, SEND_BUFFER_SIZE))
        wire = memoryview(spare)
        at = 0
        for i, size in enumerate(sizes):
            wire[at : at + 2] = size.to_bytes(2, "big")
            fill(i, wire[at + 2 : at + 2 + size])
            at += 2 + size
        try:
            self._transport.write(wire[:total])
        except (OSError, RuntimeError) as exc:
            raise ChannelClosed(f"connection lost while sending: {exc}") from exc
        if not self._transport.get_write_buffer_size():
            # the kernel took it all, so nothing refers to the buffer: use it again next time
            self._spare = spare
        await self._protocol.drain()

    async def recv_frame(self) -> memoryview:
        protocol = self._protocol
        while True:
            frame = protocol.next_frame()
            if frame is not None:
                return frame
            await protocol.readable()

    async def close(self) -> None:
        self._protocol.end_reading(ChannelClosed("connection closed"))
        self._closer = _start_close(self._closer, self._shutdown)
        await _await_close(self._closer)

    async def _shutdown(self) -> None:
        self._transport.close()
        try:
            async with asyncio.timeout(self._close_timeout):
                await asyncio.shield(self._protocol.lost)
        except TimeoutError:
            self._transport.abort()


WebSocket = aiohttp.ClientWebSocketResponse | web.WebSocketResponse


class WebSocketTransport:
    """Frames as binary WebSocket messages, client or server side of aiohttp.

    A text message is a protocol violation and closes the connection; pings and pongs are left
    to aiohttp. ``close`` sends a WebSocket close and waits up to ``close_timeout`` seconds for
    the peer's reply (a peer that is reading answers at once), then drops the connection.

    Reads run in a task of their own that a cancelled ``recv_frame`` leaves running, so its
    frame goes to the next call rather than being lost inside aiohttp; ``close`` stops it.
    """

    __slots__ = ("_close_timeout", "_closer", "_pending", "_ws")

    def __init__(self, ws: WebSocket, *, close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        self._ws = ws
        self._close_timeout = close_timeout
        self._closer: asyncio.Task[None] | None = None
        self._pending: asyncio.Future[bytes] | None = None

    async def send_frames(self, sizes: list[int], fill: FrameFiller) -> None:
        _check_sizes(sizes)
        for i, size in enumerate(sizes):
            frame = bytearray(size)
            fill(i, memoryview(frame))
            await self.send_frame(frame)

    async def send_frame(self, frame: Frame) -> None:
        if len(frame) > MAX_FRAME:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._ws.closed:
            raise ChannelClosed("WebSocket closed")
        try:
            await self._ws.send_bytes(frame if isinstance(frame, bytes) else bytes(frame))
        except (OSError, RuntimeError, aiohttp.ClientError) as exc:
            raise ChannelClosed(f"WebSocket lost while sending: {exc}") from exc

    async def recv_frame(self) -> bytes:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._receive())
            self._pending.add_done_callback(_swallow)
        pending = self._pending
        try:
            frame = await asyncio.shield(pending)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if pending.cancelled() and not (current is not None and current.cancelling()):
                # close() stopped the read (and nobody is cancelling us): the channel is gone
                self._pending = None
                raise ChannelClosed("connection closed while receiving") from None
            # Only the caller was cancelled: the read (or its result) waits for the next call.
            raise
        except BaseException:
            self._pending = None
            raise
        self._pending = None
        return frame

    async def _receive(self) -> bytes:
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
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done() and pending is not asyncio.current_task():
            pending.cancel()
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


def _swallow(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
