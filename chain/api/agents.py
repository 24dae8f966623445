"""The dashboard's actions that the storage agents carry out: store a file (the owner agent,
``blockcoin store serve``) and change what the host sells (the host agent, ``blockcoin host
start``), both running on this node's data directory.

The agents are processes of their own, a layer above this API, holding state and keys the node
does not (the owner's local blocktree, the host's fragments and live policy), so the node does
not do their work: it checks the login, validates the request with the same models the agents
use (:mod:`chain.net.control`), and forwards the bytes to the agent's control socket and its
answer back. A put's file is streamed through, never held whole. No agent there: 503, naming the
command that runs one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ValidationError

from chain.api.server import CTX, ApiError, _auth, _body
from chain.net import control

PUT_TIMEOUT = 1800.0  # upload, seal, encode and offer the largest file on a slow disk
AGENT_TIMEOUT = 30.0


async def _forward(request: web.Request, agent: control.Agent, method: str, target: str,
                   body: bytes | AsyncIterator[bytes] | None = None,
                   timeout: float = AGENT_TIMEOUT) -> web.Response:
    headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else {}
    try:
        answer = await control.forward(agent, request.app[CTX].datadir, method, target,
                                       body=body, headers=headers, timeout=timeout)
    except control.AgentAbsent as exc:
        raise ApiError(503, exc.code, str(exc)) from None
    except TimeoutError:
        raise ApiError(504, "agent-timeout", f"the {agent.name} agent did not answer within "
                       f"{timeout:g} s") from None
    except aiohttp.ClientError as exc:
        if isinstance(exc.__cause__, ApiError):  # the upload, cut off past the cap
            raise exc.__cause__ from None
        raise ApiError(502, "agent-failed", f"the {agent.name} agent hung up: {exc}") from None
    return web.Response(body=answer.body, status=answer.status,
                        headers={"Content-Type": answer.content_type})


def _json(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_unset=True).encode()


async def quote(request: web.Request) -> web.Response:
    _auth(request)
    asked = await _body(request, control.QuoteRequest)
    return await _forward(request, control.OWNER, "POST", "/quote", _json(asked))


async def _upload(request: web.Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives, cut off past the cap (a body without a length is
    counted here)."""
    size = 0
    async for chunk in request.content.iter_chunked(control.UPLOAD_CHUNK):
        size += len(chunk)
        if size > control.MAX_UPLOAD:
            raise ApiError(413, "too-large", _too_large())
        yield chunk


def _too_large() -> str:
    return (f"the dashboard stores files up to {control.MAX_UPLOAD >> 20} MiB; use "
            "blockcoin store put")


async def put(request: web.Request) -> web.Response:
    _auth(request)
    try:
        terms = control.PutQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "query"
        raise ApiError(400, "bad-request", f"{where}: {first['msg']}") from None
    if (request.content_length or 0) > control.MAX_UPLOAD:
        raise ApiError(413, "too-large", _too_large())
    target = "/put?" + urlencode(terms.model_dump(exclude_unset=True))
    return await _forward(request, control.OWNER, "POST", target, _upload(request), PUT_TIMEOUT)


async def get_policy(request: web.Request) -> web.Response:
    _auth(request)  # it names where the host's pay goes and how much it risks
    return await _forward(request, control.HOST, "GET", "/policy")


async def set_policy(request: web.Request) -> web.Response:
    _auth(request)
    update = await _body(request, control.PolicyUpdate)
    return await _forward(request, control.HOST, "POST", "/policy", _json(update))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/store/quote", quote)
    r.add_post("/store/put", put)
    r.add_get("/host/policy", get_policy)
    r.add_post("/host/policy", set_policy)
