"""The node's wallet: one key, and the events it signs with the right next nonce."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from chain.core.errors import BlockcoinError, ConfigError
from chain.core.events import Body, SignedEvent
from chain.core.keys import KeyPair
from chain.core.params import COIN
from chain.core.principal import Principal
from chain.core.writecap import Writecap

if TYPE_CHECKING:
    from chain.node.chainstate import ChainState
    from chain.node.mempool import Mempool

DEFAULT_FEE = 1_000


class AmountError(BlockcoinError):
    code = "amount"


def parse_amount(text: str) -> int:
    """Coins as a decimal with at most 8 places (``1.5``), or base units with a ``sat`` suffix."""
    text = text.strip()
    try:
        if text.endswith("sat"):
            value = int(text[:-3])
        else:
            dec = Decimal(text)
            if not dec.is_finite():
                raise InvalidOperation
            scaled = dec * COIN
            if scaled != scaled.to_integral_value():
                raise AmountError(f"at most 8 decimal places: {text}")
            value = int(scaled)
    except (InvalidOperation, ValueError):
        raise AmountError(
            f"not an amount: {text!r} (coins like 1.5, or base units like 150sat)") from None
    if value <= 0:
        raise AmountError(f"an amount is positive: {text}")
    return value


def format_amount(base_units: int) -> str:
    sign = "-" if base_units < 0 else ""
    whole, frac = divmod(abs(base_units), COIN)
    return f"{sign}{whole}.{frac:08d}"


class Wallet:
    def __init__(self, key: KeyPair, account: Principal | None = None,
                 writecap: Writecap | None = None) -> None:
        self.key = key
        self.account = account
        self.writecap = writecap

    @classmethod
    def load(cls, datadir: Path, passphrase: str | None = None) -> Wallet:
        path = datadir / "wallet.key"
        if not path.exists():
            raise ConfigError(f"no wallet in {datadir} (run `blockcoin init` first)")
        return cls(KeyPair.load(path, passphrase))

    @property
    def principal(self) -> Principal:
        return self.key.principal

    def next_nonce(self, chain: ChainState, mempool: Mempool | None) -> int:
        acct = chain.tree.principal(self.principal)
        base = acct.nonce if acct else 0
        if mempool is not None:
            base += len(mempool.by_signer.get(self.principal.digest, {}))
        return base

    def sign(self, chain: ChainState, mempool: Mempool | None, body: Body,
             fee: int = DEFAULT_FEE, nonce: int | None = None) -> SignedEvent:
        if nonce is None:
            nonce = self.next_nonce(chain, mempool)
        return SignedEvent.create(chain.params.chain_id, self.key, nonce, fee, body,
                                  self.account, self.writecap)
