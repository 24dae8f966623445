"""The light client: headers only, and answers checked against them.

It keeps the header chain (116 bytes a block) in ``DATADIR/light/headers.dat``, synced from
any full node over the ordinary peer protocol (``Hello``, ``GetHeaders``, ``Headers``) and
checked as a full node checks headers: proof of work, the required target, time, and the most
work wins (:class:`chain.node.headers.HeaderTree`). It then asks any full node's API for
``/global/...`` answers with ``?proof=1``, and computes the answer itself from the proven keys
(:func:`globaltree.proofs.answer_from_proof`) against the state root of its *own* copy of the
named header. A proof that does not verify, names a header it does not have or one off its
best chain, is older than ``max_age`` blocks, or does not match the JSON the node sent is
refused with one line; nothing the node wrote is shown unless the proof vouches for it.
The storage agents run on the same client with ``--light`` (:mod:`chain.app.lightchain`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import aiohttp
import typer

from chain.app.clikit import DatadirOpt, JsonOpt, NetworkOpt, emit, friendly, locate
from chain.core.block import Block, events_root
from chain.core.encoding import Reader
from chain.core.errors import BadParent, BlockcoinError, DecodeError, ValidationError
from chain.core.header import HEADER_SIZE, Header, hash_hex
from chain.core.keys import KeyPair
from chain.core.params import NetworkParams
from chain.core.principal import Principal
from chain.net.channel import WS_MAX_MSG_SIZE, ChannelError, SecureChannel, WebSocketTransport
from chain.net.http import ApiClient, ApiError, AsyncApiClient
from chain.net.p2p.messages import (
    MAX_HEADERS,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    GetHeaders,
    Headers,
    Hello,
    Ping,
    Pong,
    decode_message,
    encode_message,
)
from chain.node.headers import HeaderTree
from globaltree.errors import StateProofError
from globaltree.proofs import StateProof, answer_from_proof
from globaltree.queries import GlobalTree

log = logging.getLogger("blockcoin.light")
HEADERS_FILE = "headers.dat"
DEFAULT_MAX_AGE = 6  # blocks a proof's header may lie below the light client's best header
MAX_STRAYS = 8  # header batches not connecting to ours (announcements) one sync tolerates


class LightClientError(BlockcoinError):
    code = "light"


class UnknownHeader(StateProofError):
    """A proof names a block this client has no header for: it may only be behind the node,
    so a caller that can sync headers asks again after syncing."""


@dataclass(frozen=True)
class ProvenQuery:
    """A ``/global/...`` query: its API path, and the same query as a function of the tree
    (run by the full node to answer and by the light client on the proven keys)."""

    api_path: str
    run: Callable[[GlobalTree], dict[str, Any] | None]
    what: str

    @classmethod
    def principal(cls, p: Principal) -> ProvenQuery:
        return cls(f"/global/principals/{p}", lambda tree: tree.principal_json(p),
                   f"principal {p}")

    @classmethod
    def fragments(cls, path: str) -> ProvenQuery:
        return cls("/global/fragments/" + quote(path.lstrip("/")),
                   lambda tree: tree.fragments_json(path), f"path {path}")

    @classmethod
    def contract(cls, cid: bytes) -> ProvenQuery:
        def run(tree: GlobalTree) -> dict[str, Any] | None:
            found = tree.contract(cid)
            return found.to_json() if found is not None else None

        return cls(f"/contracts/{cid.hex()}", run, f"contract {cid.hex()[:16]}…")

    async def fetch(self, client: AsyncApiClient) -> tuple[dict[str, Any] | None, StateProof]:
        """The node's answer (None: it says there is none) and its proof."""
        try:
            data = await client.request("GET", self.api_path + "?proof=1")
        except ApiError as exc:
            if exc.status != 404 or not isinstance(exc.body, dict) or "proof" not in exc.body:
                raise
            return None, StateProof.from_json(exc.body["proof"])
        if not isinstance(data, dict) or "proof" not in data:
            raise StateProofError(f"the node sent no proof for {self.what}")
        return data, StateProof.from_json(data["proof"])


def verified_answer(query: ProvenQuery, claimed: dict[str, Any] | None, proof: StateProof,
                    root: bytes) -> dict[str, Any] | None:
    """The answer the proven state gives; refused if the node's own answer says otherwise
    (its extra, unprovable fields such as the mempool's ``next_nonce`` aside)."""
    answer = answer_from_proof(proof, root, query.run)
    if claimed is not None:
        claimed = {k: v for k, v in claimed.items() if answer is None or k in answer}
    if claimed != answer:
        raise StateProofError(f"the node's answer for {query.what} is not what its proof shows")
    return answer


class LightClient:
    def __init__(self, datadir: Path, params: NetworkParams) -> None:
        self.params = params
        self.dir = datadir / "light"
        self.tree = HeaderTree(params)
        self._load()

    # --- headers ---------------------------------------------------------------------------

    @property
    def file(self) -> Path:
        return self.dir / HEADERS_FILE

    def _load(self) -> None:
        """Re-check the saved headers (proof of work and all): the file is only a cache. A
        trailing partial header is an append that was cut short: it is left out here, and the
        next :meth:`save` cuts it off."""
        try:
            with self.file.open("rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # not halfway through another's save
                raw = f.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LightClientError(f"cannot read {self.file}: {exc.strerror}") from exc
        whole = len(raw) // HEADER_SIZE
        if len(raw) % HEADER_SIZE:
            log.info("%s ends in a partial header (an interrupted save): left out", self.file)
        r = Reader(raw[: whole * HEADER_SIZE])
        headers = [Header.decode(r.fixed(HEADER_SIZE)) for _ in range(whole)]
        for i in range(0, len(headers), MAX_HEADERS):
            try:
                self.tree.add_headers(headers[i : i + MAX_HEADERS])
            except (ValidationError, DecodeError) as exc:
                raise LightClientError(f"{self.file} holds a bad header ({exc}); delete it") from exc

    def save(self) -> None:
        """Bring the file to the best header chain from height 1, writing only what differs:
        the headers above the file's last one when the chain only grew (the usual case), or,
        after a reorganisation below the saved tip, the file cut back to the fork and the new
        branch appended. An owner and a host agent of one data directory share the file: each
        save holds an exclusive ``flock`` on it and reads its length under the lock, so every
        save sees the other's last one; a file already holding this chain and more (the other
        process is ahead) is left as it is."""
        self.dir.mkdir(parents=True, exist_ok=True)
        chain = self.tree.best_chain
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            whole = size // HEADER_SIZE
            keep = self._saved_prefix(fd, min(whole, len(chain) - 1))
            if keep == len(chain) - 1:
                if size % HEADER_SIZE:
                    os.ftruncate(fd, whole * HEADER_SIZE)
                    os.fsync(fd)
                return
            if size != keep * HEADER_SIZE:
                os.ftruncate(fd, keep * HEADER_SIZE)
            data = b"".join(self.tree.nodes[h].header.encode() for h in chain[keep + 1 :])
            offset = keep * HEADER_SIZE
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            os.fsync(fd)
        finally:
            os.close(fd)  # and the lock with it

    def _saved_prefix(self, fd: int, top: int) -> int:
        """The greatest height ``h <= top`` up to which the file holds this client's best
        chain. The file is one chain (each save leaves one), so the headers it shares with
        ours are a prefix: the last one is checked first, then a binary search finds a fork."""

        def same(height: int) -> bool:
            ours = self.tree.nodes[self.tree.best_chain[height]].header.encode()
            return os.pread(fd, HEADER_SIZE, (height - 1) * HEADER_SIZE) == ours

        if top == 0 or same(top):
            return top
        lo, hi = 0, top - 1  # same(lo) holds (height 0: nothing saved), same(hi + 1) does not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if same(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    @property
    def tip(self) -> tuple[int, bytes]:
        best = self.tree.best
        return best.height, best.hash

    async def sync_from(self, peers: Sequence[str], timeout: float = 60.0) -> int:
        """Sync from each peer in turn and return how many headers were new in all: the most
        work wins whoever sent it, so one honest peer among several is enough. A peer that
        fails is logged and skipped; every peer failing is an error naming the last failure."""
        before = self.tree.best.height
        failure = "no peer to sync headers from"
        answered = 0
        for peer in peers:
            try:
                await self.sync(peer, timeout)
                answered += 1
            except LightClientError as exc:
                log.warning("%s", exc)
                failure = str(exc)
        if not answered:
            raise LightClientError(failure)
        return self.tree.best.height - before

    async def sync(self, address: str, timeout: float = 60.0) -> int:
        """Fetch headers from the full node at ``host:port`` until it has no more; return how
        many were new. A header that fails a check stops the sync with one line naming it."""
        before, best = self.tree.best.height, self.tree.best
        key = KeyPair.generate()
        async with aiohttp.ClientSession() as session:
            try:
                async with asyncio.timeout(timeout):
                    ws = await session.ws_connect(f"http://{address}/p2p",
                                                  max_msg_size=WS_MAX_MSG_SIZE)
                    channel = await SecureChannel.initiate(WebSocketTransport(ws), key,
                                                           self.params.chain_id)
                    try:
                        await self._fetch_headers(channel, key)
                    finally:
                        await channel.close()
            except TimeoutError:
                raise LightClientError(f"header sync from {address} timed out after"
                                       f" {timeout:.0f} s") from None
            except (aiohttp.ClientError, OSError, ChannelError) as exc:
                raise LightClientError(f"cannot sync headers from {address}: {exc}") from None
        if self.tree.best is not best:
            self.save()
        return self.tree.best.height - before

    async def _fetch_headers(self, channel: SecureChannel, key: KeyPair) -> None:
        best = self.tree.best
        await channel.send(encode_message(Hello(
            PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, self.params.chain_id, self.params.genesis_hash,
            key.principal, best.height, best.work, best.hash, "", "blockcoin-light/1",
            int(time.time()))))
        hello = decode_message(bytes(await channel.recv()))
        if not isinstance(hello, Hello) or hello.genesis != self.params.genesis_hash:
            raise LightClientError("the peer is not on this network (another genesis)")
        strays = 0
        for _ in range(1_000_000 // MAX_HEADERS + 1):  # bounded: a peer cannot keep us forever
            await channel.send(encode_message(GetHeaders(self.tree.locator())))
            headers = await self._next_headers(channel)
            if not headers:
                return
            try:
                self.tree.add_headers(headers)
            except BadParent as exc:
                # a mining peer announces each new block with its header, which may arrive
                # before the answer and not connect yet: ask again, a few times at most
                strays += 1
                if strays > MAX_STRAYS:
                    raise LightClientError(f"the peer sent a bad header: {exc}") from None
                continue
            except ValidationError as exc:
                raise LightClientError(f"the peer sent a bad header: {exc}") from None
            if len(headers) < MAX_HEADERS:
                return

    @staticmethod
    async def _next_headers(channel: SecureChannel) -> list[Header]:
        for _ in range(10_000):
            msg = decode_message(bytes(await channel.recv()))
            if isinstance(msg, Headers):
                return msg.headers
            if isinstance(msg, Ping):
                await channel.send(encode_message(Pong(msg.nonce)))
            elif isinstance(msg, GetHeaders):  # we have nothing it lacks
                await channel.send(encode_message(Headers([])))
        raise LightClientError("the peer never answered with headers")

    # --- answers -----------------------------------------------------------------------------

    def root_for(self, proof: StateProof, max_age: int) -> bytes:
        """The state root of the header ``proof`` names, from this client's own headers."""
        node = self.tree.get(proof.block)
        name = f"block {hash_hex(proof.block)[:16]}… (height {proof.height})"
        if node is None:
            raise UnknownHeader(f"the proof names {name}, which is not among this client's"
                                " headers: sync headers first, or the node is on another chain")
        if not self.tree.on_best_chain(node) or node.height != proof.height:
            raise StateProofError(f"the proof names {name}, which is not on the best header chain")
        if self.tree.best.height - node.height > max_age:
            raise StateProofError(
                f"the proof is stale: {name} is {self.tree.best.height - node.height} blocks below"
                f" the best header (at most {max_age})")
        return node.header.state_root

    async def ask(self, client: AsyncApiClient, query: ProvenQuery, max_age: int = DEFAULT_MAX_AGE
                  ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, StateProof]:
        """The proven answer, the node's own (for its unprovable extras, such as the
        mempool's ``next_nonce``: never to be relied on) and the proof."""
        claimed, proof = await query.fetch(client)
        answer = verified_answer(query, claimed, proof, self.root_for(proof, max_age))
        return answer, claimed, proof


# --- answers checked against the node's own header (``blockcoin query --prove``) ------------


async def fetch_block(client: AsyncApiClient, block_hash: bytes) -> Block:
    """The block named ``block_hash``, from any node: refused unless its header hashes to that
    name and its events to the header's events root, so a node can withhold a block but not
    alter, add or drop one event of it."""
    name = hash_hex(block_hash)
    try:
        raw = await client.request("GET", f"/blocks/{name}/raw", raw=True)
        block = Block.decode(raw)
    except (ApiError, DecodeError) as exc:
        raise StateProofError(f"the node does not serve the block {name} ({exc})") from None
    if block.hash != block_hash:
        raise StateProofError(f"the node sent another block for {name}")
    if events_root(block.events) != block.header.events_root:
        raise StateProofError(f"the events the node sent for block {name} are not the ones its"
                              " header commits to")
    return block


async def proven_from_node(client: AsyncApiClient, query: ProvenQuery
                           ) -> tuple[dict[str, Any] | None, StateProof]:
    """A full node's answer with its proof, checked against the header the node itself serves
    for the named block: shows the answer is the one its chain commits to (a light client
    checks against headers of its own instead)."""
    claimed, proof = await query.fetch(client)
    header = (await fetch_block(client, proof.block)).header
    return verified_answer(query, claimed, proof, header.state_root), proof


def proof_line(proof: StateProof) -> str:
    return (f"proof: {len(proof.items)} state keys against block {hash_hex(proof.block)} at height"
            f" {proof.height} (state root {proof.state_root.hex()}), verified")


# --- ``blockcoin light`` ----------------------------------------------------------------------

light_app = typer.Typer(
    help="A light client: headers only, synced from a peer; answers checked by proof.",
    no_args_is_help=True)

PeerOpt = Annotated[list[str] | None, typer.Option(
    "--peer", help="Sync headers from this full node's p2p address (HOST:PORT) first; give it"
                   " again for more peers (the most work wins).")]
ApiOpt = Annotated[str, typer.Option(
    "--api", help="Any full node's API (http://HOST:PORT); it need not be trusted.")]
MaxAgeOpt = Annotated[int, typer.Option(
    "--max-age", min=0, help="Refuse proofs against headers more than this many blocks deep.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=1, help="Seconds for a header sync.")]


def _client(net: str | None, datadir: Path | None, peers: list[str] | None,
            timeout: float) -> LightClient:
    where = locate(net, datadir)
    light = LightClient(where.datadir, where.params)
    if peers:
        asyncio.run(light.sync_from(peers, timeout))
    if light.tree.best.height == 0:
        raise LightClientError("no headers yet: run `blockcoin light sync --peer HOST:PORT`")
    return light


@light_app.command("sync")
@friendly
def light_sync(
    peer: Annotated[list[str], typer.Option(
        "--peer", help="A full node's p2p address, HOST:PORT; give it again for more peers.")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """Fetch and check headers (proof of work, target, time, most work) from full nodes."""
    where = locate(net, datadir)
    light = LightClient(where.datadir, where.params)
    new = asyncio.run(light.sync_from(peer, timeout))
    height, tip = light.tip
    emit(as_json, {"height": height, "hash": hash_hex(tip), "new_headers": new},
         f"{height} {hash_hex(tip)} ({new} new headers)")


def _answer(light: LightClient, api: str, query: ProvenQuery, max_age: int,
            as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    try:
        with ApiClient(api) as client:
            answer, _, proof = client.call(light.ask(client.aio, query, max_age))
    except StateProofError as exc:
        raise LightClientError(f"refused the answer of {api}: {exc}") from None
    emit_proven(query, answer, proof, as_json, render, LightClientError)


def emit_proven(query: ProvenQuery, answer: dict[str, Any] | None, proof: StateProof,
                as_json: bool, render: Callable[[dict[str, Any]], str],
                absent: type[BlockcoinError] = BlockcoinError) -> None:
    """Print a proven answer with its proof; a key proven absent is ``absent``'s one line."""
    if answer is None:
        raise absent(f"{query.what} has no record in the global tree (proven absent at block "
                     f"{hash_hex(proof.block)}, height {proof.height})")
    emit(as_json, {**answer, "proof": proof.to_json()}, f"{render(answer)}\n{proof_line(proof)}")


@light_app.command("principal")
@friendly
def light_principal(
    principal: Annotated[str, typer.Argument(help="Principal (blk...).")],
    api: ApiOpt, peer: PeerOpt = None, max_age: MaxAgeOpt = DEFAULT_MAX_AGE,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """/global/principals/P from any node, proven against this client's headers."""
    from chain.app.render import principal_text

    p = Principal.parse(principal)
    light = _client(net, datadir, peer, timeout)
    _answer(light, api, ProvenQuery.principal(p), max_age, as_json, principal_text)


@light_app.command("fragments")
@friendly
def light_fragments(
    path: Annotated[str, typer.Argument(help="Blocktree path /<principal>/...")],
    api: ApiOpt, peer: PeerOpt = None, max_age: MaxAgeOpt = DEFAULT_MAX_AGE,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """/global/fragments/PATH from any node, proven against this client's headers."""
    from chain.app.render import fragments_text
    from chain.core.paths import check_path

    check_path(path)
    light = _client(net, datadir, peer, timeout)
    _answer(light, api, ProvenQuery.fragments(path), max_age, as_json, fragments_text)
