"""The web dashboard the node serves at ``/``: the page and its assets, the login that turns the
cookie file's token into a session, the JSON the views are drawn from, and the actions.

Reads are open, like the rest of the API. The page learns the token only from a login form the
user pastes it into; ``POST /session`` answers with an HttpOnly, SameSite=Strict session cookie,
so the token never sits in the page's script, storage or address. Actions (``/wallet/send``,
``/contracts/{id}/release``, ``/contracts/{id}/extend``, the storage agents' put and host policy
of :mod:`chain.api.agents`, and every write the API already had) take that session, and the
header :data:`~chain.api.auth.SESSION_HEADER` no other site's page can send, or the bearer
token.

The views' figures come from the chain: a host's record and contracts, an owner's contracts
grouped by path, and the series of :mod:`chain.api.stats`. Only what the chain cannot know comes
from the data directory: the node's own host key (which host is "this node's") and the capacity
its host agent sells (``host/policy.json``), and the disk's free space.
"""

from __future__ import annotations

import json
import shutil
import time as _time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from chain.api import models
from chain.api.auth import SESSION_COOKIE, check_token
from chain.api.server import (
    CTX,
    ApiError,
    _auth,
    _block_hash,
    _body,
    _event_id,
    _int_param,
    _principal,
    in_session,
)
from chain.api.stats import Stats
from chain.core.errors import BlockcoinError
from chain.core.events import (
    Body,
    FragmentExtended,
    FragmentReleased,
    Transfer,
    extension_message,
)
from chain.core.header import hash_hex
from chain.core.keys import KeyPair, verify
from chain.core.paths import check_path
from chain.core.principal import Principal
from chain.core.units import parse_amount
from chain.net import control
from chain.node.wallet import DEFAULT_FEE
from globaltree.records import Contract, ContractState

UI_DIR = Path(__file__).with_name("ui")
ASSETS = {  # name -> (file under ui/, content type): nothing else there is served
    "app.js": ("app.js", "text/javascript"), "views.js": ("views.js", "text/javascript"),
    "charts.js": ("charts.js", "text/javascript"), "style.css": ("style.css", "text/css"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
ALERT_DISK_FREE = 0.10  # a disk with less than this share free is "nearly full"
ALERT_CAPACITY_USED = 0.90

STATS: web.AppKey[Stats] = web.AppKey("stats", Stats)


def _asset(name: str) -> bytes:
    path = UI_DIR / name
    try:
        return path.read_bytes()
    except OSError:
        raise ApiError(404, "not-built",
                       f"dashboard asset {name} is missing: run `make ui` (it installs the "
                       "charting library from the npm registry)") from None


async def index(request: web.Request) -> web.Response:
    return web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = ASSETS.get(name)
    if found is None:
        raise ApiError(404, "not-found", f"no dashboard asset {name!r}")
    response = web.Response(body=_asset(found[0]), content_type=found[1], charset="utf-8",
                            headers={"Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff"})
    response.enable_compression()  # when the browser accepts it: the chart library halves
    return response


# --- login ---------------------------------------------------------------------------------


async def session_status(request: web.Request) -> web.Response:
    return web.json_response({"logged_in": in_session(request)})


async def login(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    token = (await _body(request, models.Login)).token
    if not check_token(f"Bearer {token.strip()}", ctx.token):
        raise ApiError(401, "unauthorized", "that is not this node's token (the content of "
                       "api.cookie in its data directory)")
    response = web.json_response({"logged_in": True})
    response.set_cookie(SESSION_COOKIE, ctx.sessions.open(_time.time()), httponly=True,
                        samesite="Strict", path="/", max_age=int(ctx.sessions.seconds))
    return response


async def logout(request: web.Request) -> web.Response:
    request.app[CTX].sessions.close(request.cookies.get(SESSION_COOKIE))
    response = web.json_response({"logged_in": False})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# --- views ---------------------------------------------------------------------------------


def node_host(datadir: Path) -> Principal | None:
    """The principal of the host agent kept in the node's data directory, if there is one."""
    path = datadir / "host" / "host.key"
    if not path.exists():
        return None
    try:
        return KeyPair.principal_of(path)
    except (OSError, BlockcoinError):
        return None


def _capacity(datadir: Path) -> int | None:
    try:
        raw = json.loads((datadir / "host" / "policy.json").read_text())
        return int(raw["capacity"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


async def node_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    core = ctx.core
    host = node_host(ctx.datadir)
    tip = core.chain.tip
    return web.json_response({
        "network": core.params.name, "wallet": str(core.principal),
        "host": str(host) if host else None, "height": tip.height, "hash": hash_hex(tip.hash),
        "syncing": core.syncing, "best_header_height": core.tree.best.height,
        "period_blocks": core.params.storage_period_blocks, "logged_in": in_session(request)})


def _window(c: Contract, tip: int) -> dict[str, Any]:
    """Where an active contract stands: the period the next block falls in, the last block
    that can carry its proof, and whether it is proven already."""
    if c.state != ContractState.ACTIVE:
        return {"period": None, "window_closes": None, "blocks_left": None,
                "proven_this_period": None}
    period = c.window_of(tip + 1)
    closes = c.opening_height(period + 1)
    return {"period": period, "window_closes": closes, "blocks_left": closes - tip,
            "proven_this_period": c.last_proven >= period}


async def host_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    core = ctx.core
    p = _principal(request.match_info["principal"])
    own = node_host(ctx.datadir) == p

    def work() -> dict[str, Any]:
        tree, tip = core.chain.tree, core.chain.tip.height
        return {"record": tree.host_record(p), "account": tree.principal(p), "tip": tip,
                "contracts": [(c.to_json(), _window(c, tip)) for c in tree.contracts_by_host(p)]}

    found = await core.run(work)
    record, tip = found["record"], found["tip"]
    contracts = [{**c, **w} for c, w in found["contracts"]]
    alerts: list[dict[str, str]] = []
    for c in contracts:
        left = c["blocks_left"]
        if left is not None and not c["proven_this_period"] and \
                left <= max(1, c["period_blocks"] // 4):
            alerts.append({"level": "warning", "code": "proof-window-closing",
                           "message": f"contract {c['id'][:16]}: period {c['period']} is unproven "
                                      f"and its window closes in {left} block(s)"})
    if core.syncing or core.tree.best.height > tip:
        alerts.append({"level": "warning", "code": "not-synced",
                       "message": f"this node is at block {tip} of {core.tree.best.height}: "
                                  "proofs wait until it catches up"})
    used = record.bytes_stored if record is not None else 0
    capacity = _capacity(ctx.datadir) if own else None
    disk = None
    if own:
        usage = shutil.disk_usage(ctx.datadir)
        disk = {"total": usage.total, "free": usage.free}
        if usage.free < ALERT_DISK_FREE * usage.total:
            alerts.append({"level": "warning", "code": "disk-nearly-full",
                           "message": f"the data directory's disk has {usage.free} bytes free "
                                      f"of {usage.total}"})
    if capacity and used >= ALERT_CAPACITY_USED * capacity:
        alerts.append({"level": "warning", "code": "capacity-nearly-full",
                       "message": f"{used} of the {capacity} bytes offered are under contract"})
    account = found["account"]
    return web.json_response({
        "principal": str(p), "node_host": own, "tip": tip,
        "balance": account.balance if account is not None else 0,
        "record": record.to_json() if record is not None else None,
        "capacity": capacity, "used": used,
        "free": capacity - used if capacity is not None else None, "disk": disk,
        "contracts": contracts, "alerts": alerts})


def _health(held: int, k: int, n: int) -> str:
    if held >= n:
        return "healthy"
    return "degraded" if held >= k else "at-risk"


async def owner_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    core = ctx.core
    p = _principal(request.match_info["principal"])
    host = node_host(ctx.datadir)  # it may pay its earnings to this owner

    def work() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        tree = core.chain.tree
        hosted = [c.to_json() for h in {p, host} if h is not None for c in tree.contracts_by_host(h)]
        return [c.to_json() for c in tree.contracts_by_owner(p)], hosted, core.chain.tip.height

    owned, hosted, tip = await core.run(work)
    by_path: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in owned:
        by_path[c["path"]].append(c)
    files, repairs = [], []
    for path, cs in sorted(by_path.items()):
        k, n = cs[0]["k"], cs[0]["n"]
        held = len({c["index"] for c in cs if c["state"] == "active"})
        files.append({"path": path, "k": k, "n": n, "held": held,
                      "health": _health(held, k, n) if any(
                          c["state"] in ("active", "offered") for c in cs) else "ended",
                      "contracts": len(cs),
                      "liability_per_period": sum(c["price"] for c in cs if c["state"] == "active"),
                      "paid_total": sum(c["paid_total"] for c in cs),
                      "missed_periods": sum(c["missed_periods"] for c in cs)})
        by_index: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for c in cs:
            by_index[c["index"]].append(c)
        for index, placed in sorted(by_index.items()):
            placed.sort(key=lambda c: c["offer_height"])
            for before, after in zip(placed, placed[1:], strict=False):
                repairs.append({"path": path, "index": index, "height": after["offer_height"],
                                "replaced": before["id"], "replaced_state": before["state"],
                                "contract": after["id"], "host": after["host"]})
    earning = [c for c in hosted if c["state"] == "active" and (c["payout"] or c["host"]) == str(p)]
    return web.json_response({
        "principal": str(p), "tip": tip, "files": files, "repairs": repairs,
        "liability_per_period": sum(f["liability_per_period"] for f in files),
        "host_earnings_per_period": sum(c["price"] for c in earning),
        "paying_hosts": sorted({str(c["host"]) for c in earning}),
        "contracts": owned,
        "agent_running": (await control.running(control.OWNER, ctx.datadir)
                          if p == core.principal else None)})


async def _stats(request: web.Request, kind: str, p: Principal | None) -> web.Response:
    ctx = request.app[CTX]
    period = ctx.core.params.storage_period_blocks
    bucket = _int_param(request, "bucket", 0, 0, 1 << 20) or None
    if bucket is not None and bucket % period:
        raise ApiError(400, "bad-parameter", f"bucket is a whole number of periods ({period} "
                       "blocks each)")
    found = request.app[STATS]
    data = await ctx.core.run(found.series, ctx.core.chain, kind, p, bucket)
    return web.json_response(data)


async def chain_stats(request: web.Request) -> web.Response:
    return await _stats(request, "chain", None)


async def host_stats(request: web.Request) -> web.Response:
    return await _stats(request, "host", _principal(request.match_info["principal"]))


async def owner_stats(request: web.Request) -> web.Response:
    return await _stats(request, "owner", _principal(request.match_info["principal"]))


async def search(request: web.Request) -> web.Response:
    """What an id names: a block (height or hash), a contract (its offer's event id) or another
    event, a principal, or a path (``blk.../name``); the dashboard opens the matching view."""
    ctx = request.app[CTX]
    q = request.query.get("q", "").strip()
    if not q or len(q) > 1024:
        raise ApiError(400, "bad-parameter", "q is a height, a hash, a principal or a path")
    chain = ctx.core.chain
    if q.isascii() and q.isdigit() and len(q) <= 12:
        _block_hash(ctx, q)  # 404 past the tip
        return web.json_response({"kind": "block", "id": q})
    if len(q) == 64:
        raw = _event_id(q.lower())
        if chain.index.get(_block_hash(ctx, q.lower())) is not None:
            return web.json_response({"kind": "block", "id": q.lower()})
        if chain.tree.contract(raw) is not None:  # named by its offer's event id
            return web.json_response({"kind": "contract", "id": q.lower()})
        if chain.store.event_location(raw) is not None or raw in ctx.core.mempool.entries:
            return web.json_response({"kind": "event", "id": q.lower()})
        raise ApiError(404, "not-found", "no block, event or contract has that hash")
    if "/" in q.strip("/"):
        path = "/" + q.strip("/")
        try:
            check_path(path)
        except BlockcoinError as exc:
            raise ApiError(400, "bad-path", str(exc)) from None
        return web.json_response({"kind": "path", "id": path})
    return web.json_response({"kind": "principal", "id": str(_principal(q.strip("/")))})


# --- actions -------------------------------------------------------------------------------


async def _submit(request: web.Request, make: Callable[[], Body], fee: int) -> web.Response:
    """Sign ``make()`` with the node's wallet (on the chain thread, so its nonce follows the
    pool) and hand it to the mempool and the peers."""
    try:
        _, eid = await request.app[CTX].core.submit_own(make(), fee)
    except BlockcoinError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    return web.json_response({"id": eid.hex(), "status": "pending"}, status=202)


def _fee(fee: str | None) -> int:
    return parse_amount(fee or f"{DEFAULT_FEE}sat", allow_zero=True)


async def send(request: web.Request) -> web.Response:
    _auth(request)
    body = await _body(request, models.SendRequest)
    recipient, value, fee = _principal(body.to), parse_amount(body.amount), _fee(body.fee)
    return await _submit(request, lambda: Transfer(recipient, value), fee)


async def _owned(request: web.Request) -> Contract:
    ctx = request.app[CTX]
    cid = _event_id(request.match_info["id"])
    found = await ctx.core.run(ctx.core.chain.tree.contract, cid)
    if found is None:
        raise ApiError(404, "not-found", "no such contract")
    if found.owner != ctx.core.principal:
        raise ApiError(403, "not-owner", f"contract {cid.hex()[:16]} belongs to {found.owner}, "
                       f"not to this node's wallet {ctx.core.principal}")
    return found


async def release(request: web.Request) -> web.Response:
    _auth(request)
    fee = _fee((await _body(request, models.ReleaseRequest, required=False)).fee)
    found = await _owned(request)
    return await _submit(request, lambda: FragmentReleased(found.id), fee)


async def extend(request: web.Request) -> web.Response:
    _auth(request)
    ctx = request.app[CTX]
    body = await _body(request, models.ExtendRequest)
    periods, fee = body.periods, _fee(body.fee)
    found = await _owned(request)
    if found.state != ContractState.ACTIVE or found.host is None or found.host_key is None:
        raise ApiError(400, "not-active", f"contract is {found.state.name.lower()}: only an "
                       "active contract is extended")
    consent = ctx.consent
    if consent is None:
        raise ApiError(400, "unavailable", "this node cannot reach hosts to ask their consent")
    total = found.periods + periods
    acct = await ctx.core.run(ctx.core.chain.tree.principal, found.host)
    try:
        signature = await consent(acct.address if acct else None, found.host, found.id, total)
    except (BlockcoinError, OSError, TimeoutError) as exc:
        raise ApiError(400, "no-consent", f"the host did not consent: {exc}") from None
    if not verify(found.host_key, extension_message(ctx.core.params.chain_id, found.id, total),
                  signature):
        raise ApiError(400, "no-consent", "the host's consent does not verify")
    return await _submit(request, lambda: FragmentExtended(found.id, total, signature), fee)


def add_routes(app: web.Application) -> None:
    from chain.api import agents

    app[STATS] = Stats()
    agents.add_routes(app)
    r = app.router
    r.add_get("/", index)
    r.add_get("/ui/{name}", asset)
    r.add_get("/session", session_status)
    r.add_post("/session", login)
    r.add_delete("/session", logout)
    r.add_get("/views/node", node_view)
    r.add_get("/views/hosts/{principal}", host_view)
    r.add_get("/views/owners/{principal}", owner_view)
    r.add_get("/stats/chain", chain_stats)
    r.add_get("/stats/hosts/{principal}", host_stats)
    r.add_get("/stats/owners/{principal}", owner_stats)
    r.add_get("/search", search)
    r.add_post("/wallet/send", send)
    r.add_post("/contracts/{id}/release", release)
    r.add_post("/contracts/{id}/extend", extend)


