"""The HTTP API of a running node (aiohttp).

Reads (tip, blocks, events, the global tree, mempool, peers) are open; anything that spends or
changes node state (submitting an event, mining, connecting a peer, lifting bans) requires the
cookie token (see :mod:`chain.api.auth`), else 401 and nothing changes. Every error is JSON
``{"error": code, "message": text}`` with a 4xx status; bad input never gives a 500.
Every parameter is parsed strictly (ASCII digits only, within bounds) and a JSON body is bounded
in size and nesting depth, so odd input is a 400, not an exception. The ``Host`` header must
name the loopback interface, the address the API is bound to, or a name the operator allowed
(``--api-host``): a web page whose name an attacker re-points at 127.0.0.1 (DNS rebinding)
cannot read the node through a browser.
``GET /tip?after=H&wait=S`` long-polls: agents beside the node (the storage market's) follow the
chain with one request per block instead of polling. The OpenAPI document at ``/openapi.json``
(:mod:`chain.api.openapi`) describes every route here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import time as _time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ValidationError

from chain.api import models
from chain.api.auth import SESSION_COOKIE, SESSION_HEADER, Sessions, check_token
from chain.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from chain.api.metrics import render_metrics
from chain.api.openapi import openapi_document
from chain.api.views import block_json, event_json, header_json
from chain.core.aio import stop_tasks
from chain.core.block import Block
from chain.core.errors import BlockcoinError, DecodeError
from chain.core.events import SignedEvent, decode_event
from chain.core.header import hash_from_hex, hash_hex
from chain.core.paths import check_path
from chain.core.principal import Principal
from chain.net.http import is_loopback
from chain.net.p2p.addrman import parse_peer_spec
from chain.net.p2p.bans import parse_network
from chain.net.p2p.gate import ConnectionGate, Stage
from chain.net.p2p.manager import PeerManager
from chain.node.core import NodeCore

log = logging.getLogger("blockcoin.api")

API_VERSION = "1"
MAX_LIST = 1000
SUBSCRIBER_QUEUE = 1000
MAX_TIP_WAIT = 5.0
MAX_BODY = 1 << 20
MAX_JSON_DEPTH = 16
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")

MineFn = Callable[[int, Principal | None], Awaitable[list[Block]]]
ConsentFn = Callable[[str | None, Principal, bytes, int], Awaitable[bytes]]
"""Asks a host (at its announced address) to consent to a contract's running ``periods``
periods in all: the host's signature. The application gives it (it speaks the storage
protocol); without it, the dashboard's extend is refused."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


_STATUS_CODES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
                 405: "method-not-allowed", 413: "too-large", 415: "unsupported-media-type"}


@dataclass
class ApiContext:
    core: NodeCore
    manager: PeerManager
    token: str
    datadir: Path
    mine: MineFn
    mining: Callable[[], bool] = lambda: False
    started: float = field(default_factory=_time.time)
    requests: Counter[str] = field(default_factory=Counter)
    subscribers: set[asyncio.Queue[str | None]] = field(default_factory=set)
    allowed_hosts: frozenset[str] = frozenset()  # Host names beyond loopback (lowercase)
    gate: ConnectionGate | None = None  # the API port's: told when a connection is busy
    sessions: Sessions = field(default_factory=Sessions)  # the dashboard's logins
    consent: ConsentFn | None = None


CTX: web.AppKey[ApiContext] = web.AppKey("ctx", ApiContext)


class TipWatch:
    """Wakes the long-polls of ``GET /tip?after=H&wait=S`` when a block connects (or the server
    shuts down), so an agent beside the node sees a new block at once with one open request
    instead of polling the node several times a second."""

    def __init__(self) -> None:
        self._moved = asyncio.Event()
        self.closing = False

    def notify(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._moved.wait(), timeout)


TIP_WATCH: web.AppKey[TipWatch] = web.AppKey("tip_watch", TipWatch)


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's ``Host`` names this node: a loopback name or address, or one of
    ``allowed`` (the bound address and the operator's ``--api-host`` names)."""
    if not host_header or not host_header.isascii():
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host in allowed or is_loopback(host)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    ctx = request.app[CTX]
    if ctx.gate is not None:
        ctx.gate.set_stage(request.transport, Stage.ACTIVE)
    try:
        if not host_allowed(request.headers.get("Host"), ctx.allowed_hosts):
            raise ApiError(403, "bad-host", "the Host header does not name this node's API "
                           "(allow other names with --api-host)")
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "http-error")
        response = error_response(exc.status, code, exc.reason)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
    except BlockcoinError as exc:
        response = error_response(400, exc.code, str(exc))
    except Exception as exc:  # a bug: report it, keep serving
        log.exception("API handler failed on %s %s", request.method, request.path)
        response = error_response(500, "internal", f"{type(exc).__name__}: {exc}")
    finally:
        if ctx.gate is not None:
            ctx.gate.set_stage(request.transport, Stage.IDLE)
    ctx.requests[str(response.status)] += 1
    return response


def in_session(request: web.Request) -> bool:
    """Whether the request carries a live dashboard session cookie."""
    return request.app[CTX].sessions.valid(request.cookies.get(SESSION_COOKIE), _time.time())


def authorized(request: web.Request) -> bool:
    """The bearer token, or a dashboard session (its cookie and the header no other site's
    page can send)."""
    if check_token(request.headers.get("Authorization"), request.app[CTX].token):
        return True
    return request.headers.get(SESSION_HEADER) == "1" and in_session(request)


def _auth(request: web.Request) -> None:
    if not authorized(request):
        raise ApiError(401, "unauthorized",
                       "this request changes node state: send 'Authorization: Bearer <token>' "
                       "with the token from the api.cookie file in the data directory, or log "
                       "in to the dashboard with it")


def _digits(text: str, max_len: int = 20) -> bool:
    """ASCII decimal digits only: ``str.isdigit`` also accepts '²' and '①', which ``int``
    then refuses."""
    return 0 < len(text) <= max_len and text.isascii() and text.isdigit()


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _digits(raw):
        raise ApiError(400, "bad-parameter", f"{name} must be an integer in {lo}..{hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(400, "bad-parameter", f"{name} must be an integer in {lo}..{hi}")
    return value


def _principal(text: str) -> Principal:
    try:
        return Principal.parse(text)
    except BlockcoinError as exc:
        raise ApiError(400, "bad-principal", str(exc)) from None


def _seconds_param(request: web.Request, name: str, hi: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return 0.0
    value = float(raw) if _SECONDS.fullmatch(raw) and raw.isascii() else -1.0
    if not 0.0 <= value <= hi:
        raise ApiError(400, "bad-parameter", f"{name} must be a number of seconds in 0..{hi:g}")
    return value


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (brackets inside strings do not
    count), found without parsing: the parser is recursive, so depth is bounded first."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # bounded by the app's client_max_size (413 past it)
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise ApiError(400, "bad-json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad-json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad-json", "the body is a JSON object")
    return data


B = TypeVar("B", bound=BaseModel)


async def _body(request: web.Request, model: type[B], required: bool = True) -> B:
    """The JSON body as ``model`` (strict: no strings for numbers, no unknown fields); an
    optional body may be left out."""
    data = await _json_body(request) if required or request.can_read_body else {}
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ApiError(400, "bad-request", f"{where}: {first['msg']}") from None


# --- handlers ---------------------------------------------------------------------------


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def status(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    core, manager = ctx.core, ctx.manager
    tip = core.chain.tip
    return web.json_response({
        "network": core.params.name,
        "principal": str(core.principal),
        "height": tip.height,
        "hash": hash_hex(tip.hash),
        "best_header_height": core.tree.best.height,
        "syncing": core.syncing,
        "peers": len(manager.peers),
        "outbound": manager.outbound,
        "inbound": len(manager.peers) - manager.outbound,
        "mempool": len(core.mempool),
        "mining": ctx.mining(),
        "listen": manager.listen_address or None,
        "agent": "blockcoin/0.1",
        "api_version": API_VERSION,
        "uptime": round(_time.time() - ctx.started, 1),
    })


async def tip(request: web.Request) -> web.Response:
    chain = request.app[CTX].core.chain
    wait = _seconds_param(request, "wait", MAX_TIP_WAIT)
    if "after" in request.query:
        after = _int_param(request, "after", 0, 0, 1 << 40)
        watch = request.app[TIP_WATCH]
        deadline = asyncio.get_running_loop().time() + wait
        while chain.tip.height <= after and not watch.closing:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await watch.wait(remaining)
    entry = chain.tip
    return web.json_response({"height": entry.height, "hash": hash_hex(entry.hash),
                              "time": entry.header.time, "bits": f"{entry.header.bits:08x}",
                              "work": f"{entry.work:x}"})


def _block_hash(ctx: ApiContext, ident: str) -> bytes:
    chain = ctx.core.chain
    if _digits(ident, 12):
        found = chain.best_chain_hash(int(ident))
        if found is None:
            raise ApiError(404, "not-found", f"no block at height {ident} (tip {chain.tip.height})")
        return found
    try:
        return hash_from_hex(ident)
    except DecodeError:
        raise ApiError(400, "bad-block-id",
                       "a block is named by its height or its 64-hex-digit hash") from None


async def block(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ident = request.match_info["ident"]
    h = _block_hash(ctx, ident)
    found = ctx.core.chain.store.get_block(h)
    entry = ctx.core.chain.index.get(h)
    if found is None or entry is None:
        raise ApiError(404, "not-found", f"unknown block {ident}")
    data = block_json(found, entry.height, ctx.core.params.chain_id)
    data["best_chain"] = ctx.core.chain.best_chain_hash(entry.height) == h
    return web.json_response(data)


async def block_raw(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ident = request.match_info["ident"]
    raw = ctx.core.chain.store.get_block_bytes(_block_hash(ctx, ident))
    if raw is None:
        raise ApiError(404, "not-found", f"unknown block {ident}")
    return web.Response(body=raw, content_type="application/octet-stream")


async def headers(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    chain = ctx.core.chain
    start = _int_param(request, "start", 0, 0, 1 << 40)
    count = _int_param(request, "count", 100, 1, 2000)
    out = []
    for height in range(start, min(chain.tip.height, start + count - 1) + 1):
        h = chain.best_chain_hash(height)
        entry = chain.index.get(h) if h is not None else None
        if entry is None:
            break
        out.append(header_json(entry.header, height))
    return web.json_response({"headers": out})


def _event_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ApiError(400, "bad-event-id", "an event id is 64 hex digits")
    return raw


async def get_event(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    core = ctx.core
    eid = _event_id(request.match_info["id"])
    entry = core.mempool.entries.get(eid)
    if entry is not None:
        return web.json_response({"status": "pending", "block": None, "height": None,
                                  "position": None,
                                  "event": event_json(entry.event, core.params.chain_id, eid)})
    where = core.chain.store.event_location(eid)
    if where is None:
        raise ApiError(404, "not-found", "no such event in the best chain or the mempool")
    block_hash, position = where
    found = core.chain.store.get_block(block_hash)
    index_entry = core.chain.index.get(block_hash)
    if found is None or index_entry is None or position >= len(found.events):
        raise ApiError(404, "not-found", "event's block not found")
    return web.json_response({
        "status": "confirmed", "block": hash_hex(block_hash), "height": index_entry.height,
        "position": position,
        "event": event_json(found.events[position], core.params.chain_id, eid)})


def _decode_submitted(text: str) -> bytes:
    text = text.strip()
    try:
        return bytes.fromhex(text)
    except ValueError:
        pass
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad-encoding", "event must be hex or base64") from None


async def submit_event(request: web.Request) -> web.Response:
    _auth(request)
    ctx = request.app[CTX]
    if request.content_type == "application/octet-stream":
        raw = await request.read()
    else:
        raw = _decode_submitted((await _body(request, models.SubmitEvent)).event)
    try:
        ev = decode_event(raw)
    except DecodeError as exc:
        raise ApiError(400, "decode", f"not a canonical event: {exc}") from None
    if not isinstance(ev, SignedEvent):
        raise ApiError(400, "bad-event", "a coinbase cannot be submitted")
    results = await ctx.manager.submit_events([ev])
    _, eid, err = results[0]
    if err is not None or eid is None:
        code = err.code if err is not None else "invalid"
        raise ApiError(400, code, str(err) if err else "refused")
    return web.json_response({"id": eid.hex(), "status": "pending"}, status=202)


async def mempool(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    pool = ctx.core.mempool
    limit = _int_param(request, "limit", 100, 1, MAX_LIST)
    signer_text = request.query.get("signer")
    entries = sorted(pool.entries.values())
    if signer_text is not None:
        signer = _principal(signer_text)
        entries = [e for e in entries if e.event.signer == signer]
    chain_id = ctx.core.params.chain_id
    return web.json_response({
        "count": len(pool), "bytes": pool.bytes, "matching": len(entries),
        "events": [event_json(e.event, chain_id, e.id) for e in entries[:limit]]})


def _wants_proof(request: web.Request) -> bool:
    """``?proof=1``: the answer comes with a proof of every state key behind it against the
    tip's header (membership or absence), from the same snapshot as the answer."""
    flag = request.query.get("proof", "0")
    if flag not in ("0", "1", "true", "false"):
        raise ApiError(400, "bad-request", f"proof must be 0 or 1, not {flag[:20]!r}")
    return flag in ("1", "true")


async def principal(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    p = _principal(request.match_info["principal"])
    core = ctx.core
    # Read here, not on the chain thread (a lookup must not queue behind block validation),
    # so a block may connect meanwhile: the chain thread commits the account's new nonce
    # first and only then drops the block's events from the pool. Taking the pool's nonces
    # before the account and counting only those the account has not used yet gives the right
    # next nonce on either side of that window; ``base + len(pool)`` counted them twice.
    nonces = list(core.mempool.by_signer.get(p.digest, {}))
    if _wants_proof(request):
        found, proof = core.chain.prove(lambda tree: tree.principal_json(p))
        if found is None:  # absence, proven
            return web.json_response({"error": "not-found", "message":
                                      f"principal {p} has no record in the global tree",
                                      "proof": proof.to_json()}, status=404)
        data: dict[str, object] = {**found, "proof": proof.to_json()}
    else:
        plain = core.chain.tree.principal_json(p)
        if plain is None:
            raise ApiError(404, "not-found", f"principal {p} has no record in the global tree")
        data = plain
    nonce = int(str(data["nonce"]))
    unused = [n for n in nonces if n >= nonce]
    data["pending"] = len(unused)
    data["next_nonce"] = max([nonce, *(n + 1 for n in unused)])
    return web.json_response(data)


async def fragments(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    path = "/" + request.match_info["path"]
    try:
        check_path(path)
    except BlockcoinError as exc:
        raise ApiError(400, "bad-path", str(exc)) from None
    if _wants_proof(request):
        answer, proof = ctx.core.chain.prove(lambda tree: tree.fragments_json(path))
        return web.json_response({**answer, "proof": proof.to_json()})
    return web.json_response(ctx.core.chain.tree.fragments_json(path))


async def contract(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    cid = _event_id(request.match_info["id"])
    if _wants_proof(request):
        found, proof = ctx.core.chain.prove(lambda tree: tree.contract(cid))
        if found is None:
            return web.json_response({"error": "not-found", "message": "no such contract",
                                      "proof": proof.to_json()}, status=404)
        return web.json_response({**found.to_json(), "proof": proof.to_json()})
    found = ctx.core.chain.tree.contract(cid)
    if found is None:
        raise ApiError(404, "not-found", "no such contract")
    return web.json_response(found.to_json())


async def contracts(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    owner, host = request.query.get("owner"), request.query.get("host")
    if (owner is None) == (host is None):
        raise ApiError(400, "bad-parameter", "give exactly one of owner= or host=")
    tree = ctx.core.chain.tree
    found = (tree.contracts_by_owner(_principal(owner)) if owner is not None
             else tree.contracts_by_host(_principal(host or "")))
    return web.json_response({"contracts": [c.to_json() for c in found[:MAX_LIST]]})


async def peers(request: web.Request) -> web.Response:
    manager = request.app[CTX].manager
    return web.json_response({"peers": manager.peers_json(),
                              "addresses": len(manager.addrman),
                              "dialing": sorted(manager.dialing)})


async def connect_peer(request: web.Request) -> web.Response:
    _auth(request)
    spec = (await _body(request, models.ConnectPeer)).address
    try:
        expected, address = parse_peer_spec(spec)
    except (ValueError, BlockcoinError) as exc:
        raise ApiError(400, "bad-address", str(exc)) from None
    request.app[CTX].manager.connect(address, expected)
    return web.json_response({"address": address, "status": "dialling"}, status=202)


async def bans(request: web.Request) -> web.Response:
    return web.json_response({"bans": request.app[CTX].manager.bans.to_json()})


async def ban_network(request: web.Request) -> web.Response:
    """An operator's ban of an address or a whole subnet (peers from there are refused)."""
    _auth(request)
    body = await _body(request, models.BanRequest)
    text, seconds, reason = body.network, body.seconds, body.reason
    try:
        parse_network(text)
    except ValueError as exc:
        raise ApiError(400, "bad-network", str(exc)) from None
    bans = request.app[CTX].manager.bans
    bans.ban(reason=reason or "operator", seconds=seconds, ip=text)
    return web.json_response({"bans": bans.to_json()})


async def clear_bans(request: web.Request) -> web.Response:
    _auth(request)
    request.app[CTX].manager.bans.clear()
    return web.json_response({"bans": []})


async def mine(request: web.Request) -> web.Response:
    _auth(request)
    ctx = request.app[CTX]
    body = await _body(request, models.MineRequest)
    count = body.blocks
    recipient = _principal(body.to) if body.to is not None else None
    if ctx.core.params.name != "regtest":
        raise ApiError(400, "not-regtest", "mining on request is for regtest; run `node --mine`")
    mined = await ctx.mine(count, recipient)
    entry = ctx.core.chain.tip
    return web.json_response({"mined": [hash_hex(b.hash) for b in mined],
                              "height": entry.height, "hash": hash_hex(entry.hash)})


async def state_digest(request: web.Request) -> web.Response:
    core = request.app[CTX].core

    def work() -> tuple[str, int, int, bytes]:
        digest, keys = core.state_digest()
        return digest, keys, core.chain.tip.height, core.chain.tip.hash

    digest, keys, height, h = await core.run(work)
    return web.json_response({"digest": digest, "keys": keys, "height": height,
                              "hash": hash_hex(h)})


async def subscribe(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    ws = web.WebSocketResponse(heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "websocket-expected",
                       "open /subscribe as a WebSocket to receive new blocks and events")
    await ws.prepare(request)
    queue: asyncio.Queue[str | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
    ctx.subscribers.add(queue)

    async def reader() -> None:
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        queue.put_nowait(None) if not queue.full() else None

    task = asyncio.ensure_future(reader())
    try:
        while True:
            item = await queue.get()
            if item is None or ws.closed:
                break
            await ws.send_str(item)
    except (ConnectionError, RuntimeError):
        pass
    finally:
        ctx.subscribers.discard(queue)
        await stop_tasks(task)
        await ws.close()
    return ws


def publish(ctx: ApiContext, item: dict[str, Any]) -> None:
    """Queue ``item`` for every subscriber, serialised once for all of them."""
    text = json.dumps(item)
    for queue in list(ctx.subscribers):
        try:
            queue.put_nowait(text)
        except asyncio.QueueFull:  # a subscriber too slow to keep up is dropped
            ctx.subscribers.discard(queue)
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(None)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=render_metrics(request.app[CTX]),
                        headers={"Content-Type": METRICS_CONTENT_TYPE})


def make_app(ctx: ApiContext) -> web.Application:
    # the dashboard's handlers build on this module's, so they are added from here, last
    from chain.api.dashboard import add_routes

    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[CTX] = ctx
    watch = app[TIP_WATCH] = TipWatch()

    def on_block(action: str, blk: Block, height: int) -> None:
        watch.notify()
        if ctx.subscribers:
            publish(ctx, {"type": "block", "action": action, "height": height,
                          "hash": hash_hex(blk.hash), "events": len(blk.events)})

    def on_event(ev: SignedEvent, eid: bytes, source: object) -> None:
        if ctx.subscribers:
            publish(ctx, {"type": "event", **event_json(ev, ctx.core.params.chain_id, eid)})

    ctx.core.block_listeners.append(on_block)
    ctx.core.event_listeners.append(on_event)

    r = app.router
    r.add_get("/openapi.json", openapi)
    r.add_get("/status", status)
    r.add_get("/tip", tip)
    r.add_get("/headers", headers)
    r.add_get("/blocks/{ident}", block)
    r.add_get("/blocks/{ident}/raw", block_raw)
    r.add_get("/events/{id}", get_event)
    r.add_post("/events", submit_event)
    r.add_get("/mempool", mempool)
    r.add_get("/global/principals/{principal}", principal)
    r.add_get("/global/fragments/{path:.+}", fragments)
    r.add_get("/contracts", contracts)
    r.add_get("/contracts/{id}", contract)
    r.add_get("/peers", peers)
    r.add_post("/peers", connect_peer)
    r.add_get("/bans", bans)
    r.add_post("/bans", ban_network)
    r.add_delete("/bans", clear_bans)
    r.add_post("/mine", mine)
    r.add_get("/state/digest", state_digest)
    r.add_get("/subscribe", subscribe)
    r.add_get("/metrics", metrics)
    add_routes(app)

    async def close_subscribers(app: web.Application) -> None:
        watch.closing = True
        watch.notify()
        for queue in list(ctx.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    app.on_shutdown.append(close_subscribers)
    return app
