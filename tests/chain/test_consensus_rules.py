"""Each consensus rule broken on purpose, rejected with its own error, state unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain import errors as E
from chain.block import Block
from chain.chainstate import ChainState
from chain.events import (
    Announce,
    Coinbase,
    FragmentOffer,
    FragmentReleased,
    FragmentStored,
    Revoke,
    SignedEvent,
    StoragePayment,
    Transfer,
    event_id,
    receipt_message,
    voucher_message,
)
from chain.header import Header
from chain.keys import KeyPair
from chain.params import COIN
from chain.writecap import Writecap
from tests.chainkit import (
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
    rejects(chain, make_block(chain, [], version=2), E.BadHeader)
    good = make_block(chain, [])
    orphan = Block(Header(1, b"\x07" * 32, good.header.events_root, good.header.state_root,
                          good.header.time, good.header.bits, good.header.nonce), good.events)
    rejects(chain, orphan, E.BadParent)


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
    from chain.block import events_root
    from chain.mining import solve

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
    from chain.params import TEST

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


# --- storage contracts -------------------------------------------------------------------


def offer_body(index: int = 0, price: int = 1_000, periods: int = 3, period_blocks: int = 2,
               size: int = 4096, path: str | None = None) -> FragmentOffer:
    return FragmentOffer(path or OWNER.principal.root_path + "/doc", b"\x11" * 32, index, 5, 3,
                         size, b"\x22" * 32, 1024, price, period_blocks, periods, 10**6)


def store_contract(chain: ChainState, host: KeyPair = HOST, index: int = 0,
                   owner_nonce: int = 0, **kw: int) -> bytes:
    offer = sign(OWNER, owner_nonce, offer_body(index, **kw))
    accept(chain, [offer])
    oid = event_id(P.chain_id, offer)
    receipt = host.sign(receipt_message(P.chain_id, oid, host.principal, b"\x22" * 32))
    accept(chain, [sign(OWNER, owner_nonce + 1, FragmentStored(oid, host.public.ed25519, receipt))])
    return oid


def payment(oid: bytes, period: int, amount: int = 1_000, host: KeyPair = HOST, nonce: int = 0,
            owner: KeyPair = OWNER) -> SignedEvent:
    voucher = owner.sign(voucher_message(P.chain_id, oid, period, amount))
    return sign(host, nonce, StoragePayment(oid, period, amount, voucher))


def test_storage_contract_lifecycle_and_mint(chain: ChainState) -> None:
    oid = store_contract(chain)
    stored_block = chain.store.get_block(chain.tip.hash)
    assert stored_block is not None and isinstance(stored_block.events[0], Coinbase)
    assert stored_block.events[0].amount == 100 + P.mint_per_kib * 4  # fee + 4 KiB minted
    holders = chain.tree.fragments(OWNER.principal.root_path + "/doc")
    assert holders[0][0]["host"] == str(HOST.principal)
    host_before = chain.tree.balance(HOST.principal)
    accept(chain, [payment(oid, 0)])
    assert chain.tree.balance(HOST.principal) == host_before + 1_000 - 100
    contract = chain.tree.contract(oid)
    assert contract is not None and contract.paid_periods == 1
    accept(chain, [sign(OWNER, 2, FragmentReleased(oid))])
    assert chain.tree.fragments(OWNER.principal.root_path + "/doc") == {}


def test_contract_ends_by_itself(chain: ChainState) -> None:
    store_contract(chain, periods=1, period_blocks=2)
    assert chain.tree.fragments(OWNER.principal.root_path + "/doc")
    accept(chain, [])
    accept(chain, [])
    assert chain.tree.fragments(OWNER.principal.root_path + "/doc") == {}


def test_payment_for_period_already_paid(chain: ChainState) -> None:
    oid = store_contract(chain)
    accept(chain, [payment(oid, 0)])
    again = payment(oid, 0, nonce=1)
    rejects(chain, make_block(chain, [again], coinbase=Coinbase(4, OWNER.principal, again.fee)),
            E.DuplicatePayment)


def test_payment_for_period_not_started(chain: ChainState) -> None:
    oid = store_contract(chain, period_blocks=50)
    early = payment(oid, 1)
    rejects(chain, make_block(chain, [early], coinbase=Coinbase(3, OWNER.principal, early.fee)),
            E.PeriodNotStarted)


def test_payment_with_forged_voucher_or_wrong_host(chain: ChainState) -> None:
    oid = store_contract(chain)
    forged = payment(oid, 0, owner=OTHER)
    rejects(chain, make_block(chain, [forged], coinbase=Coinbase(3, OWNER.principal, forged.fee)),
            E.BadSignature)
    thief = payment(oid, 0, host=OTHER)
    rejects(chain, make_block(chain, [thief], coinbase=Coinbase(3, OWNER.principal, thief.fee)),
            E.BadEvent)
    greedy = payment(oid, 0, amount=5_000)
    rejects(chain, make_block(chain, [greedy], coinbase=Coinbase(3, OWNER.principal, greedy.fee)),
            E.BadEvent)


def test_owner_who_cannot_pay(chain: ChainState) -> None:
    oid = store_contract(chain, price=2 * 10**14)
    rich = chain.tree.balance(OWNER.principal)
    accept(chain, [transfer(OWNER, 2, rich - 10**6, OTHER)])
    broke = payment(oid, 0, amount=2 * 10**14)
    rejects(chain, make_block(chain, [broke], coinbase=Coinbase(4, OWNER.principal, broke.fee)),
            E.InsufficientFunds)


def test_unknown_offer_and_foreign_release(chain: ChainState) -> None:
    ghost = sign(OWNER, 0, FragmentReleased(b"\x33" * 32))
    rejects(chain, make_block(chain, [ghost], coinbase=Coinbase(1, HOST.principal, ghost.fee)),
            E.UnknownReference)
    oid = store_contract(chain)
    foreign = sign(OTHER, 0, FragmentReleased(oid))
    rejects(chain, make_block(chain, [foreign], coinbase=Coinbase(3, HOST.principal, foreign.fee)),
            E.BadEvent)


def test_offer_outside_own_tree_and_double_hosting(chain: ChainState) -> None:
    bad = sign(OTHER, 0, offer_body(path=OWNER.principal.root_path + "/x"))
    rejects(chain, make_block(chain, [bad], coinbase=Coinbase(1, HOST.principal, bad.fee)),
            E.BadEvent)
    store_contract(chain, index=0)
    offer = sign(OWNER, 2, offer_body(index=1))
    accept(chain, [offer])
    oid = event_id(P.chain_id, offer)
    receipt = HOST.sign(receipt_message(P.chain_id, oid, HOST.principal, b"\x22" * 32))
    twice = sign(OWNER, 3, FragmentStored(oid, HOST.public.ed25519, receipt))
    rejects(chain, make_block(chain, [twice], coinbase=Coinbase(4, HOST.principal, twice.fee)),
            E.BadEvent)
    bad_receipt = sign(OWNER, 3, FragmentStored(oid, OTHER.public.ed25519, receipt))
    rejects(chain, make_block(chain, [bad_receipt],
                              coinbase=Coinbase(4, HOST.principal, bad_receipt.fee)),
            E.BadSignature)


def test_invalid_block_is_remembered(chain: ChainState) -> None:
    ev = transfer(OWNER, 0, 10**18)
    block = make_block(chain, [ev], coinbase=Coinbase(1, HOST.principal, ev.fee))
    rejects(chain, block, E.InsufficientFunds)
    with pytest.raises(E.BadParent, match="invalid"):
        chain.accept_block(block)
    child = make_block(chain, [], parent=block.hash)
    with pytest.raises(E.BadParent, match="invalid"):
        chain.accept_block(child)


def test_contract_length_is_bounded(chain: ChainState) -> None:
    endless = sign(OWNER, 0, offer_body(periods=2**40, period_blocks=2**40))
    rejects(chain, make_block(chain, [endless], coinbase=Coinbase(1, HOST.principal, endless.fee)),
            E.BadEvent)
