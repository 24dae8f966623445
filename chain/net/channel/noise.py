"""The encrypted, mutually authenticated node-to-node channel.

Why Noise XX: both nodes have long-term keys but a dialler usually learns the peer's identity
only from the handshake (and a listener never knows who will call), which is what XX is for.
The handshake comes from the ``noiseprotocol`` package (``Noise_XX_25519_AESGCM_SHA256``);
nothing here invents cryptography, it only binds the Noise keys to Blockcoin identities.
AES-GCM rather than ChaCha20-Poly1305 because with AES-NI it seals 64 KiB frames about 3x
faster here, and fragments stream through this channel. After the handshake, transport frames
are sealed and opened on the AEAD directly with the keys and nonces Noise split
(:class:`_TransportCipher`), so bulk data is encrypted from, and decrypted into, buffers
without a copy per frame; the wire format is Noise's.

Identity binding. A node's Noise static key is its X25519 key (``KeyPair.x25519_private``), but
a Blockcoin identity is an Ed25519 key (the principal is its SHA-256). The X25519 key is derived
from the same seed, which a peer cannot check, so each side proves the link by signature:

1. *Static binding, in the handshake payloads* (message 2 for the responder, message 3 for the
   initiator, both encrypted by Noise): ``version || ed25519_public || signature`` where the
   signature is Ed25519 over ``STATIC_DOMAIN || varbytes(chain_id) || x25519_static_public``.
   The receiver verifies it against the Noise *remote static key* it just authenticated (Noise
   proved the peer holds that X25519 private key) and derives the principal. The initiator does
   this on message 2, before message 3, so it refuses a wrong or forged responder (for instance
   a man in the middle, when it dialled a known principal) without revealing its own identity.
2. *Session binding, first transport message each way*: an Ed25519 signature over
   ``SESSION_DOMAIN || role || handshake_hash``. The handshake hash (exposed reliably by the
   library only once the handshake is complete, hence after it) covers the prologue, both
   ephemeral keys and both static keys, so this proves the Ed25519 key holder is live in *this*
   session, not merely that it once endorsed the X25519 key. The role byte prevents reflecting a
   peer's own signature back at it.

Network separation. The Noise prologue is ``PROLOGUE_DOMAIN || varbytes(chain_id)``, which also
names the protocol version: nodes of different networks or versions fail the handshake (their
handshake hashes differ, so the first encrypted payload does not decrypt).

Framing. Application messages of any size up to ``max_message`` (default 4 MiB) are split into
Noise transport frames of at most 65535 bytes. The first frame's plaintext begins with the
message length as a 4-byte big-endian integer; each frame carries as many bytes as fit and only
the last may be short, so the split is canonical. A length above ``max_message`` is refused
(:class:`FrameTooLarge`) before anything is allocated.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from noise.connection import Keypair, NoiseConnection

from chain.core.encoding import Reader, Writer
from chain.core.errors import DecodeError
from chain.core.keys import KeyPair, PublicKeys, verify
from chain.core.principal import Principal
from chain.net.channel.errors import (
    ChannelClosed,
    ChannelError,
    CorruptFrame,
    FrameTooLarge,
    HandshakeError,
    PeerAuthError,
)
from chain.net.channel.transport import MAX_FRAME, Frame, FrameFiller, FrameTransport

PROTOCOL_NAME: Final = b"Noise_XX_25519_AESGCM_SHA256"
PROTOCOL_VERSION: Final = 1
PROLOGUE_DOMAIN: Final = b"blockcoin p2p noise v1\x00"
STATIC_DOMAIN: Final = b"blockcoin p2p static key v1\x00"
SESSION_DOMAIN: Final = b"blockcoin p2p session v1\x00"

DEFAULT_MAX_MESSAGE: Final = 4 * 1024 * 1024
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0

TAG_SIZE: Final = 16
FRAME_PLAINTEXT: Final = MAX_FRAME - TAG_SIZE
LENGTH_SIZE: Final = 4
MAX_MESSAGE_LIMIT: Final = (1 << (8 * LENGTH_SIZE)) - 1
_MAX_CHAIN_ID: Final = 64

_MAX_NONCE: Final = (1 << 64) - 1  # Noise reserves 2^64 - 1
_ROLE_INITIATOR: Final = b"I"
_ROLE_RESPONDER: Final = b"R"
_IDENTITY_SIZE: Final = 1 + 32 + 64


def prologue(chain_id: bytes) -> bytes:
    """The Noise prologue: protocol version and network, so other networks cannot talk to us."""
    return bytes(Writer().raw(PROLOGUE_DOMAIN).var_bytes(chain_id))


def static_binding_message(chain_id: bytes, x25519_public: bytes) -> bytes:
    """What a node signs with its Ed25519 key to claim a Noise static (X25519) key."""
    return bytes(Writer().raw(STATIC_DOMAIN).var_bytes(chain_id).fixed(x25519_public, 32))


def session_binding_message(role: bytes, handshake_hash: bytes) -> bytes:
    """What a node signs with its Ed25519 key to prove it is live in this very session."""
    return SESSION_DOMAIN + role + handshake_hash


def encode_identity(ed25519_public: bytes, signature: bytes) -> bytes:
    """The handshake payload carrying a node's identity claim."""
    return bytes(Writer().u8(PROTOCOL_VERSION).fixed(ed25519_public, 32).fixed(signature, 64))


def decode_identity(payload: bytes) -> tuple[bytes, bytes]:
    """``(ed25519_public, signature)`` from a handshake payload; strict, any flaw refused."""
    try:
        reader = Reader(payload)
        version = reader.u8()
        if version != PROTOCOL_VERSION:
            raise HandshakeError(f"peer speaks channel protocol version {version}")
        ed25519_public = reader.fixed(32)
        signature = reader.fixed(64)
        reader.finish()
    except DecodeError as exc:
        raise HandshakeError(f"malformed identity payload: {exc}") from exc
    return ed25519_public, signature


def _static_private_bytes(key: KeyPair) -> bytes:
    return key.x25519_private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def _check_chain_id(chain_id: bytes) -> bytes:
    if not isinstance(chain_id, bytes) or not 0 < len(chain_id) <= _MAX_CHAIN_ID:
        raise ValueError(f"a chain id is 1..{_MAX_CHAIN_ID} bytes")
    return chain_id


def _noise(action: str, fn: Any, *args: Any) -> bytes:
    """Call into the untyped noise library, turning whatever it raises into a HandshakeError.

    The library raises assorted exceptions (its own, ``InvalidTag``, ``ValueError`` on bad
    points, ``IndexError``...) on hostile input; to the caller they all mean the same thing.
    """
    try:
        return bytes(fn(*args))
    except Exception as exc:
        raise HandshakeError(
            f"handshake failed while {action} (different network or protocol version, or "
            f"corrupted data): {type(exc).__name__}: {exc}"
        ) from exc


class _Handshake:
    """One run of the XX handshake plus the identity checks; used once, then discarded."""

    def __init__(
        self,
        transport: FrameTransport,
        key: KeyPair,
        chain_id: bytes,
        initiator: bool,
        expected: Principal | None,
    ) -> None:
        self.transport = transport
        self.key = key
        self.chain_id = chain_id
        self.initiator = initiator
        self.expected = expected
        conn = NoiseConnection.from_name(PROTOCOL_NAME)
        conn.set_prologue(prologue(chain_id))
        conn.set_keypair_from_private_bytes(Keypair.STATIC, _static_private_bytes(key))
        if initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.start_handshake()
        self.conn = conn
        # The library forgets the handshake state (and with it the remote static key) as soon
        # as the last message is processed, so keep a reference to read ``rs`` afterwards.
        self._state = conn.noise_protocol.handshake_state

    def _identity_payload(self) -> bytes:
        message = static_binding_message(self.chain_id, self.key.public.x25519)
        return encode_identity(self.key.public.ed25519, self.key.sign(message))

    def _remote_static(self) -> bytes:
        try:
            value = bytes(self._state.rs.public_bytes)
        except Exception as exc:
            raise HandshakeError("Noise handshake gave no remote static key") from exc
        if len(value) != 32:
            raise HandshakeError("Noise remote static key is not 32 bytes")
        return value

    def _check_identity(self, payload: bytes) -> PublicKeys:
        ed25519_public, signature = decode_identity(payload)
        remote_static = self._remote_static()
        keys = PublicKeys(ed25519=ed25519_public, x25519=remote_static)
        if not verify(
            ed25519_public, static_binding_message(self.chain_id, remote_static), signature
        ):
            raise PeerAuthError(
                f"peer claiming {keys.principal} did not sign the Noise static key it used"
            )
        if self.expected is not None and keys.principal != self.expected:
            raise PeerAuthError(f"expected peer {self.expected}, got {keys.principal}")
        return keys

    async def _recv(self) -> bytes:
        try:
            return bytes(await self.transport.recv_frame())  # the library wants bytes
        except ChannelError as exc:
            raise HandshakeError(f"connection failed during handshake: {exc}") from exc

    async def _send(self, frame: bytes) -> None:
        try:
            await self.transport.send_frame(frame)
        except ChannelError as exc:
            raise HandshakeError(f"connection failed during handshake: {exc}") from exc

    async def run(self) -> tuple[PublicKeys, bytes]:
        """Run the three messages and the session confirmation: ``(peer keys, handshake hash)``."""
        conn = self.conn
        if self.initiator:
            await self._send(_noise("writing message 1", conn.write_message, b""))
            payload = _noise("reading message 2", conn.read_message, await self._recv())
            peer = self._check_identity(payload)
            await self._send(
                _noise("writing message 3", conn.write_message, self._identity_payload())
            )
        else:
            payload = _noise("reading message 1", conn.read_message, await self._recv())
            if payload:
                raise HandshakeError("unexpected payload in handshake message 1")
            await self._send(
                _noise("writing message 2", conn.write_message, self._identity_payload())
            )
            payload = _noise("reading message 3", conn.read_message, await self._recv())
            peer = self._check_identity(payload)
        if not conn.handshake_finished:  # pragma: no cover - XX always ends after message 3
            raise HandshakeError("handshake did not finish after three messages")
        handshake_hash = bytes(conn.get_handshake_hash())
        mine, theirs = (
            (_ROLE_INITIATOR, _ROLE_RESPONDER)
            if self.initiator
            else (_ROLE_RESPONDER, _ROLE_INITIATOR)
        )
        proof = self.key.sign(session_binding_message(mine, handshake_hash))
        await self._send(_noise("sealing the session proof", conn.encrypt, proof))
        their_proof = _noise("opening the session proof", conn.decrypt, await self._recv())
        if not verify(peer.ed25519, session_binding_message(theirs, handshake_hash), their_proof):
            raise PeerAuthError(f"peer {peer.principal} did not sign this session")
        return peer, handshake_hash


class _TransportCipher:
    """Noise transport messages, ``ENCRYPT(k, n++, ad="", plaintext)`` with AES-256-GCM and the
    spec's nonce (four zero bytes, then ``n`` as a big-endian u64), done on the AEAD directly
    once the handshake (run by ``noiseprotocol``) has split its keys: the library insists on
    ``bytes`` in and out, which costs a copy per 64 KiB frame on bulk transfers."""

    __slots__ = ("_aead", "_n")

    def __init__(self, key: bytes, n: int) -> None:
        self._aead = AESGCM(key)
        self._n = n

    @classmethod
    def after(cls, state: Any) -> _TransportCipher:
        """Take over a finished handshake's cipher state where it stopped."""
        return cls(bytes(state.k), int(state.n))

    def _nonce(self) -> bytes:
        n = self._n
        if n >= _MAX_NONCE:
            raise ChannelClosed("nonce space exhausted: the channel must be reopened")
        self._n = n + 1
        return b"\x00\x00\x00\x00" + n.to_bytes(8, "big")

    def seal(self, plaintext: bytes | memoryview) -> bytes:
        return self._aead.encrypt(self._nonce(), plaintext, None)

    def seal_into(self, plaintext: memoryview, out: memoryview) -> None:
        self._aead.encrypt_into(self._nonce(), plaintext, None, out)

    def open(self, frame: Frame) -> bytes:
        return self._aead.decrypt(self._nonce(), frame, None)

    def open_into(self, frame: Frame, out: memoryview) -> None:
        self._aead.decrypt_into(self._nonce(), frame, None, out)


class SecureChannel:
    """An authenticated, encrypted, message-oriented channel to one peer.

    Build one with :meth:`initiate` (dialler) or :meth:`accept` (listener). ``send`` and
    ``recv`` may run concurrently (one reader task, any number of writer tasks); both are
    cancellation-safe: a cancelled ``recv`` leaves the partly received message to the next call,
    and a cancelled ``send`` still finishes sending its message in the background, so a timeout
    around either never desynchronises the stream. Any error closes the channel for good.
    """

    def __init__(
        self,
        transport: FrameTransport,
        conn: Any,
        peer: PublicKeys,
        handshake_hash: bytes,
        chain_id: bytes,
        initiator: bool,
        max_message: int,
    ) -> None:
        """Internal: use :meth:`initiate` or :meth:`accept`."""
        self._transport = transport
        self._seal_cipher = _TransportCipher.after(conn.noise_protocol.cipher_state_encrypt)
        self._open_cipher = _TransportCipher.after(conn.noise_protocol.cipher_state_decrypt)
        self._peer = peer
        self._handshake_hash = handshake_hash
        self._chain_id = chain_id
        self._initiator = initiator
        self._max_message = max_message
        self._send_lock = asyncio.Lock()
        self._recv_lock = asyncio.Lock()
        self._closed: ChannelError | None = None
        # Receive state kept on the object (not in locals) so that a cancelled recv() can resume
        # (a cancelled transport read loses no frame).
        self._message: bytearray | memoryview | None = None
        self._received = 0

    # -- construction -------------------------------------------------------------------

    @classmethod
    async def initiate(
        cls,
        transport: FrameTransport,
        key: KeyPair,
        chain_id: bytes,
        expected: Principal | None = None,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> SecureChannel:
        """Dial side: run the handshake as initiator over ``transport``.

        With ``expected`` (the principal we meant to reach), any other peer is refused with
        :class:`PeerAuthError` before our own identity is sent. On failure the transport is
        closed and a :class:`HandshakeError` (or its subclass :class:`PeerAuthError`) raised.
        """
        return await cls._establish(transport, key, chain_id, True, expected, max_message, timeout)

    @classmethod
    async def accept(
        cls,
        transport: FrameTransport,
        key: KeyPair,
        chain_id: bytes,
        expected: Principal | None = None,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> SecureChannel:
        """Listen side: run the handshake as responder over ``transport``.

        ``expected`` is rarely useful here (anyone may call) but is honoured if given.
        """
        return await cls._establish(transport, key, chain_id, False, expected, max_message, timeout)

    @classmethod
    async def _establish(
        cls,
        transport: FrameTransport,
        key: KeyPair,
        chain_id: bytes,
        initiator: bool,
        expected: Principal | None,
        max_message: int,
        timeout: float,
    ) -> SecureChannel:
        _check_chain_id(chain_id)
        if not 0 <= max_message <= MAX_MESSAGE_LIMIT:
            raise ValueError(f"max_message must be 0..{MAX_MESSAGE_LIMIT}")
        try:
            handshake = _Handshake(transport, key, chain_id, initiator, expected)
            async with asyncio.timeout(timeout):
                peer, handshake_hash = await handshake.run()
        except TimeoutError as exc:
            await transport.close()
            raise HandshakeError(f"handshake timed out after {timeout:g} s") from exc
        except BaseException:
            await transport.close()
            raise
        return cls(
            transport, handshake.conn, peer, handshake_hash, chain_id, initiator, max_message
        )

    # -- identity ----------------------------------------------------------------------

    @property
    def remote_principal(self) -> Principal:
        """Who the peer is: SHA-256 of the Ed25519 key that signed its Noise key and session."""
        return self._peer.principal

    @property
    def remote_keys(self) -> PublicKeys:
        """The peer's Ed25519 key and its X25519 key (the Noise remote static key)."""
        return self._peer

    @property
    def handshake_hash(self) -> bytes:
        """Noise channel binding: unique to this session, equal on both ends."""
        return self._handshake_hash

    @property
    def chain_id(self) -> bytes:
        return self._chain_id

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def max_message(self) -> int:
        return self._max_message

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # -- sending -----------------------------------------------------------------------

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one message. :class:`FrameTooLarge` if above ``max_message`` (nothing is sent,
        the channel stays open); :class:`ChannelClosed` if the channel is or becomes unusable."""
        self._raise_if_closed()
        size = len(data)
        if size > self._max_message:
            raise FrameTooLarge(f"message of {size} bytes exceeds the maximum {self._max_message}")
        # Shielded so that cancelling the caller cannot leave half a message on the wire.
        task = asyncio.ensure_future(self._send_locked(memoryview(data).cast("B")))
        task.add_done_callback(_consume_exception)
        await asyncio.shield(task)

    async def _send_locked(self, data: memoryview) -> None:
        async with self._send_lock:
            self._raise_if_closed()
            try:
                await self._transport.send_frames(*self._frames(data))
            except ChannelError as exc:
                await self._fail(exc if isinstance(exc, ChannelClosed) else ChannelClosed(str(exc)))
                raise self._closed_error() from exc

    def _frames(self, data: memoryview) -> tuple[list[int], FrameFiller]:
        """A whole message as frame sizes and the filler that seals frame ``i`` into the
        transport's buffer (in order, so nonces follow the wire order). Only the first frame's
        plaintext is copied (to put the length in front)."""
        size = len(data)
        first = min(size, FRAME_PLAINTEXT - LENGTH_SIZE)
        plain = [memoryview(size.to_bytes(LENGTH_SIZE, "big") + data[:first])]
        plain += (data[offset : offset + FRAME_PLAINTEXT]
                  for offset in range(first, size, FRAME_PLAINTEXT))
        seal_into = self._seal_cipher.seal_into

        def fill(i: int, out: memoryview) -> None:
            seal_into(plain[i], out)

        return [len(p) + TAG_SIZE for p in plain], fill

    # -- receiving ---------------------------------------------------------------------

    async def recv(self) -> bytearray:
        """Receive the next whole message (the buffer it was decrypted into: not copied again).

        :class:`FrameTooLarge` if the peer announces more than ``max_message``;
        :class:`CorruptFrame` on tampering or broken framing; :class:`ChannelClosed` once the
        peer has gone. All of them close the channel.
        """
        message = await self._receive(None)
        # (a view only if a cancelled recv_into left this message half received in its buffer)
        return message if isinstance(message, bytearray) else bytearray(message)

    async def recv_into(self, buffer: bytearray | memoryview) -> memoryview:
        """As :meth:`recv`, but decrypt into ``buffer`` when the message fits (the returned view
        of it), so a bulk reader can reuse its buffers or receive straight into place; a larger
        message gets a buffer of its own."""
        return memoryview(await self._receive(buffer))

    async def _receive(self, into: bytearray | memoryview | None) -> bytearray | memoryview:
        async with self._recv_lock:
            self._raise_if_closed()
            try:
                return await self._recv_message(into)
            except ChannelError as exc:
                await self._fail(exc)
                raise

    async def _recv_message(self, into: bytearray | memoryview | None) -> bytearray | memoryview:
        while True:
            frame = await self._transport.recv_frame()
            message = self._message
            if message is None:
                plain = self._open(frame)
                if len(plain) < LENGTH_SIZE:
                    raise CorruptFrame("first frame of a message shorter than its length field")
                length = int.from_bytes(plain[:LENGTH_SIZE], "big")
                if length > self._max_message:
                    raise FrameTooLarge(
                        f"peer announced a message of {length} bytes, above the maximum "
                        f"{self._max_message}"
                    )
                body = memoryview(plain)[LENGTH_SIZE:]
                if len(body) != min(length, FRAME_PLAINTEXT - LENGTH_SIZE):
                    raise CorruptFrame(f"first frame carries {len(body)} bytes of {length}")
                message = self._message = (
                    memoryview(into).cast("B")[:length]
                    if into is not None and memoryview(into).nbytes >= length
                    else bytearray(length))
                message[: len(body)] = body
                self._received = len(body)
            else:
                due = min(len(message) - self._received, FRAME_PLAINTEXT)
                if len(frame) - TAG_SIZE != due:
                    raise CorruptFrame(
                        f"frame carries {len(frame) - TAG_SIZE} bytes where {due} were due"
                    )
                # decrypted straight into its place in the message: no per-frame copies
                self._open_into(frame, memoryview(message)[self._received : self._received + due])
                self._received += due
            if self._received == len(message):
                self._message = None
                self._received = 0
                return message

    def _open(self, frame: Frame) -> bytes:
        try:
            return self._open_cipher.open(frame)
        except (InvalidTag, ValueError) as exc:
            raise CorruptFrame(
                f"frame failed authentication (tampered or corrupted): {type(exc).__name__}"
            ) from exc

    def _open_into(self, frame: Frame, out: memoryview) -> None:
        try:
            self._open_cipher.open_into(frame, out)
        except (InvalidTag, ValueError) as exc:
            raise CorruptFrame(
                f"frame failed authentication (tampered or corrupted): {type(exc).__name__}"
            ) from exc

    # -- closing -----------------------------------------------------------------------

    async def close(self) -> None:
        """Close the channel and its transport; idempotent, never raises."""
        await self._fail(ChannelClosed("channel closed locally"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _fail(self, reason: ChannelError) -> None:
        if self._closed is None:
            self._closed = reason
        await self._transport.close()

    def _closed_error(self) -> ChannelClosed:
        reason = self._closed
        if type(reason) is ChannelClosed:
            return ChannelClosed(str(reason))
        return ChannelClosed(f"channel closed after: {reason}")

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise self._closed_error()

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        state = "closed" if self._closed else "open"
        return f"<SecureChannel {role} peer={self.remote_principal} {state}>"


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a background task's exception as seen; its awaiter (if any) re-raises it anyway."""
    if not future.cancelled():
        future.exception()
