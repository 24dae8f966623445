"""The agents' side of the local control API (:mod:`chain.net.control`): what the owner agent
and the host agent do when the node's dashboard asks.

The owner quotes and stores files: a put arrives as the file's bytes, streamed to a temporary
file in ``DATADIR/store/uploads`` (never whole in memory, capped at
:data:`~chain.net.control.MAX_UPLOAD`), is priced exactly as ``blockcoin store put`` prices it,
refused if that costs more than the user confirmed, then sealed and offered by the running
agent, which goes on placing and repairing it as it does every block it keeps. The host shows
and changes its policy; a change applies to the next offers at once and is saved to
``host/policy.json``, so a restart keeps it.

Errors are the node API's JSON documents ``{error, message}``, so the node can pass them on
unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from chain.core.errors import BlockcoinError
from chain.core.principal import Principal
from chain.core.units import parse_amount, parse_size
from chain.net import control
from storage_market.cost import put_cost
from storage_market.crypto import full_path, valid_path
from storage_market.host import POLICY_FIELDS, HostAgent, HostPolicy
from storage_market.owner import OwnerAgent, StoreOptions

M = TypeVar("M", bound=BaseModel)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        return await handler(request)
    except Refused as exc:
        status, code, message = exc.status, exc.code, str(exc)
    except BlockcoinError as exc:
        status, code, message = 400, exc.code, str(exc)
    return web.json_response({"error": code, "message": message}, status=status)


def _valid(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise Refused(400, "bad-request", f"{where}: {first['msg']}") from None


async def _json(request: web.Request, model: type[M]) -> M:
    try:
        data = await request.json()
    except ValueError:
        raise Refused(400, "bad-json", "the body is not valid JSON") from None
    return _valid(model, data)


# --- the owner -------------------------------------------------------------------------------


def _priced(owner: OwnerAgent, terms: control.PutTerms,
            size: int) -> tuple[StoreOptions, control.Quote]:
    """The options a put runs with and what it costs: the owner's defaults for what the terms
    do not name, the path resolved in the owner's tree."""
    path = valid_path(full_path(owner.signer.owner.root_path, terms.path))
    options = dataclasses.replace(
        owner.defaults, k=terms.k, n=terms.n, price=parse_amount(terms.price),
        collateral=parse_amount(terms.collateral, allow_zero=True), periods=terms.periods)
    options.check()
    params = owner.chain.params
    cost = put_cost(owner.key, params, path, size, options.k, options.n, options.price,
                    options.collateral, options.periods, options.fee_rate)
    return options, control.Quote(
        path=path, size=size, k=options.k, n=options.n, price=options.price,
        collateral=options.collateral, periods=options.periods,
        period_blocks=options.period_blocks or params.storage_period_blocks, escrow=cost.escrow,
        fees=cost.fees, total=cost.total)


async def _receive(request: web.Request, into: Path) -> tuple[int, str]:
    """Stream the body to ``into``: its size and SHA-256 (refused past the cap)."""
    digest = hashlib.sha256()
    size = 0
    with into.open("wb") as out:
        try:
            async for chunk in request.content.iter_chunked(control.UPLOAD_CHUNK):
                size += len(chunk)
                if size > control.MAX_UPLOAD:
                    raise Refused(413, "too-large", f"the dashboard stores files up to "
                                  f"{control.MAX_UPLOAD >> 20} MiB; use blockcoin store put")
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        except ConnectionResetError:  # the node stopped forwarding (its caller went away)
            raise Refused(400, "upload-cut", "the upload was cut off") from None
    return size, digest.hexdigest()


def owner_control(owner: OwnerAgent) -> web.Application:
    uploads = owner.root / "uploads"
    for stale in uploads.glob("*.part"):  # an agent stopped mid-upload: none is in use now
        stale.unlink(missing_ok=True)

    async def quote(request: web.Request) -> web.Response:
        asked = await _json(request, control.QuoteRequest)
        return web.json_response(_priced(owner, asked, asked.size)[1].model_dump())

    async def put(request: web.Request) -> web.Response:
        terms = _valid(control.PutQuery, dict(request.query))
        _priced(owner, terms, 0)  # bad terms are refused before the upload
        uploads.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=uploads, suffix=".part")
        os.close(fd)
        tmp = Path(name)
        try:
            size, digest = await _receive(request, tmp)
            options, cost = _priced(owner, terms, size)
            if cost.total > terms.max_cost:
                raise Refused(409, "cost-changed", f"this put costs {cost.total}, more than the "
                              f"{terms.max_cost} confirmed: ask for a quote again")
            before = owner.entries.get(cost.path)
            with tmp.open("rb") as data:
                # the bytes' hash names the source: the same file put again after an
                # interruption carries on with the offers already out
                entry = await owner.put(cost.path, data, options, source=f"sha256:{digest}")
        finally:
            tmp.unlink(missing_ok=True)
        answer = control.PutAnswer(
            **cost.model_dump(), version=entry.version.hex(), fragment_size=entry.fragment_size,
            offers=[s.offer_id.hex() for s in entry.slots if s.offer_id],
            resumed=entry is before)
        return web.json_response(answer.model_dump())

    app = web.Application(middlewares=[_errors])
    app.router.add_post("/quote", quote)
    app.router.add_post("/put", put)
    return app


# --- the host --------------------------------------------------------------------------------


def _shown(policy: HostPolicy) -> dict[str, object]:
    return control.HostPolicy.model_validate(policy.to_json()).model_dump()


def changed_policy(current: HostPolicy, update: control.PolicyUpdate) -> HostPolicy:
    """``current`` with the fields ``update`` names replaced (parsed as the command line parses
    them)."""
    given = update.model_fields_set
    new = dataclasses.replace(current)
    if update.capacity is not None:
        new.capacity = parse_size(update.capacity)
    if update.min_price is not None:
        new.min_price = parse_amount(update.min_price)
    if "max_collateral" in given:
        cap = update.max_collateral
        new.max_collateral = parse_amount(cap, allow_zero=True) if cap is not None else None
    if "payout" in given:
        new.payout = Principal.parse(update.payout) if update.payout is not None else None
    return new


def host_control(agent: HostAgent) -> web.Application:
    async def get_policy(request: web.Request) -> web.Response:
        return web.json_response(_shown(agent.policy))

    async def set_policy(request: web.Request) -> web.Response:
        update = await _json(request, control.PolicyUpdate)
        agent.set_policy(changed_policy(agent.policy, update),
                         update.model_fields_set & set(POLICY_FIELDS))
        return web.json_response(_shown(agent.policy))

    app = web.Application(middlewares=[_errors])
    app.router.add_get("/policy", get_policy)
    app.router.add_post("/policy", set_policy)
    return app
