"""The ``blockcoin`` command line.

Every command takes ``--network``, ``--datadir`` and ``--json``. Errors a user can cause
(a mistyped principal, an amount over the balance, a locked data directory) print one line
to stderr and exit 1 with nothing changed.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import Progress

from chain.block import Block
from chain.encoding import Reader, encode_varint
from chain.errors import BlockcoinError
from chain.events import Coinbase, SignedEvent, Transfer
from chain.header import hash_from_hex, hash_hex
from chain.node import LocalNode, default_datadir, init_datadir
from chain.params import network
from chain.principal import Principal
from chain.wallet import DEFAULT_FEE, format_amount, parse_amount
from storage_market.cli import demo_command, host_app, store_app

app = typer.Typer(help="Blockcoin: a proof-of-work chain whose coin pays for storage.",
                  no_args_is_help=True, add_completion=False)
wallet_app = typer.Typer(help="The node's wallet: address, balance, send.", no_args_is_help=True)
query_app = typer.Typer(help="Query the chain and the global tree.", no_args_is_help=True)
app.add_typer(wallet_app, name="wallet")
app.add_typer(query_app, name="query")
app.add_typer(store_app, name="store")
app.add_typer(host_app, name="host")
app.command("demo")(demo_command)

NetworkOpt = Annotated[str, typer.Option("--network", "-n", help="main, test or regtest.")]
DatadirOpt = Annotated[
    Path | None, typer.Option("--datadir", "-d", help="Data directory (default ~/.blockcoin/NETWORK).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn the project's errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BlockcoinError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(data) if as_json else text)


def _datadir(net: str, datadir: Path | None) -> Path:
    network(net)
    return datadir or default_datadir(net)


def _open(net: str, datadir: Path | None) -> LocalNode:
    return LocalNode.open(_datadir(net, datadir), net)


@app.command()
@friendly
def init(net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False) -> None:
    """Create the data directory, its config and a wallet key (regtest: development key 0)."""
    path = _datadir(net, datadir)
    wallet, created = init_datadir(path, network(net))
    with LocalNode(path, network(net)) as node:
        tip = node.chain.tip
        emit(as_json, {"datadir": str(path), "network": net, "principal": str(wallet.principal),
                       "created": created, "height": tip.height},
             f"{'initialised' if created else 'already initialised'} {path} ({net});"
             f" wallet {wallet.principal}")


@app.command()
@friendly
def mine(
    blocks: Annotated[int, typer.Option("--blocks", "-b", min=1, help="How many blocks to mine.")] = 1,
    to: Annotated[str | None, typer.Option("--to", help="Principal paid (default: wallet).")] = None,
    net: NetworkOpt = "regtest", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Mine blocks on the local chain, including pending events (like generatetoaddress)."""
    recipient = Principal.parse(to) if to else None
    with _open(net, datadir) as node:
        hashes = []
        for _ in range(blocks):
            block = node.mine_block(recipient)
            hashes.append(hash_hex(block.hash))
        tip = node.chain.tip
        emit(as_json, {"mined": hashes, "height": tip.height, "hash": hash_hex(tip.hash)},
             f"mined {blocks} block(s); tip {tip.height} {hash_hex(tip.hash)}")


@wallet_app.command("address")
@friendly
def wallet_address(net: NetworkOpt = "main", datadir: DatadirOpt = None,
                   as_json: JsonOpt = False) -> None:
    """The wallet's principal (where to send it coin)."""
    from chain.wallet import Wallet

    wallet = Wallet.load(_datadir(net, datadir))
    emit(as_json, {"principal": str(wallet.principal)}, str(wallet.principal))


@wallet_app.command("balance")
@friendly
def wallet_balance(
    principal: Annotated[str | None, typer.Argument(help="Principal (default: wallet).")] = None,
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Balance in base units (10^8 per coin) of the wallet or of PRINCIPAL."""
    with _open(net, datadir) as node:
        p = Principal.parse(principal) if principal else node.wallet.principal
        balance = node.chain.tree.balance(p)
        emit(as_json, {"principal": str(p), "balance": balance},
             f"{format_amount(balance)} ({balance} base units)")


@wallet_app.command("send")
@friendly
def wallet_send(
    to: Annotated[str, typer.Argument(help="Recipient principal (blk...).")],
    amount: Annotated[str, typer.Argument(help="Coins (1.5) or base units (150sat).")],
    fee: Annotated[int, typer.Option(help="Fee in base units.", min=0)] = DEFAULT_FEE,
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Sign a transfer and queue it for the next block."""
    recipient = Principal.parse(to)
    value = parse_amount(amount)
    with _open(net, datadir) as node:
        event = node.wallet.sign(node.chain, node.mempool, Transfer(recipient, value), fee)
        eid = node.submit(event)
        emit(as_json, {"event": eid.hex(), "to": str(recipient), "amount": value, "fee": fee,
                       "nonce": event.nonce},
             f"sent {format_amount(value)} to {recipient}; event {eid.hex()} pending")


@query_app.command("tip")
@friendly
def query_tip(net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False) -> None:
    """Height and hash of the best chain's tip."""
    with _open(net, datadir) as node:
        tip = node.chain.tip
        emit(as_json, {"height": tip.height, "hash": hash_hex(tip.hash)},
             f"{tip.height} {hash_hex(tip.hash)}")


def block_json(block: Block, height: int | None, chain_id: bytes) -> dict[str, Any]:
    from chain.events import event_id

    h = block.header
    events = []
    for ev in block.events:
        item: dict[str, Any] = {"id": event_id(chain_id, ev).hex(), "kind": ev.kind.name.lower()}
        if isinstance(ev, Coinbase):
            item.update(recipient=str(ev.recipient), amount=ev.amount)
        elif isinstance(ev, SignedEvent):
            item.update(signer=str(ev.signer), nonce=ev.nonce, fee=ev.fee,
                        account=str(ev.account) if ev.account else None)
            if isinstance(ev.body, Transfer):
                item.update(to=str(ev.body.to), amount=ev.body.amount)
        events.append(item)
    return {"hash": hash_hex(block.hash), "height": height, "prev": hash_hex(h.prev),
            "time": h.time, "bits": f"{h.bits:08x}", "nonce": h.nonce, "size": block.size,
            "events": events}


@query_app.command("block")
@friendly
def query_block(
    ident: Annotated[str, typer.Argument(help="Block hash (hex) or best-chain height.")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """A block by hash or height."""
    with _open(net, datadir) as node:
        if ident.isdigit():
            found = node.chain.best_chain_hash(int(ident))
            if found is None:
                raise BlockcoinError(f"no block at height {ident} (tip {node.chain.tip.height})")
            h = found
        else:
            h = hash_from_hex(ident)
        block = node.chain.store.get_block(h)
        entry = node.chain.index.get(h)
        if block is None or entry is None:
            raise BlockcoinError(f"unknown block {ident}")
        data = block_json(block, entry.height, node.params.chain_id)
        emit(as_json, data, json.dumps(data, indent=2))


@query_app.command("principal")
@friendly
def query_principal(
    principal: Annotated[str, typer.Argument(help="Principal (blk...).")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """/global/principals/P: keys, address, balance and nonce."""
    p = Principal.parse(principal)
    with _open(net, datadir) as node:
        acct = node.chain.tree.principal(p)
        if acct is None:
            raise BlockcoinError(f"principal {p} has no record in the global tree")
        data = acct.to_json(p)
        emit(as_json, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


@query_app.command("fragments")
@friendly
def query_fragments(
    path: Annotated[str, typer.Argument(help="Blocktree path /<principal>/...")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """/global/fragments/PATH: the holders of each fragment index."""
    from chain.paths import check_path

    check_path(path)
    with _open(net, datadir) as node:
        holders = node.chain.tree.fragments(path)
        data = {"path": path, "fragments": {str(i): h for i, h in sorted(holders.items())}}
        lines = [f"{path}"] + [f"  [{i}] {h['host']} {h['address'] or '-'}"
                               for i, hs in sorted(holders.items()) for h in hs]
        emit(as_json, data, "\n".join(lines) if holders else f"{path}: no fragments stored")


@app.command()
@friendly
def reindex(net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild the global tree by folding the best chain again from genesis."""
    import time

    with _open(net, datadir) as node:
        start = time.perf_counter()
        with Progress(transient=True, disable=as_json or not sys.stderr.isatty()) as bar:
            task = bar.add_task("reindex", total=node.chain.tip.height + 1)
            node.chain.reindex(lambda h, top: bar.update(task, completed=h + 1))
        tip = node.chain.tip
        emit(as_json, {"height": tip.height, "hash": hash_hex(tip.hash),
                       "seconds": round(time.perf_counter() - start, 3)},
             f"reindexed to {tip.height} {hash_hex(tip.hash)}")


def write_blocks(path: Path, blocks: Iterator[Block]) -> int:
    """A blocks file: each block as a varint length and its bytes."""
    count = 0
    with path.open("wb") as fh:
        for block in blocks:
            raw = block.encode()
            fh.write(encode_varint(len(raw)) + raw)
            count += 1
    return count


def read_blocks(path: Path) -> Iterator[Block]:
    data = path.read_bytes()
    r = Reader(data)
    while r.remaining:
        yield Block.decode(r.var_bytes(1 << 26))


@app.command("import")
@friendly
def import_blocks(
    file: Annotated[Path, typer.Argument(help="Blocks file (from `export` or a benchmark).")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Import blocks from FILE, printing each new tip as it is connected and synced."""
    with _open(net, datadir) as node:
        for block in read_blocks(file):
            result = node.accept(block)
            if result.new_tip and as_json:
                tip = node.chain.tip
                print(json.dumps({"connected": hash_hex(tip.hash), "height": tip.height}),
                      flush=True)
        tip = node.chain.tip
        emit(as_json, {"height": tip.height, "hash": hash_hex(tip.hash), "done": True},
             f"imported; tip {tip.height} {hash_hex(tip.hash)}")


@app.command("export")
@friendly
def export_blocks(
    file: Annotated[Path, typer.Argument(help="Where to write the best chain's blocks.")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Write the best chain (after genesis) to FILE."""
    with _open(net, datadir) as node:
        count = write_blocks(file, node.chain.iter_best_chain(1))
        emit(as_json, {"blocks": count, "file": str(file)}, f"wrote {count} blocks to {file}")


