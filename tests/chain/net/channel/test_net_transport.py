"""The TCP frame transport on its own: framing under any split of the byte stream, a reader
that falls behind, and the end of the stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.net.channel import ChannelClosed, StreamTransport
from chain.net.channel.transport import MAX_FRAME, RECV_BUFFER_SIZE


@contextlib.asynccontextmanager
async def raw_to_transport() -> AsyncIterator[tuple[asyncio.StreamWriter, StreamTransport]]:
    """A raw TCP writer on one end, a frame transport on the other (127.0.0.1)."""
    accepted: asyncio.Future[StreamTransport] = asyncio.get_running_loop().create_future()
    server = await StreamTransport.serve(accepted.set_result, "127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    transport = await accepted
    try:
        yield writer, transport
    finally:
        writer.close()
        await transport.close()
        server.close()
        await server.wait_closed()


def wire(frames: list[bytes]) -> bytes:
    return b"".join(len(f).to_bytes(2, "big") + f for f in frames)


async def receive(transport: StreamTransport, count: int) -> list[bytes]:
    return [bytes(await transport.recv_frame()) for _ in range(count)]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.one_of(st.integers(0, 300), st.sampled_from([MAX_FRAME - 1, MAX_FRAME])),
                   min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 70_000), max_size=20),
)
def test_frames_come_out_whole_however_the_stream_is_split(sizes: list[int],
                                                           cuts: list[int]) -> None:
    frames = [os.urandom(n) for n in sizes]
    data = wire(frames)

    async def run() -> list[bytes]:
        async with asyncio.timeout(10), raw_to_transport() as (writer, transport):
            reading = asyncio.ensure_future(receive(transport, len(frames)))
            at = 0
            for cut in cuts:
                writer.write(data[at : at + cut])
                await writer.drain()
                await asyncio.sleep(0)
                at += cut
            writer.write(data[at:])
            await writer.drain()
            return await reading

    assert asyncio.run(run()) == frames


async def test_a_reader_that_falls_behind_bounds_the_buffer_and_loses_nothing() -> None:
    frames = [os.urandom(MAX_FRAME - i) for i in range(320)]  # ~20 MiB
    async with asyncio.timeout(20), raw_to_transport() as (writer, transport):
        writer.write(wire(frames))
        sending = asyncio.ensure_future(writer.drain())
        await asyncio.sleep(0.3)  # the transport reads until its buffer is full, then pauses
        protocol = transport._protocol
        # nothing taken yet: the buffer is still the small first one, and full
        assert len(protocol._buffer) < RECV_BUFFER_SIZE
        assert protocol._end - protocol._start <= len(protocol._buffer)
        assert not sending.done()  # the rest waits in the kernel and the sender
        assert await receive(transport, len(frames)) == frames
        await sending
        assert len(protocol._buffer) == RECV_BUFFER_SIZE  # bulk traffic: grown


async def test_frames_before_the_end_are_read_then_the_end_is_reported() -> None:
    async with asyncio.timeout(10), raw_to_transport() as (writer, transport):
        writer.write(wire([b"one", b"two"]))
        writer.close()
        assert await receive(transport, 2) == [b"one", b"two"]
        with pytest.raises(ChannelClosed, match="closed by peer"):
            await transport.recv_frame()


async def test_an_end_in_the_middle_of_a_frame_says_so() -> None:
    async with asyncio.timeout(10), raw_to_transport() as (writer, transport):
        writer.write(wire([b"whole"]) + b"\x00\x10half")
        writer.close()
        assert await receive(transport, 1) == [b"whole"]
        with pytest.raises(ChannelClosed, match="middle of a frame"):
            await transport.recv_frame()


async def test_a_cancelled_receive_loses_no_frame() -> None:
    async with asyncio.timeout(10), raw_to_transport() as (writer, transport):
        waiting = asyncio.ensure_future(transport.recv_frame())
        await asyncio.sleep(0.01)
        # cancelled at the worst moment: as the frame arrives, after the reader was woken
        protocol = transport._protocol
        arrived = protocol.buffer_updated

        def then_cancel(nbytes: int) -> None:
            arrived(nbytes)
            waiting.cancel()

        protocol.buffer_updated = then_cancel  # type: ignore[method-assign]
        writer.write(wire([b"kept"]))
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await receive(transport, 1) == [b"kept"]


async def test_close_wakes_a_waiting_receive() -> None:
    async with asyncio.timeout(10), raw_to_transport() as (_, transport):
        waiting = asyncio.ensure_future(transport.recv_frame())
        await asyncio.sleep(0.01)
        await transport.close()
        with pytest.raises(ChannelClosed):
            await waiting
