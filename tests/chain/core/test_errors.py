"""Errors carry what peers and callers act on as attributes, never as message text."""

from __future__ import annotations

from chain.core import errors as E
from chain.node.core import BlockOutcome
from tests.framework.chainkit import P


def _rules() -> list[type[E.ValidationError]]:
    out, todo = [], [E.ValidationError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_every_rule_has_its_own_code() -> None:
    codes = [cls.code for cls in _rules()]
    assert len(codes) == len(set(codes)), sorted(codes)


def test_an_orphan_blames_nobody_whatever_its_message_says() -> None:
    block = P.genesis
    for message in ("unknown parent 00ff", "anything at all"):
        assert not BlockOutcome(block, None, E.UnknownParent(message)).invalid
        assert BlockOutcome(block, None, E.BadParent(message)).invalid
        assert not BlockOutcome(block, None, E.TimeTooNew(message)).invalid
        assert BlockOutcome(block, None, E.BadProof(message)).invalid


def test_races_a_relaying_peer_cannot_know_of_are_stateful() -> None:
    for cls in (E.BadNonce, E.InsufficientFunds, E.DuplicateProof, E.ProofOutsideWindow,
                E.StateConflict, E.UnknownReference, E.FeeTooLow, E.MempoolFull, E.BadProof,
                E.AllowanceExceeded):
        assert cls.stateful, cls.__name__
    for cls in (E.BadSignature, E.EventTooLarge, E.BadEvent, E.BadCoinbase):
        assert not cls.stateful, cls.__name__
    assert issubclass(E.StateConflict, E.BadEvent) and issubclass(E.UnknownParent, E.BadParent)
