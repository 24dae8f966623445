"""What peers' messages cost: misbehaviour points per offence and rate-limit tokens per message.

Both are tables so that a reader sees every price in one place and a change to one price is a
one-line diff. Points decay by one per second; at :data:`BAN_SCORE` a peer is disconnected and
banned. Only what no honest node does is an offence: races an honest peer cannot avoid (headers
that do not connect, an event our tip refuses) are not listed here and cost nothing.
"""

from __future__ import annotations

from enum import Enum, unique

from chain.net.p2p.messages import Addr, Events, GetBlocks, GetHeaders, Message

BAN_SCORE = 100.0


@unique
class Offence(Enum):
    """A kind of misbehaviour; its points are in :data:`POINTS`."""

    GARBAGE = "garbage"  # bytes that do not decode as a message
    OVERSIZED = "oversized"  # a frame above the channel's maximum
    OUT_OF_ORDER = "out-of-order"  # a message before hello
    FALSE_HELLO = "false-hello"  # a hello naming another principal than the channel's
    SECOND_HELLO = "second-hello"
    FLOOD = "flood"  # past the per-peer message or byte rate
    BAD_MESSAGE = "bad-message"  # a message its handler refused as invalid
    NOT_A_CHAIN = "not-a-chain"  # headers that do not link to each other
    INVALID_HEADER = "invalid-header"
    FUTURE_HEADER = "future-header"  # may be clock skew: not a ban on its own
    STALE_ANNOUNCE = "stale-announce"  # an unasked tip with no more work than claimed before
    WORK_LIE = "work-lie"  # headers with less work than its hello or announcement claimed
    UNREQUESTED_BLOCK = "unrequested-block"
    INVALID_BLOCK = "invalid-block"
    BROKEN_EVENT = "broken-event"  # a bad signature or over the size limit
    RESENT_EVENT = "resent-event"  # per event it had sent us before on this connection


POINTS: dict[Offence, float] = {
    Offence.GARBAGE: BAN_SCORE,
    Offence.OVERSIZED: BAN_SCORE,
    Offence.OUT_OF_ORDER: BAN_SCORE,
    Offence.FALSE_HELLO: BAN_SCORE,
    Offence.SECOND_HELLO: 20.0,
    Offence.FLOOD: BAN_SCORE,
    Offence.BAD_MESSAGE: 20.0,
    Offence.NOT_A_CHAIN: BAN_SCORE,
    Offence.INVALID_HEADER: BAN_SCORE,
    Offence.FUTURE_HEADER: 20.0,
    Offence.STALE_ANNOUNCE: 5.0,
    Offence.WORK_LIE: BAN_SCORE / 2,
    Offence.UNREQUESTED_BLOCK: 5.0,
    Offence.INVALID_BLOCK: BAN_SCORE,
    Offence.BROKEN_EVENT: 50.0,
    Offence.RESENT_EVENT: 0.2,  # 500 resent events: a ban
}


def message_cost(msg: Message) -> float:
    """Rate-limit tokens a message costs: requests we must answer with work cost more."""
    match msg:
        case GetHeaders():
            return 10.0
        case GetBlocks(hashes=hashes):
            return 1.0 + len(hashes) / 16
        case Events(events=events):
            return 1.0 + len(events) / 50
        case Addr(entries=entries):
            return 1.0 + len(entries) / 50
    return 1.0
