"""The Noise XX secure channel between nodes, and the transports it runs over."""

from chain.net.channel.errors import (
    ChannelClosed,
    ChannelError,
    CorruptFrame,
    FrameTooLarge,
    HandshakeError,
    PeerAuthError,
)
from chain.net.channel.noise import DEFAULT_MAX_MESSAGE, SecureChannel
from chain.net.channel.transport import (
    MAX_FRAME,
    WS_MAX_MSG_SIZE,
    FrameTransport,
    StreamTransport,
    WebSocketTransport,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "MAX_FRAME",
    "WS_MAX_MSG_SIZE",
    "ChannelClosed",
    "ChannelError",
    "CorruptFrame",
    "FrameTooLarge",
    "FrameTransport",
    "HandshakeError",
    "PeerAuthError",
    "SecureChannel",
    "StreamTransport",
    "WebSocketTransport",
]
