"""Helpers for multi-process network tests: regtest chains built fast in memory, node processes
on free loopback ports, a small API client, and a hostile peer speaking the protocol only as far
as it chooses to. Every wait is bounded in time.

Hostile connections come from their own loopback addresses (127.77.x.y; Linux answers on all of
127.0.0.0/8), because a node bans a misbehaving peer's address: an attacker banned on 127.0.0.1
would lock the honest test nodes out too."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from chain.app.processes import NodeProcess
from chain.consensus.validation import expected_bits
from chain.core.block import Block, events_root
from chain.core.events import Coinbase, Event, SignedEvent, Transfer
from chain.core.hashes import ZERO_HASH
from chain.core.header import Header
from chain.core.keys import KeyPair
from chain.core.params import HEADER_VERSION, REGTEST
from chain.net.channel import WS_MAX_MSG_SIZE, ChannelError, SecureChannel, WebSocketTransport
from chain.net.p2p.messages import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Hello,
    Message,
    Ping,
    Pong,
    decode_message,
    encode_message,
)
from chain.node.chainstate import ChainState
from chain.node.local import init_datadir
from chain.node.mining import solve
from globaltree.fold import fold_into, genesis_state

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
M = TypeVar("M", bound=Message)
_NONCES = itertools.count(1)
_SOURCES = itertools.count(os.getpid() % 200 * 250)


def next_source() -> str:
    """A loopback address no other hostile connection of this process has used."""
    n = next(_SOURCES) % (250 * 250)
    return f"127.77.{n // 250}.{n % 250 + 1}"


def source_connector(source: str) -> aiohttp.TCPConnector:
    """Connections from ``source`` instead of 127.0.0.1."""
    return aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)


def wait_until(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception as exc:  # the node may not be up yet
            last = exc
            value = None  # type: ignore[assignment]
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def make_blocks(count: int, events_per_block: int = 2, seed: int = 1,
                parent: Header | None = None, start_height: int = 0,
                nonces: dict[int, int] | None = None, senders: range = range(5, 10),
                recipient: KeyPair | None = None) -> list[Block]:
    """A valid regtest chain of transfers between development keys, built without a chain
    state (transfers mint nothing, so each coinbase claims exactly the fees). From genesis the
    state is folded alongside, so each header carries its state root; on another ``parent``
    the state is unknown and the headers carry a zero root (good as headers, not as blocks)."""
    rng = random.Random(seed)
    keys = [KeyPair.development(i) for i in senders]
    to = [KeyPair.development(i).principal for i in range(10)]
    nonces = dict(nonces or {})
    prev = parent or REGTEST.genesis.header
    height = start_height
    t = prev.time
    miner = (recipient or KeyPair.development(9)).principal
    state = genesis_state(REGTEST) if parent is None else None
    blocks = []
    for _ in range(count):
        height += 1
        t += 1
        batch: list[Event] = []
        for _ in range(events_per_block):
            i = rng.randrange(len(keys))
            nonce = nonces.get(i, 0)
            nonces[i] = nonce + 1
            batch.append(SignedEvent.create(REGTEST.chain_id, keys[i], nonce, 100,
                                            Transfer(rng.choice(to), rng.randrange(1, 10**6))))
        events: list[Event] = [Coinbase(height, miner, 100 * len(batch),
                                        seed.to_bytes(4, "big")), *batch]
        header = Header(HEADER_VERSION, prev.hash, events_root(events), ZERO_HASH, t,
                        expected_bits(REGTEST, prev, height - 1), 0)
        if state is not None:
            root = fold_into(state, REGTEST, Block(header, events), height, lambda h: None)
            header = dataclasses.replace(header, state_root=root)
        solved = solve(header)
        assert solved is not None
        header = solved
        blocks.append(Block(header, events))
        prev = header
    return blocks


def init_node_dir(path: Path, dev_key: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    key_path = path / "wallet.key"
    if not key_path.exists():
        KeyPair.development(dev_key).save(key_path)
    init_datadir(path, REGTEST)
    return path


def import_blocks(path: Path, blocks: list[Block]) -> ChainState:
    chain = ChainState(path, REGTEST, verify_threads=1)
    try:
        for block in blocks:
            chain.accept_block(block)
    except BaseException:
        chain.close()
        raise
    return chain


class NodeProc(NodeProcess):
    """A ``blockcoin node`` child for tests (:class:`chain.app.processes.NodeProcess`) that can
    also report its state digest."""

    def digest(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/state/digest")
        return data


def mining_node(path: Path, interval: float, *extra: str, name: str = "n") -> NodeProc:
    """A lone regtest node (development key 1) mining a block every ``interval`` seconds."""
    return NodeProc(init_node_dir(path, 1), "--no-discover", "--mine", "--mine-interval",
                    str(interval), "--threads", "1", *extra, name=name)


@contextlib.contextmanager
def running(*nodes: NodeProc) -> Iterator[tuple[NodeProc, ...]]:
    """Stop every node on the way out, and show their logs if the test failed."""
    try:
        yield nodes
    except BaseException:
        for node in nodes:
            sys.stderr.write(f"\n===== {node.name} log (its end; all of it: {node.log_path})"
                             f" =====\n{node.log()[-6000:]}\n")
        raise
    finally:
        for node in nodes:
            node.stop()


def converged(nodes: list[NodeProc], min_height: int = 0) -> tuple[int, str] | None:
    tips = {node.tip() for node in nodes}
    if len(tips) == 1:
        tip = next(iter(tips))
        if tip[0] >= min_height:
            return tip
    return None


class Hostile:
    """One authenticated connection to the node, speaking the protocol only as far as it
    chooses to."""

    def __init__(self, port: int, key: KeyPair, source: str | None = None) -> None:
        self.port = port
        self.key = key
        self.source = source or next_source()
        self.session = aiohttp.ClientSession(connector=source_connector(self.source))
        self.channel: SecureChannel | None = None

    async def open(self, best_height: int = 0, best_work: int = 1) -> Hello:
        ws = await self.session.ws_connect(f"http://127.0.0.1:{self.port}/p2p",
                                           max_msg_size=WS_MAX_MSG_SIZE)
        self.channel = await SecureChannel.initiate(WebSocketTransport(ws), self.key,
                                                    REGTEST.chain_id)
        await self.send(Hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, REGTEST.chain_id,
                              REGTEST.genesis_hash, self.key.principal, best_height, best_work,
                              REGTEST.genesis_hash, "", "hostile/1", int(time.time())))
        hello = decode_message(await self.recv())
        assert isinstance(hello, Hello)
        return hello

    async def send(self, msg: Any) -> None:
        assert self.channel is not None
        await self.channel.send(encode_message(msg))

    async def send_raw(self, data: bytes) -> None:
        assert self.channel is not None
        await self.channel.send(data)

    async def recv(self) -> bytes:
        assert self.channel is not None
        return await self.channel.recv()

    async def wait_for(self, kind: type[M], timeout: float = 30.0) -> M:
        """Read until a message of type ``kind`` arrives (others are dropped); TimeoutError
        after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                msg = decode_message(await self.recv())
                if isinstance(msg, kind):
                    return msg

    async def sync_with_ping(self, timeout: float = 30.0) -> None:
        """Ping and read up to the pong: the node has handled everything sent before (it
        handles a peer's messages in order)."""
        nonce = next(_NONCES)
        await self.send(Ping(nonce))
        async with asyncio.timeout(timeout):
            while not (isinstance(msg := decode_message(await self.recv()), Pong)
                       and msg.nonce == nonce):
                pass

    async def send_and_ping(self, msg: Any, timeout: float = 30.0) -> None:
        """Send ``msg`` and wait until the node has handled it."""
        await self.send(msg)
        await self.sync_with_ping(timeout)

    async def closed_by_peer(self, timeout: float = 20.0) -> bool:
        """Read until the node hangs up; True if it did within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.recv()
        except ChannelError:
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        await self.session.close()


# --- attacks shared by the attack tests and the soak ------------------------------------


CLAIM = 1 << 60  # the work a hostile peer claims in its hello


def tip_block(node: NodeProc) -> tuple[Block, int]:
    height = int(node.get("/tip")["height"])
    return Block.decode(node.get(f"/blocks/{height}/raw")), height


def metric(node: NodeProc, name: str) -> float:
    text = node.get("/metrics").decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


def banned(node: NodeProc, key: KeyPair) -> bool:
    return str(key.principal) in {b["principal"] for b in node.get("/bans")["bans"]}


async def drain(h: Hostile) -> None:
    """Read and ignore whatever the node sends, until it hangs up."""
    with contextlib.suppress(ChannelError):
        while True:
            await h.recv()

def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def idle_sockets(port: int, count: int, sources: list[str],
                 request: bytes = b"") -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port`` from ``sources`` in turn, each sending ``request``
    (nothing by default) and then nothing more."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            s = socket.socket()
            socks.append(s)
            s.settimeout(5)
            s.bind((sources[i % len(sources)], 0))
            with contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                if request:
                    s.sendall(request)
        yield socks
    finally:
        for s in socks:
            s.close()


def open_fds(node: NodeProc) -> int:
    assert node.proc is not None
    return len(os.listdir(f"/proc/{node.proc.pid}/fd"))

UPGRADE = (b"GET /p2p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
