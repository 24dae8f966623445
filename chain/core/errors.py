"""The project's exception hierarchy.

Every error a user or peer can provoke derives from :class:`BlockcoinError`, so the CLI, the API
and the peer loop can catch one family, print one line and keep running. Consensus failures carry
a stable ``code`` so tests and peers can tell the rules apart without parsing prose.
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


def _rule(name: str, code: str, doc: str) -> type[ValidationError]:
    cls = type(name, (ValidationError,), {"code": code, "__doc__": doc})
    return cls


BadSignature = _rule("BadSignature", "bad-signature", "A signature that does not verify.")
BadNonce = _rule("BadNonce", "bad-nonce", "A nonce that is not the signer's next one (replay).")
InsufficientFunds = _rule(
    "InsufficientFunds", "insufficient-funds", "An account that cannot pay amount plus fee."
)
BadWritecap = _rule(
    "BadWritecap", "bad-writecap", "A writecap chain that fails one of the paper's five rules."
)
RevokedSigner = _rule("RevokedSigner", "revoked", "A writecap issued to a revoked principal.")
BadEvent = _rule("BadEvent", "bad-event", "An event whose fields break a rule of its kind.")
UnknownReference = _rule(
    "UnknownReference", "unknown-reference", "An event naming an offer or contract that is unknown."
)
AllowanceExceeded = _rule(
    "AllowanceExceeded", "allowance-exceeded",
    "An event moving more out of a blocktree's account than a writecap in its chain allows.",
)
BadProof = _rule(
    "BadProof", "bad-proof", "A storage proof whose leaves do not prove the contract's root."
)
DuplicateProof = _rule(
    "DuplicateProof", "duplicate-proof", "A storage proof for a period already proven."
)
ProofOutsideWindow = _rule(
    "ProofOutsideWindow", "proof-outside-window",
    "A storage proof for a period whose window is not open at the block's height.",
)
BadProofOfWork = _rule("BadProofOfWork", "bad-pow", "A header hash above its target.")
BadTarget = _rule("BadTarget", "bad-target", "A header whose target is not the required one.")
BadTime = _rule("BadTime", "bad-time", "A header time at or below the median of the last 11.")
TimeTooNew = _rule("TimeTooNew", "time-too-new", "A header time more than 2 h in the future.")
BadCoinbase = _rule(
    "BadCoinbase", "bad-coinbase", "A coinbase missing, misplaced, or not fees + mint."
)
BadEventsRoot = _rule("BadEventsRoot", "bad-events-root", "An events root that does not match.")
BlockTooLarge = _rule("BlockTooLarge", "block-too-large", "A block over the size or count limit.")
EventTooLarge = _rule("EventTooLarge", "event-too-large", "An event over the size limit.")
DuplicateEvent = _rule("DuplicateEvent", "duplicate-event", "An event already in the chain.")
BadParent = _rule("BadParent", "bad-parent", "A block whose parent is unknown or invalid.")
BadHeader = _rule("BadHeader", "bad-header", "A header field out of range (version, state root).")


class PolicyError(ValidationError):
    """An event the chain would take but this node does not relay or keep (node policy, not a
    consensus rule: a miner may still include it)."""

    code = "policy"


class FeeTooLow(PolicyError):
    """A fee below the relay minimum, or a replacement that does not pay more."""

    code = "fee-too-low"


class MempoolFull(PolicyError):
    """The mempool is full of events that pay a higher fee rate."""

    code = "mempool-full"
