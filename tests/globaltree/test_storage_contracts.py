"""Storage contracts as the chain enforces them: escrow, collateral, proofs from block hashes,
misses, refunds, mint for proven bytes only, and writecap allowances.

Each attack found against the voucher-paid market is replayed here and must now be refused (with
the error a user sees) or leave the attacker worse off.
"""

from __future__ import annotations

import dataclasses

import pytest

from chain.core import errors as E
from chain.core.block import Block
from chain.core.events import (
    Body,
    Coinbase,
    FragmentExtended,
    FragmentOffer,
    FragmentReleased,
    FragmentStored,
    ProvenLeaf,
    Revoke,
    SignedEvent,
    StorageProof,
    Transfer,
    event_id,
    extension_message,
    receipt_message,
)
from chain.core.keys import KeyPair
from chain.core.principal import Principal
from chain.core.writecap import Writecap
from chain.node.chainstate import ChainState
from globaltree.records import Contract, ContractState, HostRecord
from tests.framework.chainkit import DEV, LEAF, P, fragment_tree, make_block, prove, sign, state_dump

OWNER, HOST, OTHER = DEV[0], DEV[1], DEV[2]
PATH = OWNER.principal.root_path + "/doc"
SIZE = 5000  # five leaves of 1 KiB, the last one short
ROOT = fragment_tree(SIZE).root
PRICE, COLLATERAL, PERIODS, PB = 1_000, 10, 3, 3
FEE = 100
FAR = 2**40


class Market:
    """Signs events with the signers' next nonces and mines them, one block at a time."""

    def __init__(self, chain: ChainState) -> None:
        self.chain = chain
        self.used: dict[bytes, int] = {}

    def sign(self, key: KeyPair, body: Body, fee: int = FEE, account: Principal | None = None,
             writecap: Writecap | None = None) -> SignedEvent:
        acct = self.chain.tree.principal(key.principal)
        offset = self.used.get(key.principal.digest, 0)
        self.used[key.principal.digest] = offset + 1
        return sign(key, (acct.nonce if acct else 0) + offset, body, fee, account, writecap)

    def mine(self, *events: SignedEvent) -> Block:
        self.used.clear()
        block = make_block(self.chain, list(events))
        self.chain.accept_block(block)
        assert self.chain.tip.hash == block.hash
        return block

    def refuses(self, error: type[E.ValidationError], match: str, *events: SignedEvent) -> None:
        """The block carrying ``events`` is refused with ``error``; nothing changes."""
        self.used.clear()
        chain = self.chain
        cb = Coinbase(chain.tip.height + 1, DEV[9].principal, sum(e.fee for e in events))
        block = make_block(chain, list(events), coinbase=cb)
        before_tip, before_state = chain.tip.hash, state_dump(chain)
        with pytest.raises(error, match=match):
            chain.accept_block(block)
        assert chain.tip.hash == before_tip
        assert state_dump(chain) == before_state

    def until(self, height: int) -> None:
        while self.chain.tip.height < height:
            self.mine()

    # --- storage -------------------------------------------------------------------------

    def offer(self, key: KeyPair = OWNER, *, path: str = PATH, index: int = 0, price: int = PRICE,
              collateral: int = COLLATERAL, periods: int = PERIODS, size: int = SIZE,
              expiry: int | None = None, **signing: object) -> SignedEvent:
        body = FragmentOffer(path, b"\x11" * 32, index, 5, 3, size,
                             fragment_tree(size).root if size <= 1 << 16 else ROOT, LEAF, price,
                             collateral, PB, periods,
                             self.chain.tip.height + 10 if expiry is None else expiry)
        return self.sign(key, body, **signing)  # type: ignore[arg-type]

    def stored(self, offer: SignedEvent, host: KeyPair = HOST, payout: Principal | None = None,
               key: KeyPair = OWNER, root: bytes | None = None, **signing: object) -> SignedEvent:
        oid = self.id(offer)
        assert isinstance(offer.body, FragmentOffer)
        payout = payout or host.principal
        receipt = host.sign(receipt_message(P.chain_id, oid, host.principal,
                                            root or offer.body.root, payout))
        return self.sign(key, FragmentStored(oid, host.public.ed25519, payout, receipt),
                         **signing)  # type: ignore[arg-type]

    def contract(self, offer: SignedEvent) -> Contract:
        found = self.chain.tree.contract(self.id(offer))
        assert found is not None
        return found

    def proof(self, offer: SignedEvent, period: int, host: KeyPair = HOST,
              fee: int = FEE) -> SignedEvent:
        item = prove(self.contract(offer), period, self.chain.store.hash_at)
        return self.sign(host, StorageProof((item,)), fee)

    def place(self, host: KeyPair = HOST, **terms: int) -> SignedEvent:
        """An offer mined and stored by ``host``; returns the offer."""
        offer = self.offer(**terms)  # type: ignore[arg-type]
        self.mine(offer)
        self.mine(self.stored(offer, host))
        return offer

    def prove_window(self, offer: SignedEvent, period: int, host: KeyPair = HOST) -> Block:
        """Mine up to the first height of ``period``'s window and prove it there."""
        self.until(self.contract(offer).opening_height(period))
        return self.mine(self.proof(offer, period, host))

    @staticmethod
    def id(offer: SignedEvent) -> bytes:
        return event_id(P.chain_id, offer)

    def balance(self, key: KeyPair | Principal) -> int:
        return self.chain.tree.balance(key if isinstance(key, Principal) else key.principal)

    def record(self, host: KeyPair = HOST) -> HostRecord:
        return self.chain.tree.host_record(host.principal) or HostRecord()


@pytest.fixture
def market(chain: ChainState) -> Market:
    return Market(chain)


def mint_for(size: int) -> int:
    return P.mint_per_kib * size // 1024


# --- the contract's life -----------------------------------------------------------------


def test_escrow_collateral_pay_and_mint_follow_the_contract(market: Market) -> None:
    owner0, host0 = market.balance(OWNER), market.balance(HOST)
    offer = market.offer()
    block = market.mine(offer)
    assert block.events[0].amount == FEE  # type: ignore[union-attr]  # no mint for an offer
    assert market.balance(OWNER) == owner0 - PRICE * PERIODS - FEE
    assert market.contract(offer).escrow == PRICE * PERIODS

    block = market.mine(market.stored(offer))
    assert block.events[0].amount == FEE  # type: ignore[union-attr]  # nor for a stored claim
    c = market.contract(offer)
    assert c.state == ContractState.ACTIVE and c.collateral_locked == COLLATERAL * PERIODS
    assert market.balance(HOST) == host0 - COLLATERAL * PERIODS
    assert market.record() == HostRecord(bytes_stored=SIZE, contracts_active=1,
                                         collateral_locked=COLLATERAL * PERIODS)
    assert market.chain.tree.fragments(PATH)[0][0]["host"] == str(HOST.principal)

    for period in range(PERIODS):
        block = market.prove_window(offer, period)
        assert block.events[0].amount == FEE + mint_for(SIZE)  # type: ignore[union-attr]
        c = market.contract(offer)
        assert (c.escrow, c.proven, c.last_proven) == (PRICE * (PERIODS - 1 - period), period + 1,
                                                       period)
    assert market.balance(HOST) == host0 + (PRICE - FEE) * PERIODS
    market.until(market.contract(offer).end)
    c = market.contract(offer)
    assert c.state == ContractState.ENDED and c.escrow == 0 and c.collateral_locked == 0
    assert market.chain.tree.fragments(PATH) == {}
    assert market.record() == HostRecord(periods_proven=PERIODS, earned=PRICE * PERIODS)
    # the owner signed nothing after the stored event: a vanished owner still pays its host
    acct = market.chain.tree.principal(OWNER.principal)
    assert acct is not None and acct.nonce == 2


def test_a_host_without_coin_pays_its_fee_out_of_its_pay(market: Market) -> None:
    newcomer = KeyPair.generate()
    offer = market.place(newcomer, collateral=0)
    market.prove_window(offer, 0, newcomer)
    assert market.balance(newcomer) == PRICE - FEE


def test_pay_goes_to_the_payout_the_host_named(market: Market) -> None:
    vault = KeyPair.generate()
    offer = market.offer()
    market.mine(offer)
    market.mine(market.stored(offer, payout=vault.principal))
    host0 = market.balance(HOST)
    market.prove_window(offer, 0)
    assert market.balance(vault) == PRICE
    assert market.balance(HOST) == host0 + COLLATERAL - FEE


# --- attacks that minted, withheld or locked -----------------------------------------------


def test_free_mint_is_refused(market: Market) -> None:
    nobody = KeyPair.generate()
    path = nobody.principal.root_path + "/x"
    market.refuses(E.BadEvent, "positive price", market.offer(nobody, path=path, price=0))
    market.refuses(E.InsufficientFunds, r"needs 3100 \(escrow 3000 \+ fee 100\)",
                   market.offer(nobody, path=path, fee=100))
    market.refuses(E.BadEvent, "the limit is 4294967296",
                   market.offer(size=5 * 10**9))
    # a stored event over a root the host never saw, and a coinbase minting for a stored claim
    offer = market.offer()
    market.mine(offer)
    market.refuses(E.BadSignature, "receipt", market.stored(offer, root=b"\x55" * 32))
    stored = market.stored(offer)
    chain = market.chain
    greedy = Coinbase(chain.tip.height + 1, DEV[9].principal, FEE + mint_for(SIZE))
    before = state_dump(chain)
    with pytest.raises(E.BadCoinbase, match="fees \\+ mint are 100"):
        chain.accept_block(make_block(chain, [stored], coinbase=greedy))
    assert state_dump(chain) == before


def test_capacity_lock_is_bounded_and_an_expired_offer_refunds(market: Market) -> None:
    height = market.chain.tip.height
    market.refuses(E.BadEvent, "more than 1000 blocks ahead",
                   market.offer(expiry=height + 1 + P.max_offer_blocks + 1))
    owner0 = market.balance(OWNER)
    offer = market.offer(expiry=height + 2)
    market.mine(offer)
    assert market.balance(OWNER) == owner0 - PRICE * PERIODS - FEE
    market.until(height + 2)
    c = market.contract(offer)
    assert c.state == ContractState.EXPIRED and c.escrow == 0
    assert market.balance(OWNER) == owner0 - FEE
    market.refuses(E.BadEvent, "is expired", market.stored(offer))


def test_a_host_cannot_take_a_contract_without_its_collateral(market: Market) -> None:
    pauper = KeyPair.generate()
    offer = market.offer(collateral=10**6)
    market.mine(offer)
    market.refuses(E.InsufficientFunds, "cannot lock collateral 3000000",
                   market.stored(offer, pauper))


# --- proofs ------------------------------------------------------------------------------


def test_proofs_outside_their_window_twice_or_wrong_are_refused(market: Market) -> None:
    offer = market.place()
    c = market.contract(offer)
    tree = fragment_tree(SIZE)
    item = prove(c, 0, market.chain.store.hash_at)
    market.refuses(E.ProofOutsideWindow, f"opens after height {c.opening_height(1)}",
                   market.sign(HOST, StorageProof((dataclasses.replace(item, period=1),))))
    # a leaf changed, a leaf taken from elsewhere in the tree, one leaf too few
    first = item.leaves[0]
    flipped = ProvenLeaf(bytes([first.leaf[0] ^ 1]) + first.leaf[1:], first.path)
    other = next(i for i in range(tree.leaf_count) if tree.leaf(i) != first.leaf
                 and len(tree.leaf(i)) == len(first.leaf))
    moved = ProvenLeaf(tree.leaf(other), b"".join(tree.proof(other)))
    for leaves, match in (((flipped, *item.leaves[1:]), "does not prove its root"),
                          ((moved, *item.leaves[1:]), "does not prove its root"),
                          (item.leaves[1:], "carries 4 leaves, not 3")):
        bad = dataclasses.replace(item, leaves=leaves)
        market.refuses(E.BadProof, match, market.sign(HOST, StorageProof((bad,))))
    # a host that kept other bytes under the same size cannot prove the root
    garbage = fragment_tree(SIZE, b"garbage")
    opening = market.chain.store.hash_at(c.opening_height(0))
    assert opening is not None
    from storage_market.proving import proof_item

    lie = proof_item(garbage, lambda idx: [garbage.leaf(i) for i in idx], c.id, 0, opening,
                     P.proof_leaves)
    market.refuses(E.BadProof, "does not prove", market.sign(HOST, StorageProof((lie,))))
    # only the host proves, and only once a period
    market.refuses(E.BadEvent, "is not held by", market.sign(OTHER, StorageProof((item,))))
    market.mine(market.sign(HOST, StorageProof((item,))))
    market.refuses(E.DuplicateProof, "period 0 of contract .* is already proven",
                   market.proof(offer, 0))
    market.until(c.opening_height(1) + 1)
    market.refuses(E.ProofOutsideWindow, f"closed at height {c.opening_height(1)}",
                   market.sign(HOST, StorageProof((dataclasses.replace(item, period=0),))))


def test_a_proof_made_before_its_period_opened_fails(market: Market) -> None:
    """Leaves are chosen by the hash of the block that opens the period: a host cannot
    prepare next period's answer now and delete the data."""
    offer = market.place()
    c = market.contract(offer)
    market.until(c.opening_height(1) - 1)
    guessed_opening = market.chain.tip.hash  # the parent of the opening block, not it
    tree = fragment_tree(SIZE)
    from storage_market.proving import proof_item

    early = proof_item(tree, lambda idx: [tree.leaf(i) for i in idx], c.id, 1, guessed_opening,
                       P.proof_leaves)
    market.mine()
    market.refuses(E.BadProof, "does not prove", market.sign(HOST, StorageProof((early,))))


def test_one_event_proves_several_contracts(market: Market) -> None:
    a = market.place()
    b = market.place(index=1, path=PATH + "2")
    market.until(market.contract(b).opening_height(0))
    items = [prove(market.contract(o), 0, market.chain.store.hash_at) for o in (a, b)]
    block = market.mine(market.sign(HOST, StorageProof(tuple(items))))
    assert block.events[0].amount == FEE + mint_for(2 * SIZE)  # type: ignore[union-attr]
    assert market.record().periods_proven == 2


# --- misses, release, extension ------------------------------------------------------------


def test_a_missed_window_refunds_the_owner_burns_collateral_and_ends_after_max_misses(
        market: Market) -> None:
    periods = P.max_misses + 2
    offer = market.place(periods=periods)
    owner0, host0 = market.balance(OWNER), market.balance(HOST)
    c = market.contract(offer)
    market.until(c.opening_height(1))  # period 0's window closes unproven
    c = market.contract(offer)
    assert (c.missed, c.escrow, c.collateral_locked) == (1, PRICE * (periods - 1),
                                                         COLLATERAL * (periods - 1))
    assert market.balance(OWNER) == owner0 + PRICE
    assert market.balance(HOST) == host0  # the period's collateral is burned, not returned
    assert market.record().periods_missed == 1
    market.until(c.opening_height(P.max_misses))
    c = market.contract(offer)
    assert c.state == ContractState.FAILED and c.escrow == 0 and c.collateral_locked == 0
    assert market.balance(OWNER) == owner0 + PRICE * periods
    assert market.balance(HOST) == host0
    assert market.chain.tree.fragments(PATH) == {}
    assert market.record() == HostRecord(contracts_failed=1, periods_missed=P.max_misses)


def test_release_refunds_future_escrow_and_returns_collateral(market: Market) -> None:
    offer = market.place()
    market.prove_window(offer, 0)
    market.until(market.contract(offer).opening_height(1))
    late = market.proof(offer, 1)
    owner0, host0 = market.balance(OWNER), market.balance(HOST)
    market.mine(market.sign(OWNER, FragmentReleased(market.id(offer))))
    assert market.balance(OWNER) == owner0 + PRICE * (PERIODS - 1) - FEE
    assert market.balance(HOST) == host0 + COLLATERAL * (PERIODS - 1)
    assert market.contract(offer).state == ContractState.RELEASED
    assert market.record().collateral_locked == 0 and market.record().contracts_active == 0
    market.refuses(E.BadEvent, "already released",
                   market.sign(OWNER, FragmentReleased(market.id(offer))))
    market.refuses(E.BadEvent, "is released", late)


def test_an_extension_needs_the_hosts_consent_and_escrows_the_added_periods(
        market: Market) -> None:
    offer = market.place()
    oid = market.id(offer)
    forged = OTHER.sign(extension_message(P.chain_id, oid, PERIODS + 2))
    market.refuses(E.BadSignature, "consent",
                   market.sign(OWNER, FragmentExtended(oid, PERIODS + 2, forged)))
    owner0, host0 = market.balance(OWNER), market.balance(HOST)
    consent = HOST.sign(extension_message(P.chain_id, oid, PERIODS + 2))
    market.mine(market.sign(OWNER, FragmentExtended(oid, PERIODS + 2, consent)))
    c = market.contract(offer)
    assert (c.periods, c.escrow, c.collateral_locked) == (
        PERIODS + 2, PRICE * (PERIODS + 2), COLLATERAL * (PERIODS + 2))
    assert market.balance(OWNER) == owner0 - 2 * PRICE - FEE
    assert market.balance(HOST) == host0 - 2 * COLLATERAL
    market.refuses(E.BadEvent, "already runs 5 periods",
                   market.sign(OWNER, FragmentExtended(oid, PERIODS + 2, consent)))
    for period in range(PERIODS + 2):
        market.prove_window(offer, period)
    market.until(c.end)
    c = market.contract(offer)
    assert c.state == ContractState.ENDED and c.proven == PERIODS + 2


# --- delegates ---------------------------------------------------------------------------


def test_a_delegate_spends_at_most_its_allowance_and_nothing_once_revoked(
        market: Market) -> None:
    """The writecap drain: a delegate for /owner/photos offered at half the owner's balance and
    'stored' with a key of its own. Its allowance now bounds transfers, escrow and fees."""
    delegate, accomplice = KeyPair.generate(), KeyPair.generate()
    photos = OWNER.principal.root_path + "/photos"
    allowance = 5_000
    cap = Writecap.issue(P.chain_id, OWNER, photos, delegate.principal, FAR, allowance=allowance)
    acting = {"account": OWNER.principal, "writecap": cap}
    offer = market.offer(delegate, path=photos + "/a", collateral=0, **acting)  # 3000 + 100 fee
    market.mine(offer)
    market.refuses(E.AllowanceExceeded, "allows 5000 .* 3100 already spent, this event moves 3100",
                   market.offer(delegate, path=photos + "/b", collateral=0, **acting))
    market.mine(market.stored(offer, accomplice, key=delegate, **acting))  # 100 more: 3200
    # a revoked delegate can do nothing, and the owner takes the escrow back
    market.mine(market.sign(OWNER, Revoke(delegate.principal, FAR)))
    market.refuses(E.RevokedSigner, "revoked",
                   market.sign(delegate, FragmentReleased(market.id(offer)), **acting))
    owner0 = market.balance(OWNER)
    market.mine(market.sign(OWNER, FragmentReleased(market.id(offer))))
    assert market.balance(OWNER) == owner0 + PRICE * PERIODS - FEE
    # a writecap without an allowance is unbounded, as before
    free_cap = Writecap.issue(P.chain_id, OWNER, OWNER.principal.root_path, accomplice.principal,
                              FAR)
    market.mine(market.sign(accomplice, Transfer(OTHER.principal, 10 * allowance),
                            account=OWNER.principal, writecap=free_cap))
