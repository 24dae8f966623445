"""Node-to-node networking: the Noise XX secure channel and the transports it runs over."""

from chain.net.channel import DEFAULT_MAX_MESSAGE, SecureChannel
from chain.net.errors import (
    ChannelClosed,
    ChannelError,
    CorruptFrame,
    FrameTooLarge,
    HandshakeError,
    PeerAuthError,
)
from chain.net.transport import (
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
