"""The node's forwarding of dashboard actions to the storage agents' control sockets, in one
process: stand-in agents on real Unix sockets (served by :func:`chain.net.control.serving`, as
the agents serve theirs) record what reaches them.

Without the token nothing reaches an agent; with no agent (no socket, or a socket left by a
dead one) the answer is 503 naming the command to run; a put's bytes arrive unchanged, streamed,
and a file past the cap is refused before or while it streams; the agent's answer, error or
not, comes back as it was."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chain.api.server import ApiContext, make_app
from chain.net import control

pytestmark = pytest.mark.timeout(60)

TOKEN = "ab" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUOTE = {"path": "docs/a.txt", "size": 10, "k": 1, "n": 2}


class Recorder:
    """A stand-in agent: answers each request with ``reply`` and keeps what it received."""

    def __init__(self, reply: tuple[int, dict[str, Any]] = (200, {"ok": True})) -> None:
        self.reply = reply
        self.seen: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            digest, size = hashlib.sha256(), 0
            async for chunk in request.content.iter_chunked(1 << 16):
                digest.update(chunk)
                size += len(chunk)
            self.seen.append({"method": request.method, "path": request.path,
                              "query": dict(request.query), "size": size,
                              "sha256": digest.hexdigest()})
            return web.json_response(self.reply[1], status=self.reply[0])

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    for agent in (control.OWNER, control.HOST):
        (tmp_path / agent.directory).mkdir(mode=0o700)
    core = SimpleNamespace(block_listeners=[], event_listeners=[])
    ctx = ApiContext(core, None, TOKEN, tmp_path, None)  # type: ignore[arg-type]
    async with TestClient(TestServer(make_app(ctx))) as client:
        yield client


async def test_no_agent_is_a_503_naming_the_command(node: TestClient[web.Request, web.Application],
                                                    tmp_path: Path) -> None:
    for method, path, kwargs, command in (
            ("POST", "/store/quote", {"json": QUOTE}, "blockcoin store serve"),
            ("POST", "/store/put?path=a&max_cost=9", {"data": b"x"}, "blockcoin store serve"),
            ("GET", "/host/policy", {}, "blockcoin host start"),
            ("POST", "/host/policy", {"json": {"min_price": "5sat"}}, "blockcoin host start")):
        response = await node.request(method, path, headers=AUTH, **kwargs)
        body = await response.json()
        assert response.status == 503, body
        assert body["error"] == "agent-not-running" and body["message"].endswith(f"run {command}")
    # a socket left behind by an agent that died: nobody listens on it
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(control.OWNER.socket(tmp_path)))
    dead.close()
    response = await node.post("/store/quote", json=QUOTE, headers=AUTH)
    assert response.status == 503


async def test_nothing_reaches_an_agent_without_the_token(
        node: TestClient[web.Request, web.Application], tmp_path: Path) -> None:
    owner, host = Recorder(), Recorder()
    async with control.serving(owner.app(), control.OWNER, tmp_path), \
            control.serving(host.app(), control.HOST, tmp_path):
        for headers in ({}, {"Authorization": "Bearer " + "0" * 64},
                        {"X-Blockcoin-Dashboard": "1"}):
            for method, path, kwargs in (
                    ("POST", "/store/quote", {"json": QUOTE}),
                    ("POST", "/store/put?path=a&max_cost=9", {"data": b"x" * 100}),
                    ("GET", "/host/policy", {}),
                    ("POST", "/host/policy", {"json": {"min_price": "5sat"}})):
                response = await node.request(method, path, headers=headers, **kwargs)
                assert response.status == 401, (method, path, headers)
    assert owner.seen == host.seen == []


async def test_requests_and_answers_pass_through(node: TestClient[web.Request, web.Application],
                                                 tmp_path: Path) -> None:
    owner = Recorder((409, {"error": "cost-changed", "message": "more than confirmed"}))
    host = Recorder((200, {"capacity": 5, "min_price": 1, "max_collateral": None,
                           "payout": None}))
    data = os.urandom(3 << 20)
    async with control.serving(owner.app(), control.OWNER, tmp_path) as sock, \
            control.serving(host.app(), control.HOST, tmp_path):
        assert sock is not None and stat.S_IMODE(sock.stat().st_mode) == 0o600
        response = await node.post("/store/put?path=docs/a&k=1&n=2&max_cost=77", data=data,
                                   headers=AUTH)
        assert response.status == 409  # the agent's answer, as it gave it
        assert (await response.json())["error"] == "cost-changed"
        assert owner.seen[-1] == {"method": "POST", "path": "/put",
                                  "query": {"path": "docs/a", "k": "1", "n": "2",
                                            "max_cost": "77"},
                                  "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        response = await node.post("/host/policy", json={"max_collateral": None}, headers=AUTH)
        assert response.status == 200 and (await response.json())["capacity"] == 5
        # the node validates first: a bad request never reaches the agent
        for method, path, kwargs in (
                ("POST", "/host/policy", {"json": {"capacity": 5}}),
                ("POST", "/host/policy", {"json": {"payout": "nobody"}}),
                ("POST", "/store/quote", {"json": {**QUOTE, "k": 0}}),
                ("POST", "/store/put?path=a", {"data": b"x"}),
                ("POST", "/store/put?path=a&max_cost=1&extra=1", {"data": b"x"})):
            response = await node.request(method, path, headers=AUTH, **kwargs)
            assert response.status == 400, (path, await response.text())
    assert len(owner.seen) == 1 and len(host.seen) == 1
    assert not control.OWNER.socket(tmp_path).exists()  # removed when the agent stops


async def test_a_file_past_the_cap_is_refused(node: TestClient[web.Request, web.Application],
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "MAX_UPLOAD", 1 << 20)
    owner = Recorder()
    async with control.serving(owner.app(), control.OWNER, tmp_path):
        response = await node.post("/store/put?path=a&max_cost=1", data=b"x" * (2 << 20),
                                   headers=AUTH)
        assert response.status == 413  # by its length, before anything is forwarded
        assert "blockcoin store put" in (await response.json())["message"]
        assert owner.seen == []

        async def chunks() -> AsyncIterator[bytes]:  # no length given: counted as it streams
            for _ in range(3):
                yield b"y" * (1 << 19)

        response = await node.post("/store/put?path=a&max_cost=1", data=chunks(), headers=AUTH)
        assert response.status == 413


async def test_an_agent_on_a_directory_too_deep_for_a_socket_runs_without_one(
        tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    (deep / control.HOST.directory).mkdir(parents=True)
    async with control.serving(Recorder().app(), control.HOST, deep) as sock:
        assert sock is None  # logged; the agent itself goes on
        with pytest.raises(control.AgentAbsent):
            await control.forward(control.HOST, deep, "GET", "/policy")
