"""The secure channel over real loopback sockets: TCP streams and aiohttp WebSockets.

Covers what an honest pair of nodes relies on: both learn each other's principal, messages of
any allowed size round-trip intact and in order, concurrent senders do not interleave, timeouts
around send/recv do not desynchronise the stream, and closing is clean on both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from chain.core.keys import KeyPair
from chain.net.channel import (
    DEFAULT_MAX_MESSAGE,
    WS_MAX_MSG_SIZE,
    ChannelClosed,
    ChannelError,
    FrameTooLarge,
    FrameTransport,
    SecureChannel,
    StreamTransport,
    WebSocketTransport,
)

CHAIN = b"BLKR"
SERVER = KeyPair.development(1)
CLIENT = KeyPair.development(2)
MiB = 1024 * 1024

Pair = tuple[SecureChannel, SecureChannel]  # (dialler's channel, listener's channel)


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-per-frame bytes so a misplaced chunk is caught."""
    block = bytes((i * 131 + seed) & 0xFF for i in range(251))
    return (block * (size // len(block) + 1))[:size]


@contextlib.asynccontextmanager
async def tcp_pair(**kwargs: object) -> AsyncIterator[Pair]:
    """A dialler and a listener connected over a real TCP socket on 127.0.0.1."""
    accepted: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    tasks: set[asyncio.Future[None]] = set()

    async def accept(transport: StreamTransport) -> None:
        try:
            channel = await SecureChannel.accept(transport, SERVER, CHAIN)
        except ChannelError as exc:  # handed to the test through the future
            accepted.set_exception(exc)
        else:
            accepted.set_result(channel)

    server = await StreamTransport.serve(lambda t: tasks.add(asyncio.ensure_future(accept(t))),
                                         "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = await StreamTransport.connect("127.0.0.1", port)
        client = await SecureChannel.initiate(transport, CLIENT, CHAIN, **kwargs)  # type: ignore[arg-type]
        listener = await accepted
        try:
            yield client, listener
        finally:
            await asyncio.gather(client.close(), listener.close())
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def ws_pair() -> AsyncIterator[Pair]:
    """A dialler and a listener connected over a real aiohttp WebSocket on 127.0.0.1."""
    accepted: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def p2p(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_MSG_SIZE)
        await ws.prepare(request)
        try:
            channel = await SecureChannel.accept(WebSocketTransport(ws), SERVER, CHAIN)
        except ChannelError as exc:
            accepted.set_exception(exc)
            return ws
        accepted.set_result(channel)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await done.wait()  # keep the handler (and so the socket) alive for the test
        await channel.close()
        return ws

    app = web.Application()
    app.router.add_get("/p2p", p2p)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                f"http://127.0.0.1:{port}/p2p", max_msg_size=WS_MAX_MSG_SIZE
            )
            client = await SecureChannel.initiate(
                WebSocketTransport(ws), CLIENT, CHAIN, SERVER.principal
            )
            listener = await accepted
            try:
                yield client, listener
            finally:
                # Together: a WebSocket close waits for the other side's close reply.
                await asyncio.gather(client.close(), listener.close())
                done.set()
    finally:
        await runner.cleanup()


PAIRS: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[Pair]]] = {
    "tcp": tcp_pair,
    "websocket": ws_pair,
}


async def exchange(sender: SecureChannel, receiver: SecureChannel, message: bytes) -> bytes:
    """Send and receive concurrently (a 4 MiB message does not fit in socket buffers)."""
    received, _ = await asyncio.gather(receiver.recv(), sender.send(message))
    return received


@pytest.mark.parametrize("kind", sorted(PAIRS))
async def test_handshake_authenticates_both_sides(kind: str) -> None:
    async with asyncio.timeout(10), PAIRS[kind]() as (client, listener):
        assert client.remote_principal == SERVER.principal
        assert listener.remote_principal == CLIENT.principal
        # The X25519 key is the Noise remote static key, read from the library's state: if the
        # library ever changed how it keeps it, this is where we would learn of it.
        assert client.remote_keys == SERVER.public
        assert listener.remote_keys == CLIENT.public
        assert client.handshake_hash == listener.handshake_hash
        assert len(client.handshake_hash) == 32
        assert client.is_initiator and not listener.is_initiator
        assert client.chain_id == listener.chain_id == CHAIN


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("size", [0, 1, 70_000, 4 * MiB], ids=["0B", "1B", "70KB", "4MiB"])
async def test_messages_round_trip(kind: str, size: int) -> None:
    message = payload(size, seed=size)
    async with asyncio.timeout(20), PAIRS[kind]() as (client, listener):
        assert await exchange(client, listener, message) == message
        assert await exchange(listener, client, message) == message


@pytest.mark.parametrize("kind", sorted(PAIRS))
async def test_order_holds_both_ways_at_once(kind: str) -> None:
    sizes = [0, 1, 65_515, 65_516, 65_519, 131_034, 200_000, 3, 70_000, 65_514] * 4
    messages = [payload(size, seed=i) for i, size in enumerate(sizes)]

    async def pump(sender: SecureChannel) -> None:
        for message in messages:
            await sender.send(message)

    async def drain(receiver: SecureChannel) -> list[bytes]:
        return [await receiver.recv() for _ in messages]

    async with asyncio.timeout(20), PAIRS[kind]() as (client, listener):
        _, _, at_listener, at_client = await asyncio.gather(
            pump(client), pump(listener), drain(listener), drain(client)
        )
    assert at_listener == messages
    assert at_client == messages


async def test_concurrent_senders_do_not_interleave() -> None:
    messages = [payload(150_000 + i, seed=i) for i in range(12)]
    async with asyncio.timeout(20), tcp_pair() as (client, listener):
        sending = asyncio.gather(*(client.send(m) for m in messages))
        received = [await listener.recv() for _ in messages]
        await sending
    assert sorted(received) == sorted(messages)


async def test_expected_principal_accepts_the_right_peer() -> None:
    async with asyncio.timeout(10), tcp_pair(expected=SERVER.principal) as (client, _):
        assert client.remote_principal == SERVER.principal


async def test_timeouts_around_recv_do_not_desynchronise() -> None:
    first, second = payload(4 * MiB, seed=1), payload(100_000, seed=2)
    async with asyncio.timeout(20), tcp_pair() as (client, listener):
        sending = asyncio.ensure_future(client.send(first))
        received = None
        timeouts = 0
        for _ in range(100_000):  # bounded; each turn either times out or completes
            try:
                received = await asyncio.wait_for(listener.recv(), timeout=0.0005)
                break
            except TimeoutError:
                timeouts += 1
        await sending
        assert received == first
        assert timeouts > 0, "the test did not exercise a cancelled recv"
        assert await exchange(client, listener, second) == second


async def test_cancelled_send_still_delivers_whole_message() -> None:
    after = payload(1000, seed=99)
    async with asyncio.timeout(20), tcp_pair() as (client, listener):
        # Nobody reads yet, so the buffers on the way fill and a send() blocks mid-message.
        sent = await send_until_blocked(client)
        for message in sent:
            assert await listener.recv() == message
        assert await exchange(client, listener, after) == after


async def send_until_blocked(client: SecureChannel) -> list[bytes]:
    """Send 4 MiB messages to a peer that does not read until one is still being sent after
    50 ms (then cancelled); returns all the messages, the blocked one last."""
    sent = []
    for seed in range(64):
        sent.append(payload(4 * MiB, seed=seed))
        try:
            await asyncio.wait_for(client.send(sent[-1]), timeout=0.05)
        except TimeoutError:
            return sent
    raise AssertionError("256 MiB went out to a peer that does not read")


async def test_local_oversize_send_is_refused_and_channel_survives() -> None:
    async with asyncio.timeout(10), tcp_pair() as (client, listener):
        with pytest.raises(FrameTooLarge):
            await client.send(b"\0" * (DEFAULT_MAX_MESSAGE + 1))
        assert not client.closed
        assert await exchange(client, listener, b"still fine") == b"still fine"


@pytest.mark.parametrize("kind", sorted(PAIRS))
async def test_close_is_seen_by_both_ends(kind: str) -> None:
    async with asyncio.timeout(10), PAIRS[kind]() as (client, listener):
        # The peer is reading, as a node's peer loop always is, so the close completes at once.
        waiting = asyncio.ensure_future(listener.recv())
        started = time.perf_counter()
        await client.close()
        assert time.perf_counter() - started < 1.0
        await client.close()  # idempotent
        assert client.closed
        with pytest.raises(ChannelClosed):
            await client.send(b"x")
        with pytest.raises(ChannelClosed):
            await client.recv()
        with pytest.raises(ChannelClosed):
            await waiting
        with pytest.raises(ChannelClosed):
            await listener.recv()  # and stays closed


async def test_close_while_receiving_raises_channel_closed() -> None:
    async with asyncio.timeout(10), tcp_pair() as (_, listener):
        waiting = asyncio.ensure_future(listener.recv())
        await asyncio.sleep(0.01)
        await listener.close()
        with pytest.raises(ChannelClosed):
            await waiting


async def test_receiver_cancelled_as_the_channel_closes_stays_cancelled() -> None:
    """A task told to stop while its channel closes under it must stop: were the cancellation
    turned into ChannelClosed, a loop that retries on channel errors would never end."""
    async with asyncio.timeout(10), tcp_pair() as (_, listener):
        waiting = asyncio.ensure_future(listener.recv())
        await asyncio.sleep(0.01)
        # the worst moment: the read is already stopped by close() when the cancel arrives
        read = listener._transport._protocol._reader  # type: ignore[attr-defined]
        assert read is not None
        read.add_done_callback(lambda _: waiting.cancel())
        await listener.close()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert waiting.cancelled()


async def test_close_unblocks_a_send_to_a_peer_that_stopped_reading() -> None:
    accepted: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()

    async def accept(transport: StreamTransport) -> None:
        accepted.set_result(await SecureChannel.accept(transport, SERVER, CHAIN))

    tasks: set[asyncio.Future[None]] = set()
    server = await StreamTransport.serve(lambda t: tasks.add(asyncio.ensure_future(accept(t))),
                                         "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with asyncio.timeout(10):
        transport = await StreamTransport.connect("127.0.0.1", port, close_timeout=0.2)
        client = await SecureChannel.initiate(transport, CLIENT, CHAIN)
        listener = await accepted  # never reads: the socket buffers fill up
        await send_until_blocked(client)
        sending = asyncio.ensure_future(client.send(payload(4 * MiB)))
        await asyncio.sleep(0.1)
        assert not sending.done()
        started = time.perf_counter()
        await client.close()
        assert time.perf_counter() - started < 1.5
        with pytest.raises(ChannelClosed):
            await sending
        await listener.close()
    server.close()
    await server.wait_closed()


async def test_transports_satisfy_the_protocol() -> None:
    async with tcp_pair() as (client, _):
        assert isinstance(client._transport, FrameTransport)


async def _throughput(make: Callable[[], contextlib.AbstractAsyncContextManager[Pair]]) -> float:
    message = payload(4 * MiB)
    rounds = 16
    async with make() as (client, listener):

        async def pump() -> None:
            for _ in range(rounds):
                await client.send(message)

        async def drain() -> None:
            for _ in range(rounds):
                assert len(await listener.recv()) == len(message)

        started = time.perf_counter()
        await asyncio.gather(pump(), drain())
        elapsed = time.perf_counter() - started
    return rounds * len(message) / elapsed / 1e6


async def test_report_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a benchmark gate: prints MB/s for 4 MiB messages (run with -s to see it)."""
    async with asyncio.timeout(25):
        for name, make in sorted(PAIRS.items()):
            rate = await _throughput(make)
            with capsys.disabled():
                print(f"\nsecure channel over {name}: {rate:.0f} MB/s (4 MiB messages, loopback)")
            assert rate > 0


async def test_recv_into_uses_the_buffer_given_when_the_message_fits() -> None:
    small, big = payload(70_000, seed=5), payload(200_000, seed=6)
    async with asyncio.timeout(10), tcp_pair() as (client, listener):
        buffer = bytearray(100_000)
        await client.send(small)
        got = await listener.recv_into(buffer)
        assert got.obj is buffer and bytes(got) == small  # decrypted in place
        await client.send(big)
        got = await listener.recv_into(buffer)
        assert got.obj is not buffer and bytes(got) == big  # too big for it: a buffer of its own
        assert bytes(buffer[: len(small)]) == small  # and the buffer was left alone


async def test_a_message_half_received_into_a_buffer_is_finished_by_the_next_call() -> None:
    message = payload(3 * MiB, seed=7)
    async with asyncio.timeout(10), tcp_pair() as (client, listener):
        buffer = bytearray(4 * MiB)
        receiving = asyncio.ensure_future(listener.recv_into(buffer))
        # the first ten frames of the message now, the rest once the receiver gave up
        sizes, fill = client._frames(memoryview(message))
        await client._transport.send_frames(sizes[:10], fill)
        while listener._received < 9 * 65_000:
            await asyncio.sleep(0.001)
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
        await client._transport.send_frames(sizes[10:], lambda i, out: fill(i + 10, out))
        got = await listener.recv()  # picks up where recv_into stopped, in its buffer
        assert isinstance(got, bytearray) and got == message
