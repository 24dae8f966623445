"""Errors of the node-to-node secure channel.

Everything a remote peer can provoke on a channel (garbage, truncation, a wrong network, a
forged identity, an oversized message, a dropped connection, a timeout) surfaces as a
:class:`ChannelError`, so the peer loop catches one family, drops or bans the peer, and keeps
running. Subclasses say what to do next: a :class:`PeerAuthError` is grounds to distrust the
address, a :class:`ChannelClosed` is grounds only to reconnect later.
"""

from __future__ import annotations

from chain.core.errors import BlockcoinError


class ChannelError(BlockcoinError):
    """Root of every failure of a secure channel."""

    code = "channel"


class HandshakeError(ChannelError):
    """The Noise handshake did not complete: wrong network or protocol version, garbage,
    truncation, a timeout, or the connection dropping before both sides were authenticated."""

    code = "handshake"


class PeerAuthError(HandshakeError):
    """The peer completed the key exchange but its identity is unacceptable: its Ed25519 key did
    not sign its Noise static key or the session, or it is not the principal that was dialled.

    A subclass of :class:`HandshakeError` because it happens during the handshake; kept apart
    because it, unlike a dropped connection, says the address is not who it claims to be."""

    code = "peer-auth"


class FrameTooLarge(ChannelError):
    """A message (or transport frame) above the configured maximum, refused before its bytes
    are allocated. Raised locally on send, or on receive when the peer announces one; in the
    latter case the channel is closed, since the rest of that message can no longer be skipped
    safely."""

    code = "frame-too-large"


class ChannelClosed(ChannelError):
    """The channel is unusable: closed by either side, the connection lost, or a rule broken."""

    code = "channel-closed"


class CorruptFrame(ChannelClosed):
    """A transport frame failed AEAD authentication (tampered, replayed, reordered) or broke the
    message framing rules. The channel is closed: Noise nonces are sequential, so no later frame
    could be decrypted after a lost one anyway."""

    code = "corrupt-frame"
