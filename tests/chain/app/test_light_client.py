"""The light client against a real node: it syncs headers over the peer protocol, gets
answers from the node's API and checks each proof against its own headers; a node that lies
(a proxy patching its answers) is refused with one line, whatever the lie."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chain.app.light import LightClient, LightClientError, ProvenQuery
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.net.http import ApiClient
from globaltree.errors import StateProofError
from globaltree.proofs import StateProof
from tests.framework.clirun import blockcoin
from tests.framework.lyingproxy import LyingProxy, Patch, honest
from tests.framework.netkit import NodeProc, import_blocks, init_node_dir, make_blocks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SENDER = KeyPair.development(5)  # make_blocks sends from development keys 5..9


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    base = tmp_path_factory.mktemp("light")
    import_blocks(init_node_dir(base / "n", 1), make_blocks(12, seed=4)).close()
    proc = NodeProc(base / "n", "--no-discover", name="n").start()
    try:
        yield proc
    finally:
        proc.stop()


def ask(light: LightClient, client: ApiClient,
        query: ProvenQuery) -> tuple[dict[str, Any] | None, StateProof]:
    answer, _, proof = client.call(light.ask(client.aio, query))
    return answer, proof


def synced(node: NodeProc, datadir: Path) -> LightClient:
    light = LightClient(datadir, REGTEST)
    asyncio.run(light.sync(node.p2p, timeout=60))
    return light


def test_headers_sync_and_honest_answers_verify(node: NodeProc, tmp_path: Path) -> None:
    light = synced(node, tmp_path)
    height, tip = node.tip()
    assert light.tip[0] == height and light.tip[1][::-1].hex() == tip
    again = LightClient(tmp_path, REGTEST)  # reloaded from its file, every header re-checked
    assert again.tip == light.tip
    with ApiClient(f"http://127.0.0.1:{node.api_port}") as client:
        answer, proof = ask(light, client, ProvenQuery.principal(SENDER.principal))
        assert answer is not None
        assert answer["balance"] == node.get(f"/global/principals/{SENDER.principal}")["balance"]
        assert proof.height == height
        absent, _ = ask(light, client, ProvenQuery.principal(KeyPair.generate().principal))
        assert absent is None
        path = SENDER.principal.root_path + "/nothing"
        assert ask(light, client, ProvenQuery.fragments(path))[0] == {"path": path,
                                                                     "fragments": {}}


def flip_value(path: str, status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    item = body["proof"]["items"][0]
    item["value"] = item["value"][:-2] + f"{int(item['value'][-2:], 16) ^ 1:02x}"
    return status, body


def test_a_lying_node_is_refused(node: NodeProc, tmp_path: Path) -> None:
    light = synced(node, tmp_path / "light")
    proxy = LyingProxy(f"http://127.0.0.1:{node.api_port}")
    nobody = KeyPair.generate().principal
    query = ProvenQuery.principal(SENDER.principal)
    try:
        with ApiClient(proxy.url) as client:
            honest_answer, _ = ask(light, client, query)
            recorded: dict[str, Any] = {}

            def record(path: str, status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                recorded.update(body)
                return status, body

            proxy.patch = record
            ask(light, client, query)
            lies: list[tuple[Patch, str]] = [
                # a richer balance than the proof shows
                (lambda _, s, b: (s, {**b, "balance": b["balance"] + 1}), "not what its proof"),
                # the proven value itself changed
                (flip_value, "does not lead to the header's state root"),
                # a proof naming a block this client never saw
                (lambda _, s, b: (s, {**b, "proof": {**b["proof"], "block": "11" * 32}}),
                 "not among this client's headers"),
                # "no such principal", proven with another key's absence
                (lambda _, s, b: (404, {"error": "not-found", "message": "none",
                                     "proof": _absence_of(node, str(nobody))}),
                 "does not cover"),
            ]
            for patch, why in lies:
                proxy.patch = patch
                with pytest.raises(StateProofError, match=why):
                    ask(light, client, query)
            # a stale answer: the one recorded earlier, replayed after the chain moved on
            node.post("/mine", {"blocks": 8})
            asyncio.run(light.sync(node.p2p, timeout=60))
            proxy.patch = lambda _, s, b: (s, dict(recorded))
            with pytest.raises(StateProofError, match="stale"):
                ask(light, client, query)
            proxy.patch = honest
            assert ask(light, client, query)[0] is not None
            assert honest_answer is not None
        # through the command line: one line, exit 1
        proxy.patch = lies[0][0]
        ran = blockcoin("light", "principal", str(SENDER.principal), "--api", proxy.url,
                        "--network", "regtest", "--datadir", str(tmp_path / "light"))
        assert ran.one_line_error and "refused the answer" in ran.err, ran
        proxy.patch = honest
        ran = blockcoin("light", "principal", str(SENDER.principal), "--api", proxy.url,
                        "--network", "regtest", "--datadir", str(tmp_path / "light"), "--json")
        assert ran.code == 0 and json.loads(ran.out)["principal"] == str(SENDER.principal)
    finally:
        proxy.close()


def _absence_of(node: NodeProc, principal: str) -> dict[str, Any]:
    try:
        node.get(f"/global/principals/{principal}?proof=1")
    except Exception as exc:  # the 404 carries the absence proof
        body = getattr(exc, "body", None)
        assert isinstance(body, dict)
        return dict(body["proof"])
    raise AssertionError("the principal exists")


def test_query_prove_checks_the_nodes_own_header(node: NodeProc) -> None:
    ran = blockcoin("query", "principal", str(SENDER.principal), "--prove", "--json",
                    "--network", "regtest", "--datadir", str(node.datadir))
    assert ran.code == 0, ran
    data = json.loads(ran.out)
    assert data["proof"]["height"] == node.tip()[0] and data["proof"]["items"]
    ran = blockcoin("query", "principal", str(KeyPair.generate().principal), "--prove",
                    "--network", "regtest", "--datadir", str(node.datadir))
    assert ran.one_line_error and "proven absent" in ran.err


def test_no_headers_yet_is_one_line(tmp_path: Path) -> None:
    ran = blockcoin("light", "principal", str(SENDER.principal), "--api", "http://127.0.0.1:9",
                    "--network", "regtest", "--datadir", str(tmp_path))
    assert ran.one_line_error and "no headers yet" in ran.err


def test_several_peers_one_answering_is_enough(node: NodeProc, tmp_path: Path) -> None:
    dead = "127.0.0.1:1"  # nothing listens there
    light = LightClient(tmp_path, REGTEST)
    with pytest.raises(LightClientError, match=f"cannot sync headers from {dead}"):
        asyncio.run(light.sync_from([dead], timeout=30))
    ran = blockcoin("light", "sync", "--peer", dead, "--peer", node.p2p, "--json",
                    "--network", "regtest", "--datadir", str(tmp_path))
    assert ran.code == 0, ran
    assert json.loads(ran.out)["height"] == node.tip()[0]
