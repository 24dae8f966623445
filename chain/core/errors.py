"""The project's exception hierarchy.

Every error a user or peer can provoke derives from :class:`BlockcoinError`, so the CLI, the API
and the peer loop can catch one family, print one line and keep running. Consensus failures carry
a stable ``code`` so tests and peers can tell the rules apart without parsing prose, and two
attributes the peer loop acts on (never the message text):

- ``punish``: the data is at fault whoever sends it, so a peer that sent it in a block
  misbehaved. False where it may be fine later (an orphan whose parent is not known yet, a time
  too far ahead).
- ``stateful``: the refusal depends on the chain's state (a nonce used, a balance spent, a window
  closed), so an honest peer may relay such an event in good faith, racing a block.
"""

from __future__ import annotations


class BlockcoinError(Exception):
    """Root of every error the project raises on purpose."""

    code = "error"


class DecodeError(BlockcoinError):
    """Bytes that are not the one canonical encoding of the object asked for."""

    code = "decode"


class KeyError_(BlockcoinError):
    """A key file, key or principal text that cannot be used."""

    code = "key"


class PrincipalFormatError(KeyError_):
    """A principal's text form that is malformed or fails its checksum."""

    code = "principal-format"


class ConfigError(BlockcoinError):
    """A bad network name, data directory or configuration value."""

    code = "config"


class ValidationError(BlockcoinError):
    """An event or block that breaks a consensus rule. Subclasses name the rule."""

    code = "invalid"
    punish = True
    stateful = False


def _rule(name: str, code: str, doc: str, *, base: type[ValidationError] = ValidationError,
          punish: bool = True, stateful: bool = False) -> type[ValidationError]:
    return type(name, (base,), {"code": code, "__doc__": doc, "punish": punish,
                                "stateful": stateful})


BadSignature = _rule("BadSignature", "bad-signature", "A signature that does not verify.")
BadNonce = _rule("BadNonce", "bad-nonce", "A nonce that is not the signer's next one (replay).",
                 stateful=True)
InsufficientFunds = _rule(
    "InsufficientFunds", "insufficient-funds", "An account that cannot pay amount plus fee.",
    stateful=True,
)
BadWritecap = _rule(
    "BadWritecap", "bad-writecap", "A writecap chain that fails one of the paper's five rules.",
    stateful=True,  # expiry is checked against the block's time
)
RevokedSigner = _rule("RevokedSigner", "revoked", "A writecap issued to a revoked principal.",
                      stateful=True)
BadEvent = _rule("BadEvent", "bad-event", "An event whose fields break a rule of its kind.")
StateConflict = _rule(
    "StateConflict", "state-conflict",
    "An event that does not fit the state it meets (an offer expired, a contract no longer active,"
    " a host already holding a fragment of the path).", base=BadEvent, stateful=True,
)
UnknownReference = _rule(
    "UnknownReference", "unknown-reference", "An event naming an offer or contract that is unknown.",
    stateful=True,
)
AllowanceExceeded = _rule(
    "AllowanceExceeded", "allowance-exceeded",
    "An event moving more out of a blocktree's account than a writecap in its chain allows.",
    stateful=True,
)
BadProof = _rule(
    "BadProof", "bad-proof", "A storage proof whose leaves do not prove the contract's root.",
    stateful=True,  # the leaves follow the opening block's hash, which a reorg may change
)
DuplicateProof = _rule(
    "DuplicateProof", "duplicate-proof", "A storage proof for a period already proven.",
    stateful=True,
)
ProofOutsideWindow = _rule(
    "ProofOutsideWindow", "proof-outside-window",
    "A storage proof for a period whose window is not open at the block's height.", stateful=True,
)
BadProofOfWork = _rule("BadProofOfWork", "bad-pow", "A header hash above its target.")
BadTarget = _rule("BadTarget", "bad-target", "A header whose target is not the required one.")
BadTime = _rule("BadTime", "bad-time", "A header time at or below the median of the last 11.")
TimeTooNew = _rule("TimeTooNew", "time-too-new", "A header time more than 2 h in the future.",
                   punish=False)
BadCoinbase = _rule(
    "BadCoinbase", "bad-coinbase", "A coinbase missing, misplaced, or not fees + mint."
)
BadEventsRoot = _rule("BadEventsRoot", "bad-events-root", "An events root that does not match.")
BadStateRoot = _rule(
    "BadStateRoot", "bad-state-root",
    "A state root that is not the root of the global tree after the block.", stateful=True,
)
BlockTooLarge = _rule("BlockTooLarge", "block-too-large", "A block over the size or count limit.")
EventTooLarge = _rule("EventTooLarge", "event-too-large", "An event over the size limit.")
DuplicateEvent = _rule("DuplicateEvent", "duplicate-event", "An event already in the chain.",
                       stateful=True)
BadParent = _rule("BadParent", "bad-parent", "A block whose parent is unknown or invalid.")
UnknownParent = _rule(
    "UnknownParent", "unknown-parent",
    "A block whose parent is not known yet (an orphan: fetch the parent, blame nobody).",
    base=BadParent, punish=False,
)
BadHeader = _rule("BadHeader", "bad-header", "A header field out of range (the version).")


class PolicyError(ValidationError):
    """An event the chain would take but this node does not relay or keep (node policy, not a
    consensus rule: a miner may still include it; another node's policy may differ)."""

    code = "policy"
    punish = False
    stateful = True


class FeeTooLow(PolicyError):
    """A fee below the relay minimum, or a replacement that does not pay more."""

    code = "fee-too-low"


class MempoolFull(PolicyError):
    """The mempool is full of events that pay a higher fee rate."""

    code = "mempool-full"
