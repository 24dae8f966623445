"""``apply_block``: one step of the left fold, with every stateful consensus rule.

Each event is checked completely before it changes anything, so an event that fails leaves
the view as it was; block templates rely on that to skip bad events. Rules that need no state
(sizes, field ranges, signatures) were checked before, in parallel, by the engine.
"""

from __future__ import annotations

from collections.abc import Callable

from chain.block import Block
from chain.errors import (
    BadCoinbase,
    BadEvent,
    BadNonce,
    BadSignature,
    DuplicatePayment,
    InsufficientFunds,
    PeriodNotStarted,
    UnknownReference,
    ValidationError,
)
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
from chain.keys import verify
from chain.params import NetworkParams
from chain.paths import check_path
from chain.principal import Principal
from chain.writecap import check_writecap
from globaltree.records import (
    BY_HOST,
    BY_OWNER,
    Contract,
    ContractState,
    contract_key,
    expiry_key,
    expiry_prefix,
    fragment_key,
    fragment_prefix,
    paid_key,
    revoked_key,
)
from globaltree.view import StateView

# what a handler returns once its checks pass: the path the event acts at (None: the payer's
# root, rendered only when a writecap must cover it), what the payer spends, and the mutation
Plan = tuple[str | None, int, Callable[[], None]]


class Fold:
    """Applies events at one height onto a view, accumulating fees and stored bytes."""

    def __init__(self, view: StateView, params: NetworkParams, height: int, time: int) -> None:
        self.view = view
        self.params = params
        self.chain_id = params.chain_id
        self.height = height
        self.time = time
        self.fees = 0
        self.stored_bytes = 0

    # --- lookups ----------------------------------------------------------------------------

    def contract(self, cid: bytes) -> Contract:
        raw = self.view.get(contract_key(cid))
        if raw is None:
            raise UnknownReference(f"no offer or contract {cid.hex()}")
        return Contract.decode(raw)

    def is_revoked(self, owner: Principal, p: Principal) -> bool:
        raw = self.view.get(revoked_key(owner, p))
        return raw is not None and self.time < int.from_bytes(raw, "big")

    def mint(self) -> int:
        return min(self.params.mint_per_kib * self.stored_bytes // 1024,
                   self.params.mint_cap_per_block)

    # --- events -----------------------------------------------------------------------------

    def apply(self, ev: SignedEvent, eid: bytes | None = None) -> None:
        """Check ``ev`` against the state, then apply it; on failure nothing has changed."""
        view = self.view
        signer = ev.signer
        sacct = view.peek_account(signer)
        expected = sacct.nonce if sacct is not None else 0
        if ev.nonce != expected:
            raise BadNonce(f"nonce {ev.nonce} from {signer}, expected {expected}")
        body = ev.body
        payer = ev.payer
        if isinstance(body, Transfer):
            path, spend, commit = self._transfer(ev, body, payer)
        elif isinstance(body, Announce):
            path, spend, commit = self._announce(ev, body, payer)
        elif isinstance(body, FragmentOffer):
            path, spend, commit = self._offer(ev, body, payer, eid)
        elif isinstance(body, FragmentStored):
            path, spend, commit = self._stored(body, payer)
        elif isinstance(body, StoragePayment):
            path, spend, commit = self._payment(ev, body, payer)
        elif isinstance(body, FragmentReleased):
            path, spend, commit = self._released(body, payer)
        elif isinstance(body, Revoke):
            path, spend, commit = self._revoke(body, payer)
        else:  # pragma: no cover - decoding admits no other body
            raise BadEvent(f"unknown event body {type(body).__name__}")
        if ev.account is not None:
            assert ev.writecap is not None
            owner = ev.account
            check_writecap(self.chain_id, ev.writecap, signer, path or owner.root_path, owner,
                           self.time, lambda p: self.is_revoked(owner, p))
        pacct = view.peek_account(payer)
        balance = pacct.balance if pacct is not None else 0
        if balance < spend + ev.fee:
            raise InsufficientFunds(
                f"{payer} has {balance}, needs {spend + ev.fee} ({spend} + fee {ev.fee})"
            )
        # every check passed: mutate
        sacct = view.account(signer)
        sacct.nonce += 1
        if sacct.ed25519 is None:
            sacct.ed25519 = ev.signer_key
        pacct = view.account(payer)
        pacct.balance -= spend + ev.fee
        self.fees += ev.fee
        commit()

    def _transfer(self, ev: SignedEvent, body: Transfer, payer: Principal
                  ) -> Plan:
        def commit() -> None:
            self.view.account(body.to).balance += body.amount

        return None, body.amount, commit

    def _announce(self, ev: SignedEvent, body: Announce, payer: Principal
                  ) -> Plan:
        def commit() -> None:
            acct = self.view.account(ev.signer)
            acct.ed25519 = ev.signer_key
            acct.x25519 = body.x25519
            acct.address = body.address
            acct.updated = self.height

        return None, 0, commit

    def _offer(self, ev: SignedEvent, body: FragmentOffer, payer: Principal, eid: bytes | None
               ) -> Plan:
        if check_path(body.path) != payer:
            raise BadEvent(f"offer for {body.path!r}, outside the payer's blocktree {payer}")
        if body.expiry_height < self.height:
            raise BadEvent(f"offer expired at height {body.expiry_height}")
        cid = eid if eid is not None else event_id(self.chain_id, ev)

        def commit() -> None:
            contract = Contract(cid, payer, ev.signer_key, body, self.height)
            self.view.put(contract_key(cid), contract.encode())
            self.view.put(BY_OWNER + payer.digest + cid, b"")

        return body.path, 0, commit

    def _owned_contract(self, offer_id: bytes, payer: Principal) -> Contract:
        contract = self.contract(offer_id)
        if contract.owner != payer:
            raise BadEvent(f"contract {offer_id.hex()[:16]} belongs to {contract.owner}, not {payer}")
        return contract

    def _stored(self, body: FragmentStored, payer: Principal
                ) -> Plan:
        contract = self._owned_contract(body.offer_id, payer)
        offer = contract.offer
        host = body.host
        if contract.state != ContractState.OFFERED:
            raise BadEvent(f"offer {body.offer_id.hex()[:16]} is {contract.state.name.lower()}")
        if self.height > offer.expiry_height:
            raise BadEvent(f"offer expired at height {offer.expiry_height}")
        if host == contract.owner:
            raise BadEvent("an owner cannot host its own fragment")
        msg = receipt_message(self.chain_id, body.offer_id, host, offer.root)
        if not verify(body.host_key, msg, body.receipt):
            raise BadSignature("host receipt does not verify")
        for key in self.view.keys_with_prefix(fragment_prefix(offer.path)):
            if key[-32:] == host.digest:
                raise BadEvent(f"host {host} already holds a fragment of {offer.path!r}")

        def commit() -> None:
            contract.state = ContractState.ACTIVE
            contract.host = host
            contract.start = self.height
            view = self.view
            view.put(contract_key(contract.id), contract.encode())
            view.put(fragment_key(offer.path, offer.index, host), contract.id)
            view.put(expiry_key(contract.end, contract.id), b"")
            view.put(BY_HOST + host.digest + contract.id, b"")
            self.stored_bytes += offer.size

        return offer.path, 0, commit

    def _payment(self, ev: SignedEvent, body: StoragePayment, payer: Principal
                 ) -> Plan:
        contract = self.contract(body.offer_id)
        offer = contract.offer
        if contract.host is None:
            raise BadEvent("payment for an offer no host has stored")
        if ev.signer != contract.host:
            raise BadEvent(f"only the host {contract.host} claims this contract's payments")
        if body.period >= offer.periods:
            raise BadEvent(f"period {body.period} beyond the contract's {offer.periods}")
        begins = contract.start + body.period * offer.period_blocks
        if self.height < begins:
            raise PeriodNotStarted(f"period {body.period} begins at height {begins}")
        if self.view.get(paid_key(contract.id, body.period)) is not None:
            raise DuplicatePayment(f"period {body.period} of {contract.id.hex()[:16]} already paid")
        if body.amount > offer.price:
            raise BadEvent(f"voucher for {body.amount} above the price {offer.price}")
        msg = voucher_message(self.chain_id, contract.id, body.period, body.amount)
        if not verify(contract.owner_key, msg, body.voucher):
            raise BadSignature("owner's voucher does not verify")
        owner = self.view.peek_account(contract.owner)
        if owner is None or owner.balance < body.amount:
            have = owner.balance if owner else 0
            raise InsufficientFunds(f"owner {contract.owner} cannot pay {body.amount} (has {have})")

        def commit() -> None:
            self.view.account(contract.owner).balance -= body.amount
            contract.paid_periods += 1
            contract.paid_total += body.amount
            self.view.put(contract_key(contract.id), contract.encode())
            self.view.put(paid_key(contract.id, body.period), body.amount.to_bytes(8, "big"))

        # a negative spend credits the payer, so a new host can pay the fee out of its first pay
        return offer.path, -body.amount, commit

    def _released(self, body: FragmentReleased, payer: Principal
                  ) -> Plan:
        contract = self._owned_contract(body.offer_id, payer)
        if contract.state not in (ContractState.OFFERED, ContractState.ACTIVE):
            raise BadEvent(f"contract {contract.id.hex()[:16]} already {contract.state.name.lower()}")

        def commit() -> None:
            self._end(contract, ContractState.RELEASED)

        return contract.offer.path, 0, commit

    def _revoke(self, body: Revoke, payer: Principal) -> Plan:
        if body.principal == payer:
            raise BadEvent("an owner cannot revoke itself")

        def commit() -> None:
            self.view.put(revoked_key(payer, body.principal), body.until.to_bytes(8, "big"))

        return None, 0, commit

    def _end(self, contract: Contract, state: ContractState) -> None:
        if contract.state == ContractState.ACTIVE and contract.host is not None:
            offer = contract.offer
            self.view.delete(fragment_key(offer.path, offer.index, contract.host))
            self.view.delete(expiry_key(contract.end, contract.id))
        contract.state = state
        self.view.put(contract_key(contract.id), contract.encode())

    def expire(self) -> None:
        """Contracts whose last period ends at this height end by themselves."""
        for key in self.view.keys_with_prefix(expiry_prefix(self.height)):
            self._end(self.contract(key[-32:]), ContractState.ENDED)

    def credit_coinbase(self, cb: Coinbase) -> None:
        self.view.account(cb.recipient).balance += cb.amount


def apply_block(view: StateView, params: NetworkParams, block: Block, height: int,
                event_ids: list[bytes] | None = None) -> Fold:
    """Apply ``block`` at ``height`` onto ``view``; raise a ValidationError if any rule fails."""
    fold = Fold(view, params, height, block.header.time)
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
    fold.expire()
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
