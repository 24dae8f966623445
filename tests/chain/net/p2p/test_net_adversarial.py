"""The secure channel against hostile peers and a hostile network.

A man in the middle on loopback, peers that forge or replay identity claims, the wrong network,
garbage, truncation, oversized announcements, and tampering on the wire: every one must end in
a :class:`ChannelError` subclass (never another exception, never a hang) and must never yield a
channel that claims the wrong principal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from chain.core.keys import KeyPair
from chain.net.channel import (
    WS_MAX_MSG_SIZE,
    ChannelClosed,
    ChannelError,
    CorruptFrame,
    FrameTooLarge,
    HandshakeError,
    PeerAuthError,
    SecureChannel,
    StreamTransport,
    WebSocketTransport,
)
from chain.net.channel.noise import (
    PROTOCOL_NAME,
    encode_identity,
    prologue,
    session_binding_message,
    static_binding_message,
)

CHAIN = b"BLKR"
SERVER = KeyPair.development(1)
CLIENT = KeyPair.development(2)
MALLORY = KeyPair.development(3)

Handler = Callable[[StreamTransport], Awaitable[None]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- helpers ----------------------------------------------------------------------------------


async def _quietly(work: Awaitable[None], done: Callable[[], object]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        pass  # torn down by the test; finishing normally keeps asyncio from logging it
    finally:
        result = done()
        if asyncio.iscoroutine(result):
            await result


@contextlib.asynccontextmanager
async def _serving(server: asyncio.Server, tasks: set[asyncio.Future[None]]) -> AsyncIterator[int]:
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def listening(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 running ``handler`` on each connection's frame transport;
    yields its port."""
    tasks: set[asyncio.Future[None]] = set()

    def on_connect(transport: StreamTransport) -> None:
        tasks.add(asyncio.ensure_future(_quietly(handler(transport), transport.close)))

    async with _serving(await StreamTransport.serve(on_connect, "127.0.0.1", 0), tasks) as port:
        yield port


@contextlib.asynccontextmanager
async def listening_raw(handler: RawHandler) -> AsyncIterator[int]:
    """As :func:`listening`, but ``handler`` gets the raw byte streams."""
    tasks: set[asyncio.Future[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await _quietly(handler(reader, writer), writer.close)

    async with _serving(await asyncio.start_server(on_connect, "127.0.0.1", 0), tasks) as port:
        yield port


def honest_listener(
    key: KeyPair, chain_id: bytes, outcome: asyncio.Future[SecureChannel], **kw: object
) -> Handler:
    async def handler(transport: StreamTransport) -> None:
        try:
            channel = await SecureChannel.accept(
                transport,
                key,
                chain_id,
                **kw,  # type: ignore[arg-type]
            )
        except ChannelError as exc:
            outcome.set_exception(exc)
            return
        outcome.set_result(channel)
        await asyncio.sleep(30)  # hold the connection; the test tears it down sooner

    return handler


async def dial(
    port: int, key: KeyPair = CLIENT, chain_id: bytes = CHAIN, **kw: object
) -> SecureChannel:
    transport = await StreamTransport.connect("127.0.0.1", port)
    return await SecureChannel.initiate(transport, key, chain_id, **kw)  # type: ignore[arg-type]


def x25519_raw(key: KeyPair) -> bytes:
    return key.x25519_private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def noise_conn(static: KeyPair, initiator: bool, chain_id: bytes = CHAIN) -> NoiseConnection:
    conn = NoiseConnection.from_name(PROTOCOL_NAME)
    conn.set_prologue(prologue(chain_id))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, x25519_raw(static))
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.start_handshake()
    return conn


def genuine_identity(key: KeyPair, chain_id: bytes = CHAIN) -> bytes:
    return encode_identity(
        key.public.ed25519, key.sign(static_binding_message(chain_id, key.public.x25519))
    )


async def rogue_handshake(
    transport: StreamTransport,
    static: KeyPair,
    initiator: bool,
    identity: bytes,
    session_signer: KeyPair,
) -> NoiseConnection:
    """Run XX by hand with a chosen Noise static key, identity payload and session signer."""
    conn = noise_conn(static, initiator)
    role = b"I" if initiator else b"R"
    if initiator:
        await transport.send_frame(bytes(conn.write_message(b"")))
        conn.read_message(await transport.recv_frame())
        await transport.send_frame(bytes(conn.write_message(identity)))
    else:
        conn.read_message(await transport.recv_frame())
        await transport.send_frame(bytes(conn.write_message(identity)))
        conn.read_message(await transport.recv_frame())
    proof = session_signer.sign(session_binding_message(role, bytes(conn.get_handshake_hash())))
    await transport.send_frame(bytes(conn.encrypt(proof)))
    return conn


# -- man in the middle ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mitm_proxy(target_port: int) -> AsyncIterator[tuple[int, list[SecureChannel]]]:
    """A loopback proxy that terminates Noise on both sides with its own key and relays."""
    sessions: list[SecureChannel] = []

    async def relay(src: SecureChannel, dst: SecureChannel) -> None:
        with contextlib.suppress(ChannelError):
            for _ in range(1000):
                await dst.send(await src.recv())

    async def handler(transport: StreamTransport) -> None:
        try:
            down = await SecureChannel.accept(transport, MALLORY, CHAIN)
        except ChannelError:
            return
        try:
            up = await dial(target_port, MALLORY)
        except ChannelError:
            await down.close()
            return
        sessions.extend((down, up))
        try:
            await asyncio.gather(relay(down, up), relay(up, down))
        finally:
            await asyncio.gather(down.close(), up.close())

    async with listening(handler) as port:
        yield port, sessions


async def test_mitm_is_refused_when_the_real_principal_is_expected() -> None:
    outcome: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    async with (
        asyncio.timeout(10),
        listening(honest_listener(SERVER, CHAIN, outcome)) as port,
        mitm_proxy(port) as (proxy_port, _),
    ):
        with pytest.raises(PeerAuthError, match="expected peer"):
            await dial(proxy_port, expected=SERVER.principal)
    # The dialler refused on message 2, so its own identity never reached the proxy.
    assert not outcome.done() or outcome.exception() is not None


async def test_mitm_without_expectation_cannot_pose_as_either_end() -> None:
    outcome: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    async with (
        asyncio.timeout(10),
        listening(honest_listener(SERVER, CHAIN, outcome)) as port,
        mitm_proxy(port) as (proxy_port, _),
    ):
        client = await dial(proxy_port)
        server_side = await outcome
        # The relay works, but each end sees the proxy's principal, never the other end's.
        assert client.remote_principal == MALLORY.principal
        assert server_side.remote_principal == MALLORY.principal
        await client.close()


async def test_replayed_identity_on_another_static_key_is_refused() -> None:
    """The proxy presents the server's genuine signed identity, but over its own Noise key."""

    async def impostor(transport: StreamTransport) -> None:
        with contextlib.suppress(Exception):
            await rogue_handshake(
                transport, MALLORY, False, genuine_identity(SERVER), SERVER
            )

    async with asyncio.timeout(10), listening(impostor) as port:
        with pytest.raises(PeerAuthError, match="did not sign the Noise static key"):
            await dial(port)  # even without an expectation
        with pytest.raises(PeerAuthError):
            await dial(port, expected=SERVER.principal)


# -- forged identities ------------------------------------------------------------------------


def forged_identity() -> bytes:
    """Claims SERVER's Ed25519 key, but the signature is Mallory's (over Mallory's Noise key)."""
    message = static_binding_message(CHAIN, MALLORY.public.x25519)
    return encode_identity(SERVER.public.ed25519, MALLORY.sign(message))


async def test_responder_signing_with_a_different_key_than_claimed_is_refused() -> None:
    async def impostor(transport: StreamTransport) -> None:
        with contextlib.suppress(Exception):
            await rogue_handshake(
                transport, MALLORY, False, forged_identity(), MALLORY
            )

    async with asyncio.timeout(10), listening(impostor) as port:
        with pytest.raises(PeerAuthError):
            await dial(port)


async def test_initiator_signing_with_a_different_key_than_claimed_is_refused() -> None:
    outcome: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    async with asyncio.timeout(10), listening(honest_listener(SERVER, CHAIN, outcome)) as port:
        transport = await StreamTransport.connect("127.0.0.1", port)
        with contextlib.suppress(Exception):
            await rogue_handshake(transport, MALLORY, True, forged_identity(), MALLORY)
        with pytest.raises(PeerAuthError):
            await outcome
        await transport.close()


async def test_session_proof_by_another_key_is_refused() -> None:
    """A valid static binding is not enough: the Ed25519 key must sign this very session."""

    async def half_impostor(transport: StreamTransport) -> None:
        with contextlib.suppress(Exception):
            await rogue_handshake(transport, MALLORY, False, genuine_identity(MALLORY), SERVER)
            await transport.recv_frame()

    async with asyncio.timeout(10), listening(half_impostor) as port:
        with pytest.raises(PeerAuthError, match="did not sign this session"):
            await dial(port)


async def test_rogue_with_genuine_identity_and_session_proof_is_just_itself() -> None:
    """The hand-rolled rogue is a faithful implementation: honest inputs give a normal channel."""

    async def faithful(transport: StreamTransport) -> None:
        with contextlib.suppress(Exception):
            await rogue_handshake(transport, MALLORY, False, genuine_identity(MALLORY), MALLORY)
            await transport.recv_frame()

    async with asyncio.timeout(10), listening(faithful) as port:
        channel = await dial(port, expected=MALLORY.principal)
        assert channel.remote_keys == MALLORY.public
        await channel.close()


# -- wrong network, garbage, truncation, timeouts ---------------------------------------------


async def test_wrong_chain_id_fails_the_handshake_on_both_sides() -> None:
    outcome: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    async with asyncio.timeout(10), listening(honest_listener(SERVER, b"BLKT", outcome)) as port:
        with pytest.raises(HandshakeError) as dialler_error:
            await dial(port, chain_id=b"BLKR")
        with pytest.raises(HandshakeError):
            await outcome
    assert not isinstance(dialler_error.value, PeerAuthError)


@pytest.mark.parametrize(
    "wire",
    [
        b"",  # connect and hang up
        b"\x00",  # half a length prefix
        b"\x00\x40" + b"\x01" * 10,  # a frame cut short
        b"\x00\x20" + bytes(32),  # a low-order (all-zero) ephemeral key
        b"\x00\x30" + os.urandom(48),  # an ephemeral key plus a plaintext payload
        b"\xff\xff" + os.urandom(65535),  # a full-size frame of noise
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # someone speaking HTTP
    ],
    ids=["hangup", "half-prefix", "cut-frame", "zero-key", "payload-in-m1", "noise", "http"],
)
async def test_garbage_to_a_listener_is_a_handshake_error(wire: bytes) -> None:
    outcome: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    async with (
        asyncio.timeout(10),
        listening(honest_listener(SERVER, CHAIN, outcome, timeout=1.0)) as port,
    ):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire)
        await writer.drain()
        writer.close()
        with pytest.raises(HandshakeError):
            await outcome


@pytest.mark.parametrize(
    "reply",
    [b"", b"\x00\x60" + os.urandom(96), b"\x00\x60" + os.urandom(50), os.urandom(3000)],
    ids=["hangup", "random-m2", "truncated-m2", "random-stream"],
)
async def test_garbage_to_a_dialler_is_a_handshake_error(reply: bytes) -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2 + 32)
        writer.write(reply)
        await writer.drain()

    async with asyncio.timeout(10), listening_raw(liar) as port:
        with pytest.raises(HandshakeError):
            await dial(port, timeout=1.0)


async def test_silent_peer_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with asyncio.timeout(10), listening_raw(silent) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HandshakeError, match="timed out"):
            await dial(port, timeout=0.3)
        assert loop.time() - started < 2


async def test_unreachable_address_is_a_channel_error() -> None:
    async with listening(honest_listener(SERVER, CHAIN, asyncio.Future())) as port:
        pass  # the port is now closed
    with pytest.raises(ChannelClosed):
        await StreamTransport.connect("127.0.0.1", port, timeout=2)


# -- attacks on an established channel (tampering proxy on loopback) ---------------------------


class Cut(bytes):
    """Forward these bytes, then close the connection."""


Mutator = Callable[[int, bytes], bytes]
"""Given the index of a server-to-client frame and the frame, what to forward (a Cut: then
close)."""


@contextlib.asynccontextmanager
async def tampering_proxy(target_port: int, mutate: Mutator) -> AsyncIterator[int]:
    """Relays raw TCP both ways, re-framing the server-to-client direction through ``mutate``.

    Server-to-client frames are: 0 handshake message 2, 1 session proof, 2.. application data.
    """

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            for _ in range(100_000):
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    async def frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            for index in range(100_000):
                head = await reader.readexactly(2)
                frame = await reader.readexactly(int.from_bytes(head, "big"))
                out = mutate(index, head + frame)
                writer.write(out)
                await writer.drain()
                if isinstance(out, Cut):
                    break
        writer.close()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), frames(up_reader, writer))

    async with listening_raw(handler) as port:
        yield port


async def run_through(mutate: Mutator, message: bytes) -> tuple[SecureChannel, BaseException]:
    """Dial the server through the tampering proxy, have the server send ``message``, and
    return the client channel and what its recv() raised."""
    outcome: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    async with (
        listening(honest_listener(SERVER, CHAIN, outcome)) as port,
        tampering_proxy(port, mutate) as proxy_port,
    ):
        client = await dial(proxy_port, expected=SERVER.principal)
        server_side = await outcome
        await server_side.send(message)
        with pytest.raises(ChannelError) as raised:
            await client.recv()
        await server_side.close()
        return client, raised.value


def flip_bit(frame: bytes, position: int) -> bytes:
    return frame[:position] + bytes([frame[position] ^ 0x01]) + frame[position + 1 :]


@pytest.mark.parametrize("position", [2, 20, -1], ids=["first-byte", "middle", "tag"])
async def test_tampered_ciphertext_is_detected(position: int) -> None:
    def mutate(index: int, frame: bytes) -> bytes:
        return flip_bit(frame, position % len(frame)) if index == 2 else frame

    async with asyncio.timeout(10):
        client, error = await run_through(mutate, b"pay 10 coins to alice")
    assert isinstance(error, CorruptFrame)
    assert client.closed
    with pytest.raises(ChannelClosed):
        await client.recv()


async def test_tampered_later_frame_of_a_big_message_is_detected() -> None:
    def mutate(index: int, frame: bytes) -> bytes:
        return flip_bit(frame, 1000) if index == 4 else frame

    async with asyncio.timeout(10):
        _, error = await run_through(mutate, os.urandom(300_000))
    assert isinstance(error, CorruptFrame)


@pytest.mark.parametrize("change", ["drop", "replay", "swap"])
async def test_dropped_replayed_or_reordered_frames_are_detected(change: str) -> None:
    held: list[bytes] = []

    def mutate(index: int, frame: bytes) -> bytes:
        if index == 2:
            held.append(frame)
            return frame if change == "replay" else b""
        if index == 3:
            if change == "drop":
                return frame
            if change == "replay":
                return held[0] + frame
            return frame + held[0]
        return frame

    async with asyncio.timeout(10):
        _, error = await run_through(mutate, os.urandom(200_000))
    assert isinstance(error, CorruptFrame)


@pytest.mark.parametrize(
    "keep", [0, 1, 2, 40], ids=["at-boundary", "mid-prefix", "no-body", "mid-body"]
)
async def test_truncated_stream_is_channel_closed(keep: int) -> None:
    def mutate(index: int, frame: bytes) -> bytes:
        return Cut(frame[:keep]) if index == 2 else frame

    async with asyncio.timeout(10):
        client, error = await run_through(mutate, os.urandom(100))
    assert isinstance(error, ChannelClosed)
    assert client.closed


async def test_truncated_multi_frame_message_is_channel_closed() -> None:
    def mutate(index: int, frame: bytes) -> bytes:
        return Cut(b"") if index == 4 else frame

    async with asyncio.timeout(10):
        _, error = await run_through(mutate, os.urandom(250_000))
    assert isinstance(error, ChannelClosed)


# -- oversized messages and framing violations from an authenticated peer ---------------------


@contextlib.asynccontextmanager
async def tcp_pair(**server_kw: object) -> AsyncIterator[tuple[SecureChannel, SecureChannel]]:
    outcome: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    async with listening(honest_listener(SERVER, CHAIN, outcome, **server_kw)) as port:
        client = await dial(port, max_message=64 * 1024 * 1024)
        server_side = await outcome
        try:
            yield client, server_side
        finally:
            await asyncio.gather(client.close(), server_side.close())


async def send_raw_plaintexts(channel: SecureChannel, plaintexts: list[bytes]) -> None:
    """Encrypt arbitrary plaintexts as the peer's next frames, bypassing the sender's framing."""
    for plain in plaintexts:
        await channel._transport.send_frame(channel._seal_cipher.seal(plain))


async def test_oversize_announcement_is_refused_before_the_body_arrives() -> None:
    async with asyncio.timeout(10), tcp_pair() as (client, server_side):
        # One frame announcing 4 GiB - 1 and nothing else: the receiver must refuse at once
        # (were it to wait for, or allocate, the body, the timeout would fire instead).
        await send_raw_plaintexts(client, [b"\xff\xff\xff\xff" + b"x" * 100])
        with pytest.raises(FrameTooLarge, match="4294967295"):
            await server_side.recv()
        assert server_side.closed
        with pytest.raises(ChannelClosed):
            await server_side.recv()


async def test_message_above_the_receivers_limit_is_refused() -> None:
    async with asyncio.timeout(10), tcp_pair(max_message=1024 * 1024) as (client, server_side):
        receiving = asyncio.ensure_future(server_side.recv())
        with contextlib.suppress(ChannelError):
            await client.send(os.urandom(2 * 1024 * 1024))  # allowed by the sender's own limit
        with pytest.raises(FrameTooLarge):
            await receiving


@pytest.mark.parametrize(
    "plaintexts",
    [
        [b"\x00\x00"],  # shorter than the length field
        [b"\x00\x00\x00\x05abc"],  # a short first frame with more to come
        [b"\x00\x00\x00\x02abc"],  # more bytes than announced
        [(200_000).to_bytes(4, "big") + b"a" * 65_515, b"b" * 10],  # a short middle frame
    ],
    ids=["short-header", "short-first", "overlong", "short-middle"],
)
async def test_framing_violations_are_corrupt_frames(plaintexts: list[bytes]) -> None:
    async with asyncio.timeout(10), tcp_pair() as (client, server_side):
        await send_raw_plaintexts(client, plaintexts)
        with pytest.raises(CorruptFrame):
            await server_side.recv()


# -- WebSocket specifics ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def ws_listener(outcome: asyncio.Future[SecureChannel]) -> AsyncIterator[str]:
    async def p2p(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_MSG_SIZE)
        await ws.prepare(request)
        try:
            outcome.set_result(
                await SecureChannel.accept(WebSocketTransport(ws), SERVER, CHAIN, timeout=2)
            )
        except ChannelError as exc:
            outcome.set_exception(exc)
        return ws

    app = web.Application()
    app.router.add_get("/p2p", p2p)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/p2p"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("attack", ["text", "oversize", "garbage", "close"])
async def test_websocket_abuse_is_a_handshake_error(attack: str) -> None:
    outcome: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    async with asyncio.timeout(10), ws_listener(outcome) as url, aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url)
        if attack == "text":
            await ws.send_str("hello")
        elif attack == "oversize":
            await ws.send_bytes(os.urandom(70_000))
        elif attack == "garbage":
            await ws.send_bytes(os.urandom(32))
            await ws.send_bytes(os.urandom(200))
        else:
            await ws.close()
        # Read as a real peer would, so aiohttp answers the listener's close at once.
        for _ in range(5):  # the listener may answer a random "message 1" before giving up
            reply = await ws.receive()
            if reply.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        else:
            pytest.fail("the listener did not close the WebSocket")
        with pytest.raises(HandshakeError):
            await outcome
        await ws.close()


# -- fuzzing over an in-memory transport ------------------------------------------------------


class MemoryTransport:
    """Frames through queues; lets hypothesis drive thousands of handshakes quickly."""

    def __init__(self, inbox: asyncio.Queue[bytes | None], outbox: asyncio.Queue[bytes | None]):
        self.inbox, self.outbox = inbox, outbox

    async def send_frame(self, frame: bytes) -> None:
        self.outbox.put_nowait(frame)

    async def recv_frame(self) -> bytes:
        frame = await self.inbox.get()
        if frame is None:
            raise ChannelClosed("closed")
        return frame

    async def close(self) -> None:
        self.outbox.put_nowait(None)


def memory_link() -> tuple[MemoryTransport, MemoryTransport]:
    a: asyncio.Queue[bytes | None] = asyncio.Queue()
    b: asyncio.Queue[bytes | None] = asyncio.Queue()
    return MemoryTransport(a, b), MemoryTransport(b, a)


frames_strategy = st.lists(st.binary(max_size=300), min_size=0, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=frames_strategy, initiator=st.booleans())
def test_fuzzed_handshake_frames_only_raise_handshake_errors(
    frames: list[bytes], initiator: bool
) -> None:
    async def scenario() -> None:
        ours, theirs = memory_link()
        for frame in frames:
            await theirs.send_frame(frame)
        await theirs.close()
        make = SecureChannel.initiate if initiator else SecureChannel.accept
        with pytest.raises(HandshakeError):
            await make(ours, SERVER, CHAIN, timeout=2)

    asyncio.run(scenario())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_fuzzed_frames_on_an_open_channel_only_raise_channel_errors(frames: list[bytes]) -> None:
    async def scenario() -> None:
        left, right = memory_link()
        a, _ = await asyncio.gather(
            SecureChannel.initiate(left, CLIENT, CHAIN), SecureChannel.accept(right, SERVER, CHAIN)
        )
        assert a.remote_principal == SERVER.principal
        for frame in frames:
            await right.send_frame(frame)  # injected behind b's back, as a network attacker would
        with pytest.raises(ChannelError):
            await asyncio.wait_for(a.recv(), 2)

    asyncio.run(scenario())


async def test_bad_arguments_are_programming_errors() -> None:
    left, _ = memory_link()
    with pytest.raises(ValueError):
        await SecureChannel.initiate(left, CLIENT, b"")
    with pytest.raises(ValueError):
        await SecureChannel.initiate(left, CLIENT, CHAIN, max_message=-1)
