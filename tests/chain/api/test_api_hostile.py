"""A hostile API client and a careless umask: every odd request is a 4xx, never a 500; the
``Host`` header must name the node; one serialisation per subscription message; files are
private whatever the umask; the command line keeps the token off other machines."""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from chain.api import server
from chain.net.http import ApiClient, RemoteApiRefused
from tests.framework.netkit import ROOT, NodeProc, init_node_dir, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    base = tmp_path_factory.mktemp("hostile-api")
    proc = NodeProc(init_node_dir(base / "n", 1), "--no-discover", name="n").start()
    try:
        yield proc
    finally:
        proc.stop()


def raw(node: NodeProc, method: str, path: str, body: bytes = b"",
        headers: dict[str, str | bytes] | None = None) -> tuple[int, dict[str, object]]:
    """One request with headers exactly as given (bytes go on the wire as they are)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}))
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body:
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Content-Type", "application/json")
        conn.endheaders(body or None)
        response = conn.getresponse()
        data = response.read()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {}
        return response.status, parsed if isinstance(parsed, dict) else {}
    finally:
        conn.close()


def token(node: NodeProc) -> str:
    return (node.datadir / "api.cookie").read_text().strip()


@pytest.mark.parametrize("path", [
    "/blocks/%C2%B2", "/blocks/%E2%91%A0", "/blocks/%C2%B2/raw", "/headers?count=%C2%B2",
    "/headers?start=%E2%91%A0", "/mempool?limit=%C2%B2", "/tip?after=%C2%B2",
    "/tip?wait=%D9%A1", "/tip?wait=1e3", "/tip?wait=nan", "/headers?count=99999999999999999999999",
])
def test_odd_numbers_are_a_400(node: NodeProc, path: str) -> None:
    status, body = raw(node, "GET", path)
    assert status == 400, (path, body)


def test_bodies_are_bounded_in_depth_and_size(node: NodeProc) -> None:
    auth = {"Authorization": f"Bearer {token(node)}"}
    deep = b"[" * 100_000 + b"]" * 100_000
    status, body = raw(node, "POST", "/mine", deep, auth)
    assert status == 400 and body["error"] == "bad-json"
    nested = b'{"blocks": 1, "to": ' + b"[" * 20 + b"1" + b"]" * 20 + b"}"  # valid, too deep
    assert raw(node, "POST", "/mine", nested, auth)[0] == 400
    big = b'{"event": "' + b"00" * (1 << 20) + b'"}'
    assert raw(node, "POST", "/events", big, auth)[0] == 413


def test_bad_headers_are_refused_not_crashed_on(node: NodeProc) -> None:
    before = node.get("/tip")
    for value in (b"Bearer \xff\xfe\xfd", b"Bearer " + token(node).encode() + b"\xc3",
                  b"\xe2\x82"):
        status, _ = raw(node, "POST", "/mine", b'{"blocks": 1}', {"Authorization": value})
        assert status == 401, value
    assert node.get("/tip") == before


@pytest.mark.parametrize("host,expected", [
    ("evil.example", 403), ("evil.example:28634", 403), ("127.0.0.1.nip.io", 403),
    (b"\xff", 403), ("localhost", 200), ("127.0.0.1:1", 200), ("[::1]:5", 200),
])
def test_reads_answer_only_to_this_nodes_names(node: NodeProc, host: str | bytes,
                                               expected: int) -> None:
    status, body = raw(node, "GET", "/status", headers={"Host": host})
    assert status == expected, body


def test_a_subscription_message_is_serialised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    calls = []
    real = json.dumps

    def counting(obj: object, **kw: object) -> str:
        calls.append(obj)
        return real(obj, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(server.json, "dumps", counting)
    queues: set[asyncio.Queue[str | None]] = {asyncio.Queue(10) for _ in range(500)}
    ctx = SimpleNamespace(subscribers=set(queues))
    server.publish(ctx, {"type": "event", "id": "ab"})  # type: ignore[arg-type]
    assert len(calls) == 1
    assert all(q.get_nowait() == '{"type": "event", "id": "ab"}' for q in queues)


def test_files_are_private_under_umask_000(tmp_path: Path) -> None:
    datadir = tmp_path / "loose"
    old = os.umask(0)
    try:
        subprocess.run([sys.executable, "-m", "chain", "init", "-n", "regtest", "-d",
                        str(datadir)], check=True, cwd=ROOT, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
        node = NodeProc(datadir, "--no-discover", name="loose")
        with running(node):
            node.start()
            node.post("/mine", {"blocks": 2})
            found = {p.relative_to(datadir).as_posix(): stat.S_IMODE(p.lstat().st_mode)
                     for p in [datadir, *datadir.rglob("*")]}
    finally:
        os.umask(old)
    assert {"node.json", "api.cookie", "config.toml", "wallet.key", "chain"} <= set(found)
    loose = {name: oct(mode) for name, mode in found.items()
             if mode != (0o700 if (datadir / name).is_dir() else 0o600)}
    assert not loose


def test_the_cli_sends_the_token_only_to_a_loopback_api(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    datadir = init_node_dir(tmp_path / "d", 1)
    (datadir / "api.cookie").write_text("secret")
    for url in ("http://10.1.2.3:28634", "http://evil.example:80"):
        (datadir / "node.json").write_text(json.dumps({"api": url}))
        with pytest.raises(RemoteApiRefused):
            ApiClient.for_datadir(datadir)
    (datadir / "node.json").write_text(json.dumps({"api": "http://127.0.0.1:1"}))
    assert ApiClient.for_datadir(datadir).token == "secret"
    monkeypatch.setenv("BLOCKCOIN_API_REMOTE", "1")
    (datadir / "node.json").write_text(json.dumps({"api": "http://10.1.2.3:28634"}))
    assert ApiClient.for_datadir(datadir).token == "secret"



def test_an_operator_bans_a_subnet(node: NodeProc) -> None:
    auth = {"Authorization": f"Bearer {token(node)}"}
    body = json.dumps({"network": "198.51.100.0/24", "seconds": 60, "reason": "spam"}).encode()
    status, answer = raw(node, "POST", "/bans", body, auth)
    assert status == 200 and "198.51.100.0/24" in {b["network"] for b in answer["bans"]}
    bad = json.dumps({"network": "198.51.100.0/99"}).encode()
    assert raw(node, "POST", "/bans", bad, auth)[0] == 400
    assert raw(node, "POST", "/bans", body)[0] == 401
