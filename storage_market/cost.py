"""What a put spends, known before anything is spent.

The escrow is exact: each of the ``n`` offers escrows ``price × periods``. The fees are those of
the events the owner signs for it (one ``FragmentOffer`` and one ``FragmentStored`` per
fragment) at the fee rate it will use, measured on events of the real shape and size, so the
figure a user confirms is the figure the chain takes (a repair later costs its own events).
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.core.events import FragmentOffer, FragmentStored, SignedEvent
from chain.core.keys import KeyPair
from chain.core.params import NetworkParams
from storage_market.crypto import sealed_size
from storage_market.fragments import fragment_size


@dataclass(frozen=True, slots=True)
class PutCost:
    escrow: int
    fees: int

    @property
    def total(self) -> int:
        return self.escrow + self.fees


def put_cost(key: KeyPair, params: NetworkParams, path: str, size: int, k: int, n: int,
             price: int, collateral: int, periods: int, fee_rate: int | None = None) -> PutCost:
    rate = params.min_fee_rate if fee_rate is None else fee_rate
    frag = fragment_size(sealed_size(size), k)
    offer = FragmentOffer(path, bytes(32), n - 1, n, k, frag, bytes(32), 1024, price, collateral,
                          params.storage_period_blocks, periods, 1 << 30)
    stored = FragmentStored(bytes(32), bytes(32), key.principal, bytes(64))
    per_fragment = sum(SignedEvent.create_at_rate(params.chain_id, key, 1 << 20, rate, body).fee
                       for body in (offer, stored))
    return PutCost(escrow=n * price * periods, fees=n * per_fragment)
