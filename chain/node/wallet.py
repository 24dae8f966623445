"""The node's wallet: one key, and the events it signs with the right next nonce."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chain.core.errors import ConfigError
from chain.core.events import Body, SignedEvent
from chain.core.keys import KeyPair
from chain.core.principal import Principal
from chain.core.writecap import Writecap

if TYPE_CHECKING:
    from chain.node.chainstate import ChainState
    from chain.node.mempool import Mempool

DEFAULT_FEE = 1_000
"""Base units a wallet pays per event unless told otherwise (0.00001 coins)."""


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

    @staticmethod
    def principal_in(datadir: Path) -> Principal:
        """The wallet's principal without opening its key (no passphrase needed)."""
        path = datadir / "wallet.key"
        if not path.exists():
            raise ConfigError(f"no wallet in {datadir} (run `blockcoin init` first)")
        return KeyPair.principal_of(path)

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
