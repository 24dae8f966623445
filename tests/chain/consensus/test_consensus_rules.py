"""Each consensus rule broken on purpose, rejected with its own error, state unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.core import errors as E
from chain.core.block import Block
from chain.core.events import (
    Announce,
    Coinbase,
    Revoke,
    SignedEvent,
    Transfer,
)
from chain.core.header import Header
from chain.core.keys import KeyPair
from chain.core.params import COIN, HEADER_VERSION
from chain.core.writecap import Writecap
from chain.node.chainstate import ChainState
from tests.framework.chainkit import (
    DEV,
    P,
    make_block,
    open_chain,
    sign,
    state_dump,
    unsolved_nonce,
    with_limits,
)

OWNER, HOST, OTHER = DEV[0], DEV[1], DEV[2]
FAR = 2**40


def rejects(chain: ChainState, block: Block, error: type[E.ValidationError]) -> None:
    before_tip, before_state = chain.tip.hash, state_dump(chain)
    with pytest.raises(error):
        chain.accept_block(block)
    assert chain.tip.hash == before_tip
    assert state_dump(chain) == before_state


def accept(chain: ChainState, events: list[SignedEvent]) -> Block:
    block = make_block(chain, events)
    chain.accept_block(block)
    assert chain.tip.hash == block.hash
    return block


def transfer(key: KeyPair, nonce: int, amount: int = COIN, to: KeyPair = OTHER) -> SignedEvent:
    return sign(key, nonce, Transfer(to.principal, amount))


# --- header rules ------------------------------------------------------------------------


def test_bad_proof_of_work(chain: ChainState) -> None:
    block = make_block(chain, [])
    rejects(chain, Block(unsolved_nonce(block.header), block.events), E.BadProofOfWork)


def test_wrong_target(chain: ChainState) -> None:
    rejects(chain, make_block(chain, [], bits=0x1F00FFFF), E.BadTarget)


def test_time_too_far_ahead(chain: ChainState) -> None:
    import time

    rejects(chain, make_block(chain, [], time=int(time.time()) + 3 * 3600), E.TimeTooNew)


def test_time_not_above_median(chain: ChainState) -> None:
    for _ in range(11):
        accept(chain, [])
    mtp = chain.median_time_past(chain.tip)
    rejects(chain, make_block(chain, [], time=mtp), E.BadTime)


def test_bad_version_and_unknown_parent(chain: ChainState) -> None:
    rejects(chain, make_block(chain, [], version=HEADER_VERSION - 1), E.BadHeader)
    good = make_block(chain, [])
    orphan = Block(Header(HEADER_VERSION, b"\x07" * 32, good.header.events_root, good.header.state_root,
                          good.header.time, good.header.bits, good.header.nonce), good.events)
    rejects(chain, orphan, E.BadParent)


def test_wrong_state_root(chain: ChainState) -> None:
    """The header's state root must be the global tree's root after the block: a root off by
    one bit, the parent's root, or the all-zero root of version 2 are each refused."""
    good = make_block(chain, [transfer(OWNER, 0)])
    flipped = bytes([good.header.state_root[0] ^ 1]) + good.header.state_root[1:]
    for root in (flipped, chain.tip.header.state_root, bytes(32)):
        rejects(chain, make_block(chain, [transfer(OWNER, 0)], state_root=root), E.BadStateRoot)
    accept(chain, [transfer(OWNER, 0)])


# --- block shape -------------------------------------------------------------------------


def test_bad_events_root(chain: ChainState) -> None:
    rejects(chain, make_block(chain, [transfer(OWNER, 0)], root=b"\x01" * 32), E.BadEventsRoot)


def test_oversize_block(tmp_path: Path) -> None:
    params = with_limits(max_block_bytes=2_000)
    chain = open_chain(tmp_path / "n", params)
    try:
        events = [transfer(OWNER, i) for i in range(20)]
        rejects(chain, make_block(chain, events), E.BlockTooLarge)
        accept(chain, events[:3])
    finally:
        chain.close()


def test_too_many_events(tmp_path: Path) -> None:
    chain = open_chain(tmp_path / "n", with_limits(max_events_per_block=3))
    try:
        rejects(chain, make_block(chain, [transfer(OWNER, i) for i in range(3)]), E.BlockTooLarge)
    finally:
        chain.close()


def test_oversize_event(tmp_path: Path) -> None:
    chain = open_chain(tmp_path / "n", with_limits(max_event_bytes=120))
    try:
        rejects(chain, make_block(chain, [transfer(OWNER, 0)]), E.EventTooLarge)
    finally:
        chain.close()


# --- coinbase ----------------------------------------------------------------------------


def test_wrong_coinbase_amount(chain: ChainState) -> None:
    ev = transfer(OWNER, 0)
    height = chain.tip.height + 1
    too_much = Coinbase(height, HOST.principal, ev.fee + 1)
    rejects(chain, make_block(chain, [ev], coinbase=too_much), E.BadCoinbase)
    too_little = Coinbase(height, HOST.principal, ev.fee - 1)
    rejects(chain, make_block(chain, [ev], coinbase=too_little), E.BadCoinbase)
    wrong_height = Coinbase(height + 1, HOST.principal, ev.fee)
    rejects(chain, make_block(chain, [ev], coinbase=wrong_height), E.BadCoinbase)


def test_empty_block_pays_only_fees(chain: ChainState) -> None:
    block = accept(chain, [])
    assert isinstance(block.events[0], Coinbase) and block.events[0].amount == 0
    ev = transfer(OWNER, 0)
    block = accept(chain, [ev])
    assert block.events[0].amount == ev.fee


def test_second_coinbase(chain: ChainState) -> None:
    block = make_block(chain, [])
    extra = Coinbase(chain.tip.height + 1, HOST.principal, 0, b"x")
    tampered = make_block(chain, [], coinbase=block.events[0])  # type: ignore[arg-type]
    tampered.events.append(extra)
    from chain.core.block import events_root
    from chain.node.mining import solve

    header = solve(Header(tampered.header.version, tampered.header.prev, events_root(tampered.events),
                          tampered.header.state_root, tampered.header.time, tampered.header.bits, 0))
    assert header is not None
    rejects(chain, Block(header, tampered.events), E.BadCoinbase)


# --- account rules -----------------------------------------------------------------------


def test_bad_signature(chain: ChainState) -> None:
    ev = transfer(OWNER, 0)
    forged = SignedEvent(ev.signer_key, ev.nonce, ev.fee, None, None, ev.body,
                         bytes([ev.signature[0] ^ 1]) + ev.signature[1:])
    rejects(chain, make_block(chain, [forged], coinbase=Coinbase(1, HOST.principal, ev.fee)),
            E.BadSignature)


def test_replayed_nonce(chain: ChainState) -> None:
    ev = transfer(OWNER, 0)
    accept(chain, [ev])
    rejects(chain, make_block(chain, [ev], coinbase=Coinbase(2, HOST.principal, ev.fee)), E.BadNonce)
    skip = transfer(OWNER, 5)
    rejects(chain, make_block(chain, [skip], coinbase=Coinbase(2, HOST.principal, skip.fee)),
            E.BadNonce)


def test_other_network_signature_refused(chain: ChainState) -> None:
    from chain.core.params import TEST

    ev = sign(OWNER, 0, Transfer(OTHER.principal, 1), params=TEST)
    rejects(chain, make_block(chain, [ev], coinbase=Coinbase(1, HOST.principal, ev.fee)),
            E.BadSignature)


def test_overspend(chain: ChainState) -> None:
    poor = KeyPair.generate()
    accept(chain, [transfer(OWNER, 0, 1_000, poor)])
    ev = transfer(poor, 0, 950)  # + fee 100 > 1000
    rejects(chain, make_block(chain, [ev], coinbase=Coinbase(2, HOST.principal, ev.fee)),
            E.InsufficientFunds)
    accept(chain, [transfer(poor, 0, 900)])


# --- writecaps and revocation ------------------------------------------------------------


def node_key_with_cap(owner: KeyPair, path: str | None = None, expiry: int = FAR,
                      issuer: KeyPair | None = None) -> tuple[KeyPair, Writecap]:
    node = KeyPair.generate()
    cap = Writecap.issue(P.chain_id, issuer or owner, path or owner.principal.root_path,
                         node.principal, expiry)
    return node, cap


def acting(node: KeyPair, cap: Writecap, body: object, nonce: int = 0,
           account: KeyPair = OWNER) -> SignedEvent:
    return sign(node, nonce, body, account=account.principal, writecap=cap)  # type: ignore[arg-type]


def test_node_acts_for_its_blocktree(chain: ChainState) -> None:
    node, cap = node_key_with_cap(OWNER)
    before = chain.tree.balance(OWNER.principal)
    accept(chain, [acting(node, cap, Transfer(OTHER.principal, 5 * COIN))])
    assert chain.tree.balance(OWNER.principal) == before - 5 * COIN - 100
    # delegation two levels deep
    sub = KeyPair.generate()
    cap2 = Writecap.issue(P.chain_id, node, OWNER.principal.root_path, sub.principal, FAR, cap)
    accept(chain, [acting(sub, cap2, Transfer(OTHER.principal, 1))])


@pytest.mark.parametrize("flaw", ["not-owner", "expired", "path", "signature", "link", "signer"])
def test_bad_writecap_chain(chain: ChainState, flaw: str) -> None:
    stranger = KeyPair.generate()
    node, cap = node_key_with_cap(OWNER)
    if flaw == "not-owner":
        node, cap = node_key_with_cap(OWNER, issuer=stranger)
    elif flaw == "expired":
        node, cap = node_key_with_cap(OWNER, expiry=chain.tip.header.time)
    elif flaw == "path":
        node, cap = node_key_with_cap(OWNER, path=OWNER.principal.root_path + "/photos")
    elif flaw == "signature":
        cap = Writecap(cap.path, cap.issued_to, cap.expiry, cap.issuer_key,
                       bytes([cap.signature[0] ^ 1]) + cap.signature[1:])
    elif flaw == "link":
        # the middle link is signed by a principal the next writecap was not issued to
        mid = KeyPair.generate()
        top = Writecap.issue(P.chain_id, OWNER, OWNER.principal.root_path, mid.principal, FAR)
        cap = Writecap.issue(P.chain_id, stranger, OWNER.principal.root_path, node.principal, FAR, top)
    elif flaw == "signer":
        node = KeyPair.generate()
    ev = acting(node, cap, Transfer(OTHER.principal, 1))
    rejects(chain, make_block(chain, [ev], coinbase=Coinbase(1, HOST.principal, ev.fee)),
            E.BadWritecap)


def test_revoked_signer(chain: ChainState) -> None:
    node, cap = node_key_with_cap(OWNER)
    accept(chain, [acting(node, cap, Transfer(OTHER.principal, 1))])
    accept(chain, [sign(OWNER, 0, Revoke(node.principal, FAR))])
    ev = acting(node, cap, Transfer(OTHER.principal, 1), nonce=1)
    rejects(chain, make_block(chain, [ev], coinbase=Coinbase(3, HOST.principal, ev.fee)),
            E.RevokedSigner)


def test_revocation_lapses(chain: ChainState) -> None:
    node, cap = node_key_with_cap(OWNER)
    accept(chain, [sign(OWNER, 0, Revoke(node.principal, chain.tip.header.time + 1))])
    for _ in range(12):
        accept(chain, [])
    accept(chain, [acting(node, cap, Transfer(OTHER.principal, 1))])


def test_announce_publishes_keys_and_address(chain: ChainState) -> None:
    accept(chain, [sign(HOST, 0, Announce(HOST.public.x25519, "127.0.0.1:9000"))])
    acct = chain.tree.principal(HOST.principal)
    assert acct is not None
    assert acct.address == "127.0.0.1:9000" and acct.x25519 == HOST.public.x25519
    assert acct.ed25519 == HOST.public.ed25519
    bad = sign(HOST, 1, Announce(HOST.public.x25519, "no-port"))
    rejects(chain, make_block(chain, [bad], coinbase=Coinbase(2, OWNER.principal, bad.fee)),
            E.BadEvent)


def test_invalid_block_is_remembered(chain: ChainState) -> None:
    ev = transfer(OWNER, 0, 10**18)
    block = make_block(chain, [ev], coinbase=Coinbase(1, HOST.principal, ev.fee))
    rejects(chain, block, E.InsufficientFunds)
    with pytest.raises(E.BadParent, match="invalid"):
        chain.accept_block(block)
    child = make_block(chain, [], parent=block.hash)
    with pytest.raises(E.BadParent, match="invalid"):
        chain.accept_block(child)
