"""A node's local core: its data directory, chain state, mempool and wallet, in one process.

The CLI uses it directly when no node is running; the networked node wraps it.
"""

from __future__ import annotations

from pathlib import Path

from chain.core.block import Block
from chain.core.errors import ConfigError
from chain.core.events import SignedEvent
from chain.core.filemodes import restrict_datadir
from chain.core.keys import KeyPair
from chain.core.params import NetworkParams, default_datadir, network
from chain.core.principal import Principal
from chain.node.chainstate import AcceptResult, ChainState
from chain.node.config import configured_network, write_new_config
from chain.node.mempool import Mempool
from chain.node.mining import Solved, solve_block
from chain.node.template import build_template
from chain.node.wallet import Wallet


def init_datadir(datadir: Path, params: NetworkParams, passphrase: str | None = None,
                 key: KeyPair | None = None) -> tuple[Wallet, bool]:
    """Create the data directory, config and wallet key: ``key`` if given (``init --dev-key``
    passes a development key funded at genesis), else a fresh random one, on every network,
    so that two data directories never share a wallet by accident. With a ``passphrase`` the
    key is kept encrypted (an existing plain key is encrypted in place). Returns the wallet and
    whether anything was created."""
    datadir.mkdir(parents=True, exist_ok=True)
    restrict_datadir(datadir)
    created = False
    existing = configured_network(datadir)
    if existing is None:
        write_new_config(datadir, params.name)
        created = True
    elif existing != params.name:
        raise ConfigError(f"{datadir} is a {existing!r} data directory, not {params.name!r}")
    key_path = datadir / "wallet.key"
    if not key_path.exists():
        (key or KeyPair.generate()).save(key_path, passphrase)
        created = True
    elif key is not None and Wallet.principal_in(datadir) != key.principal:
        raise ConfigError(f"{datadir} already has a wallet key ({Wallet.principal_in(datadir)})")
    elif passphrase and not KeyPair.is_sealed(key_path):  # encrypt the existing key
        KeyPair.load(key_path).save(key_path, passphrase)
    return Wallet.load(datadir, passphrase), created


class LocalNode:
    def __init__(self, datadir: Path, params: NetworkParams, verify_threads: int | None = None):
        configured = configured_network(datadir)
        if configured is None:
            raise ConfigError(f"no data directory at {datadir} (run `blockcoin init` first)")
        if configured != params.name:
            raise ConfigError(f"{datadir} is a {configured!r} data directory, not {params.name!r}")
        self.datadir = datadir
        self.params = params
        restrict_datadir(datadir)
        self.chain = ChainState(datadir, params, verify_threads)
        self.mempool = Mempool(self.chain)
        self._wallet: Wallet | None = None
        self.last_mined: Solved | None = None

    @classmethod
    def open(cls, datadir: Path | None, net: str) -> LocalNode:
        params = network(net)
        return cls(datadir or default_datadir(net), params)

    @property
    def wallet(self) -> Wallet:
        if self._wallet is None:
            self._wallet = Wallet.load(self.datadir)
        return self._wallet

    def close(self) -> None:
        self.chain.close()

    def __enter__(self) -> LocalNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, event: SignedEvent) -> bytes:
        return self.mempool.add(event)

    def mine_block(self, recipient: Principal | None = None, now: int | None = None,
                   threads: int | None = None) -> Block:
        """Mine one block on the tip with the best-paying pending events, and connect it;
        ``last_mined`` then tells the hashes tried and the time taken."""
        template = build_template(self.chain, self.mempool, recipient or self.wallet.principal, now)
        mined = solve_block(template, threads=threads)
        assert mined is not None  # nothing can stop it
        block, self.last_mined = mined
        self.chain.accept_block(block, now)
        return block

    def accept(self, block: Block) -> AcceptResult:
        return self.chain.accept_block(block)
