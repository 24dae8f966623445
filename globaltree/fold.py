"""``apply_block``: one step of the left fold, with every stateful consensus rule.

Each event is checked completely before it changes anything, so an event that fails leaves
the view as it was; block templates rely on that to skip bad events. Rules that need no state
(sizes, field ranges, signatures) were checked before, in parallel, by the engine.

Storage contracts hold their money on chain. An offer moves ``price × periods`` from its payer
into the contract's escrow; the stored event locks ``collateral × periods`` from the host. Each
period has a proof window; a ``StorageProof`` inside it pays that period's price to the host's
payout principal and returns that period's collateral; a window that closes unproven refunds
the price to the owner and burns the collateral. Windows close through an index by closing
height, so the work at the end of a block grows with the windows closing in it, never with the
number of contracts. Coin is minted only for bytes proven in the block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from chain.core.block import Block
from chain.core.errors import (
    AllowanceExceeded,
    BadCoinbase,
    BadEvent,
    BadNonce,
    BadProof,
    BadSignature,
    DuplicateProof,
    InsufficientFunds,
    ProofOutsideWindow,
    StateConflict,
    UnknownReference,
    ValidationError,
)
from chain.core.events import (
    MAX_CONTRACT_BLOCKS,
    Announce,
    Coinbase,
    FragmentExtended,
    FragmentOffer,
    FragmentReleased,
    FragmentStored,
    ProofItem,
    Revoke,
    SignedEvent,
    StorageProof,
    Transfer,
    event_id,
    extension_message,
    receipt_message,
)
from chain.core.keys import verify
from chain.core.params import NetworkParams
from chain.core.paths import check_path
from chain.core.principal import Principal
from chain.core.schema import BY_HOST, BY_OWNER
from chain.core.storageproof import leaf_count, leaf_indexes, leaf_length, period_seed, root_from_path
from chain.core.writecap import check_writecap
from globaltree.records import (
    Contract,
    ContractState,
    HostRecord,
    PathFragments,
    closing_key,
    closing_prefix,
    contract_key,
    fragments_key,
    holder_key,
    host_key,
    revoked_key,
    spent_key,
)
from globaltree.view import KeyValueReader, MemoryDB, StateView

HashAt = Callable[[int], bytes | None]


class Plan(NamedTuple):
    """What a handler returns once its checks pass."""

    path: str | None  # where the event acts (None: the payer's root), for the writecap check
    spend: int  # what leaves the payer besides the fee; negative: the payer is credited
    commit: Callable[[], None]  # the mutation, run only after every check passed
    what: str = "amount"  # how the spend is named in an error


def _no_change() -> None:
    return None


class Fold:
    """Applies events at one height onto a view, accumulating fees and proven bytes.

    ``hash_at`` gives the best chain's block hash at a lower height: proofs are checked against
    leaves chosen by the hash of the block that opened their period.
    """

    def __init__(self, view: StateView, params: NetworkParams, height: int, time: int,
                 hash_at: HashAt) -> None:
        self.view = view
        self.params = params
        self.chain_id = params.chain_id
        self.height = height
        self.time = time
        self.hash_at = hash_at
        self.fees = 0
        self.proven_bytes = 0
        self._seeds: dict[int, bytes] = {}
        self._handlers: dict[type, Callable[[SignedEvent, Principal, bytes | None], Plan]] = {
            Transfer: self._transfer,
            Announce: self._announce,
            FragmentOffer: self._offer,
            FragmentStored: self._stored,
            StorageProof: self._proof,
            FragmentReleased: self._released,
            FragmentExtended: self._extended,
            Revoke: self._revoke,
        }

    # --- lookups ----------------------------------------------------------------------------

    def contract(self, cid: bytes) -> Contract:
        contract = self.view.peek(contract_key(cid), Contract.decode)
        if contract is None:
            raise UnknownReference(f"no offer or contract {cid.hex()}")
        return contract

    def host_record(self, p: Principal) -> HostRecord:
        return self.view.writable(host_key(p), HostRecord.decode, HostRecord)

    def is_revoked(self, owner: Principal, p: Principal) -> bool:
        raw = self.view.get(revoked_key(owner, p))
        return raw is not None and self.time < int.from_bytes(raw, "big")

    def balance(self, p: Principal) -> int:
        acct = self.view.peek_account(p)
        return acct.balance if acct is not None else 0

    def mint(self) -> int:
        return min(self.params.mint_per_kib * self.proven_bytes // 1024,
                   self.params.mint_cap_per_block)

    def _seed_block(self, height: int) -> bytes:
        block_hash = self._seeds.get(height)
        if block_hash is None:
            block_hash = self.hash_at(height)
            if block_hash is None:
                raise UnknownReference(f"no best-chain block at height {height} to seed a proof")
            self._seeds[height] = block_hash
        return block_hash

    # --- events -----------------------------------------------------------------------------

    def apply(self, ev: SignedEvent, eid: bytes | None = None) -> None:
        """Check ``ev`` against the state, then apply it; on failure nothing has changed."""
        view = self.view
        signer = ev.signer
        sacct = view.peek_account(signer)
        expected = sacct.nonce if sacct is not None else 0
        if ev.nonce != expected:
            raise BadNonce(f"nonce {ev.nonce} from {signer}, expected {expected}")
        payer = ev.payer
        plan = self._handlers[type(ev.body)](ev, payer, eid)
        outflow = max(plan.spend, 0) + ev.fee
        allowances: list[tuple[bytes, int]] = []
        if ev.account is not None:
            assert ev.writecap is not None
            owner = ev.account
            check_writecap(self.chain_id, ev.writecap, signer, plan.path or owner.root_path, owner,
                           self.time, lambda p: self.is_revoked(owner, p))
            allowances = self._check_allowances(ev, outflow)
        pacct = sacct if ev.account is None else view.peek_account(payer)
        balance = pacct.balance if pacct is not None else 0
        if balance < plan.spend + ev.fee:
            raise InsufficientFunds(
                f"{payer} has {balance}, needs {plan.spend + ev.fee}"
                f" ({plan.what} {plan.spend} + fee {ev.fee})"
            )
        # every check passed: mutate
        sacct = view.account(signer)
        sacct.nonce += 1
        if sacct.ed25519 is None:
            sacct.ed25519 = ev.signer_key
        (sacct if ev.account is None else view.account(payer)).balance -= plan.spend + ev.fee
        self.fees += ev.fee
        for key, spent in allowances:
            view.put(key, spent.to_bytes(16, "big"))
        plan.commit()

    def _check_allowances(self, ev: SignedEvent, outflow: int) -> list[tuple[bytes, int]]:
        """Every link of the writecap chain that carries an allowance must still cover what
        the event moves out of the tree's account; returns the links' new totals."""
        assert ev.writecap is not None
        out = []
        for i, link in enumerate(ev.writecap.links()):
            if link.allowance is None:
                continue
            key = spent_key(link.link_id(self.chain_id))
            raw = self.view.get(key)
            spent = int.from_bytes(raw, "big") if raw is not None else 0
            if spent + outflow > link.allowance:
                raise AllowanceExceeded(
                    f"writecap {i} allows {link.allowance} out of {ev.account}; {spent} already"
                    f" spent, this event moves {outflow}"
                )
            out.append((key, spent + outflow))
        return out

    def _transfer(self, ev: SignedEvent, payer: Principal, eid: bytes | None) -> Plan:
        body = ev.body
        assert isinstance(body, Transfer)

        def commit() -> None:
            self.view.account(body.to).balance += body.amount

        return Plan(None, body.amount, commit)

    def _announce(self, ev: SignedEvent, payer: Principal, eid: bytes | None) -> Plan:
        body = ev.body
        assert isinstance(body, Announce)

        def commit() -> None:
            acct = self.view.account(ev.signer)
            acct.ed25519 = ev.signer_key
            acct.x25519 = body.x25519
            acct.address = body.address
            acct.updated = self.height

        return Plan(None, 0, commit)

    def _offer(self, ev: SignedEvent, payer: Principal, eid: bytes | None) -> Plan:
        body = ev.body
        assert isinstance(body, FragmentOffer)
        params = self.params
        if check_path(body.path) != payer:
            raise BadEvent(f"offer for {body.path!r}, outside the payer's blocktree {payer}")
        if body.expiry_height < self.height:
            raise StateConflict(f"offer expired at height {body.expiry_height}")
        if body.expiry_height > self.height + params.max_offer_blocks:
            raise StateConflict(f"offer expiry {body.expiry_height} is more than"
                           f" {params.max_offer_blocks} blocks ahead of height {self.height}")
        if body.size > params.max_fragment_bytes:
            raise BadEvent(f"fragment of {body.size} bytes, the limit is {params.max_fragment_bytes}")
        cid = eid if eid is not None else event_id(self.chain_id, ev)
        escrow = body.price * body.periods

        def commit() -> None:
            contract = Contract(cid, payer, ev.signer_key, body, self.height, periods=body.periods,
                                escrow=escrow, closes=body.expiry_height)
            view = self.view
            view.store(contract_key(cid), contract)
            view.put(BY_OWNER + payer.digest + cid, b"")
            view.put(closing_key(contract.closes, cid), b"")

        return Plan(body.path, escrow, commit, "escrow")

    def _owned_contract(self, offer_id: bytes, payer: Principal) -> Contract:
        contract = self.contract(offer_id)
        if contract.owner != payer:
            raise BadEvent(f"contract {offer_id.hex()[:16]} belongs to {contract.owner}, not {payer}")
        return contract

    def _stored(self, ev: SignedEvent, payer: Principal, eid: bytes | None) -> Plan:
        body = ev.body
        assert isinstance(body, FragmentStored)
        contract = self._owned_contract(body.offer_id, payer)
        offer = contract.offer
        host = body.host
        if contract.state != ContractState.OFFERED:
            raise StateConflict(f"offer {body.offer_id.hex()[:16]} is {contract.state.name.lower()}")
        if self.height > offer.expiry_height:
            raise StateConflict(f"offer expired at height {offer.expiry_height}")
        if host == contract.owner:
            raise BadEvent("an owner cannot host its own fragment")
        msg = receipt_message(self.chain_id, body.offer_id, host, offer.root, body.payout)
        if not verify(body.host_key, msg, body.receipt):
            raise BadSignature("host receipt does not verify")
        if self.view.get(holder_key(offer.path, host)) is not None:
            raise StateConflict(f"host {host} already holds a fragment of {offer.path!r}")
        collateral = offer.collateral * contract.periods
        if self.balance(host) < collateral:
            raise InsufficientFunds(
                f"host {host} has {self.balance(host)}, cannot lock collateral {collateral}")

        def commit() -> None:
            view = self.view
            view.account(host).balance -= collateral
            view.delete(closing_key(contract.closes, contract.id))
            contract.state = ContractState.ACTIVE
            contract.set_host(body.host_key)
            contract.payout = body.payout
            contract.start = self.height
            contract.collateral_locked = collateral
            contract.closes = self.height + offer.period_blocks
            view.store(contract_key(contract.id), contract)
            view.put(closing_key(contract.closes, contract.id), b"")
            view.writable(fragments_key(offer.path), PathFragments.decode, PathFragments).add(
                offer.index, host, contract.id)
            view.put(holder_key(offer.path, host), contract.id)
            view.put(BY_HOST + host.digest + contract.id, b"")
            record = self.host_record(host)
            record.bytes_stored += offer.size
            record.contracts_active += 1
            record.collateral_locked += collateral

        return Plan(offer.path, 0, commit)

    def _proof(self, ev: SignedEvent, payer: Principal, eid: bytes | None) -> Plan:
        body = ev.body
        assert isinstance(body, StorageProof)
        host = ev.signer
        contracts = [self._check_item(item, host) for item in body.items]
        credit = 0
        for contract in contracts:
            if contract.payout == payer:
                credit += contract.price
            if host == payer:
                credit += contract.collateral

        def commit() -> None:
            view = self.view
            record = self.host_record(host)
            for item, contract in zip(body.items, contracts, strict=True):
                price, collateral = contract.price, contract.collateral
                contract.escrow -= price
                contract.collateral_locked -= collateral
                contract.last_proven = item.period
                contract.proven += 1
                contract.paid_total += price
                view.store(contract_key(contract.id), contract)
                assert contract.payout is not None
                if contract.payout != payer:
                    view.account(contract.payout).balance += price
                if host != payer:
                    view.account(host).balance += collateral
                record.periods_proven += 1
                record.earned += price
                record.collateral_locked -= collateral
                self.proven_bytes += contract.size

        # the payer is credited what comes back to it, so a host can pay the fee out of its pay
        return Plan(None, -credit, commit)

    def _check_item(self, item: ProofItem, host: Principal) -> Contract:
        contract = self.contract(item.contract)
        short = item.contract.hex()[:16]
        if contract.host != host:
            raise BadEvent(f"contract {short} is not held by {host}")
        if contract.state != ContractState.ACTIVE:
            raise StateConflict(f"contract {short} is {contract.state.name.lower()}")
        period = item.period
        if period >= contract.periods:
            raise BadEvent(f"period {period} beyond contract {short}'s {contract.periods}")
        window = contract.window_of(self.height)
        if period > window:
            raise ProofOutsideWindow(f"period {period} of contract {short} opens after height"
                                     f" {contract.opening_height(period)}")
        if period < window:
            raise ProofOutsideWindow(f"period {period} of contract {short} closed at height"
                                     f" {contract.opening_height(period + 1)}")
        if contract.last_proven == period:
            raise DuplicateProof(f"period {period} of contract {short} is already proven")
        picks = self.params.proof_leaves
        if len(item.leaves) != picks:
            raise BadProof(f"a proof carries {picks} leaves, not {len(item.leaves)}")
        size, leaf_size, root = contract.size, contract.leaf_size, contract.root
        count = leaf_count(size, leaf_size)
        seed = period_seed(self._seed_block(contract.opening_height(period)), contract.id)
        for j, (index, proven) in enumerate(
                zip(leaf_indexes(seed, count, picks), item.leaves, strict=True)):
            if len(proven.leaf) != leaf_length(index, size, leaf_size):
                raise BadProof(f"leaf {j} of contract {short} (index {index}) has"
                               f" {len(proven.leaf)} bytes")
            if root_from_path(proven.leaf, index, count, proven.path) != root:
                raise BadProof(f"leaf {j} of contract {short} (index {index}) does not prove"
                               " its root")
        return contract

    def _released(self, ev: SignedEvent, payer: Principal, eid: bytes | None) -> Plan:
        body = ev.body
        assert isinstance(body, FragmentReleased)
        contract = self._owned_contract(body.offer_id, payer)
        if contract.state not in (ContractState.OFFERED, ContractState.ACTIVE):
            raise StateConflict(f"contract {contract.id.hex()[:16]} already {contract.state.name.lower()}")

        def commit() -> None:
            # future escrow back to the owner, the host's collateral back to it: not its fault
            if contract.host is not None:
                self.view.account(contract.host).balance += contract.collateral_locked
                self.host_record(contract.host).collateral_locked -= contract.collateral_locked
                contract.collateral_locked = 0
            self._close(contract, ContractState.RELEASED)

        return Plan(contract.offer.path, 0, commit)

    def _extended(self, ev: SignedEvent, payer: Principal, eid: bytes | None) -> Plan:
        body = ev.body
        assert isinstance(body, FragmentExtended)
        contract = self._owned_contract(body.offer_id, payer)
        short = contract.id.hex()[:16]
        if contract.state != ContractState.ACTIVE or contract.host_key is None:
            raise StateConflict(f"contract {short} is {contract.state.name.lower()}, not active")
        offer = contract.offer
        if body.periods <= contract.periods:
            raise StateConflict(f"contract {short} already runs {contract.periods} periods")
        if body.periods * offer.period_blocks > MAX_CONTRACT_BLOCKS:
            raise BadEvent(f"a contract lasts at most {MAX_CONTRACT_BLOCKS} blocks")
        msg = extension_message(self.chain_id, contract.id, body.periods)
        if not verify(contract.host_key, msg, body.host_signature):
            raise BadSignature("the host's consent to the extension does not verify")
        added = body.periods - contract.periods
        host = contract.host
        assert host is not None
        collateral = offer.collateral * added
        if self.balance(host) < collateral:
            raise InsufficientFunds(
                f"host {host} has {self.balance(host)}, cannot lock collateral {collateral}")

        def commit() -> None:
            self.view.account(host).balance -= collateral
            self.host_record(host).collateral_locked += collateral
            contract.periods = body.periods
            contract.escrow += offer.price * added
            contract.collateral_locked += collateral
            self.view.store(contract_key(contract.id), contract)

        return Plan(offer.path, offer.price * added, commit, "escrow")

    def _revoke(self, ev: SignedEvent, payer: Principal, eid: bytes | None) -> Plan:
        body = ev.body
        assert isinstance(body, Revoke)
        if body.principal == payer:
            raise BadEvent("an owner cannot revoke itself")

        def commit() -> None:
            self.view.put(revoked_key(payer, body.principal), body.until.to_bytes(8, "big"))

        return Plan(None, 0, commit)

    # --- contracts ending -------------------------------------------------------------------

    def _close(self, contract: Contract, state: ContractState) -> None:
        """End a contract: its escrow back to the owner, off the closing index, and (if it was
        active) its holder off ``/global/fragments``. Collateral is settled by the caller."""
        view = self.view
        view.account(contract.owner).balance += contract.escrow
        contract.escrow = 0
        if contract.closes:
            view.delete(closing_key(contract.closes, contract.id))
            contract.closes = 0
        host = contract.host
        if contract.state == ContractState.ACTIVE and host is not None:
            offer = contract.offer
            held = view.writable(fragments_key(offer.path), PathFragments.decode, PathFragments)
            held.remove(offer.index, host)
            if not held.entries:
                view.delete(fragments_key(offer.path))
            view.delete(holder_key(offer.path, host))
            record = self.host_record(host)
            record.bytes_stored -= offer.size
            record.contracts_active -= 1
            if state == ContractState.FAILED:
                record.contracts_failed += 1
        contract.state = state
        view.store(contract_key(contract.id), contract)

    def settle(self) -> None:
        """End of the block: offers that expire unstored refund their escrow; proof windows
        that close unproven refund the owner, burn the period's collateral and count a miss;
        contracts past their last period or their allowed misses end."""
        view = self.view
        for key in view.keys_with_prefix(closing_prefix(self.height)):
            contract = self.contract(key[-32:])
            if contract.state == ContractState.OFFERED:
                self._close(contract, ContractState.EXPIRED)
                continue
            period = contract.window_of(self.height)
            if contract.last_proven != period:
                self._miss(contract)
                if contract.missed >= self.params.max_misses:
                    self._burn(contract, contract.collateral_locked)
                    self._close(contract, ContractState.FAILED)
                    continue
            if period + 1 < contract.periods:
                view.delete(key)
                contract.closes = self.height + contract.period_blocks
                view.put(closing_key(contract.closes, contract.id), b"")
                view.store(contract_key(contract.id), contract)
            else:
                self._close(contract, ContractState.ENDED)

    def _miss(self, contract: Contract) -> None:
        self.view.account(contract.owner).balance += contract.price
        contract.escrow -= contract.price
        contract.missed += 1
        assert contract.host is not None
        self.host_record(contract.host).periods_missed += 1
        self._burn(contract, contract.collateral)
        self.view.store(contract_key(contract.id), contract)

    def _burn(self, contract: Contract, amount: int) -> None:
        """Destroy ``amount`` of the host's locked collateral (it leaves the supply)."""
        assert contract.host is not None
        contract.collateral_locked -= amount
        self.host_record(contract.host).collateral_locked -= amount

    def credit_coinbase(self, cb: Coinbase) -> None:
        self.view.account(cb.recipient).balance += cb.amount


def apply_block(view: StateView, params: NetworkParams, block: Block, height: int,
                hash_at: HashAt, event_ids: list[bytes] | None = None) -> Fold:
    """Apply ``block`` at ``height`` onto ``view``; raise a ValidationError if any rule fails.
    ``hash_at`` gives the best chain's block hashes below ``height``."""
    fold = Fold(view, params, height, block.header.time, hash_at)
    events = block.events
    if height == 0:
        for cb in events:
            assert isinstance(cb, Coinbase)
            fold.credit_coinbase(cb)
        return fold
    coinbase = events[0]
    if not isinstance(coinbase, Coinbase):
        raise BadCoinbase("the first event of a block is its coinbase")
    for i in range(1, len(events)):
        ev = events[i]
        if not isinstance(ev, SignedEvent):
            raise BadCoinbase(f"event {i} is a second coinbase")
        try:
            fold.apply(ev, event_ids[i] if event_ids is not None else None)
        except ValidationError as exc:
            raise type(exc)(f"event {i} ({ev.kind.name.lower()}): {exc}") from exc
    fold.settle()
    expected = fold.fees + fold.mint()
    if coinbase.height != height:
        raise BadCoinbase(f"coinbase height {coinbase.height}, block height {height}")
    if coinbase.amount != expected:
        raise BadCoinbase(
            f"coinbase claims {coinbase.amount}, fees + mint are {expected}"
            f" ({fold.fees} + {fold.mint()})"
        )
    fold.credit_coinbase(coinbase)
    return fold


def state_root_after(db: KeyValueReader, params: NetworkParams, block: Block, height: int,
                     hash_at: HashAt) -> bytes:
    """The state root after ``block`` at ``height`` on the state in ``db``, written nowhere:
    what a block builder puts in the header (raises a ValidationError if the block's events
    do not apply)."""
    view = StateView(db)
    apply_block(view, params, block, height, hash_at)
    return view.root()


def fold_into(db: MemoryDB, params: NetworkParams, block: Block, height: int,
              hash_at: HashAt) -> bytes:
    """Fold ``block`` into an in-memory state and return the state root after it."""
    view = StateView(db)
    apply_block(view, params, block, height, hash_at)
    return view.commit(db).root


def genesis_state(params: NetworkParams) -> MemoryDB:
    """The global tree after genesis, in memory: the start of a chain built without a node."""
    db = MemoryDB()
    fold_into(db, params, params.genesis, 0, lambda h: None)
    return db
