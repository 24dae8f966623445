"""The dashboard's put, host policy and extend, end to end through a node with real agent
processes on its data directory (:mod:`tests.framework.marketnet`): ``blockcoin store serve``
for the node's wallet and ``blockcoin host start`` for the node's host.

A file put through the node is offered on chain, stored by the host and read back
byte-identical by ``blockcoin store get``; its contract, owned by the node's wallet, is
extended from the dashboard and runs longer on chain; a new host policy is in force at once
(an offer below the new minimum price is left alone while one at it is taken, the capacity
shows in the host view) and saved. Without the token nothing happens; without an owner agent
the answer is 503 naming the command to run.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from chain.api import models
from tests.framework.clirun import blockcoin
from tests.framework.marketnet import SETUP_TIMEOUT, MarketNet, market_net
from tests.framework.netkit import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.xdist_group("dashboard-agents")]

PRICE = 100_000
PERIODS = 4


def call(net: MarketNet, method: str, path: str, body: bytes | dict[str, Any] | None = None,
         auth: bool = True) -> tuple[int, Any]:
    """One request to the node: ``body`` as JSON (a dict) or as the raw bytes of a file."""
    headers = {"Authorization": f"Bearer {net.token}"} if auth else {}
    if isinstance(body, dict):
        payload: bytes | None = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    else:
        payload = body
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
    conn = http.client.HTTPConnection("127.0.0.1", net.node.api_port, timeout=120)
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def put(net: MarketNet, path: str, data: bytes, max_cost: int | None = None,
        price: int = PRICE) -> tuple[int, Any]:
    terms = {"path": path, "k": 1, "n": 1, "price": f"{price}sat", "collateral": "1000sat",
             "periods": PERIODS}
    if max_cost is None:
        status, quote = call(net, "POST", "/store/quote", {**terms, "size": len(data)})
        assert status == 200, quote
        models.Quote.model_validate(quote)
        max_cost = quote["total"]
    status, answer = call(net, "POST", f"/store/put?{urlencode({**terms, 'max_cost': max_cost})}",
                          data)
    (models.PutAnswer if status == 200 else models.Error).model_validate(answer)
    return status, answer


def wallet_contracts(net: MarketNet) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = net.get(f"/contracts?owner={net.node.principal}")["contracts"]
    return found


def active(net: MarketNet, cid: str) -> bool:
    return bool(net.get(f"/contracts/{cid}")["state"] == "active")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarketNet]:
    with market_net(tmp_path_factory.mktemp("dashboard-agents")) as found:
        yield found


@pytest.fixture(scope="module")
def stored(net: MarketNet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A file put through the dashboard with the owner agent of the node's wallet, stored by the
    node's host: the put's answer and the bytes."""
    net.start_owner()
    data = os.urandom(30_000)
    status, answer = put(net, "dash/file.bin", data)
    assert status == 200, answer
    with net.mining():
        wait_until(lambda: active(net, answer["offers"][0]), SETUP_TIMEOUT,
                   "the dashboard's offer stored by the node's host")
    return {**answer, "data": data}


def test_without_the_token_or_an_owner_agent_nothing_happens(net: MarketNet) -> None:
    wallet = net.node.principal
    net.start_owner()
    assert net.get(f"/views/owners/{wallet}")["agent_running"] is True
    net.stop_owner()
    assert net.get(f"/views/owners/{wallet}")["agent_running"] is False
    before = wallet_contracts(net)
    status, body = call(net, "POST", "/store/quote",
                        {"path": "x.bin", "size": 10, "k": 1, "n": 1})
    assert status == 503
    assert body["message"] == ("no owner agent running on this node's data directory: run "
                               "blockcoin store serve")
    net.start_owner()
    policy_file = net.node.datadir / "host" / "policy.json"
    policy = policy_file.read_bytes()
    for method, path, body_ in (
            ("POST", "/store/quote", {"path": "x.bin", "size": 10}),
            ("POST", f"/store/put?{urlencode({'path': 'x.bin', 'max_cost': 10**12})}", b"x" * 10),
            ("GET", "/host/policy", None),
            ("POST", "/host/policy", {"min_price": "1"}),
            ("POST", f"/contracts/{'ab' * 32}/extend", {"periods": 1})):
        status, body = call(net, method, path, body_, auth=False)
        assert status == 401 and body["error"] == "unauthorized", path
    assert policy_file.read_bytes() == policy
    assert wallet_contracts(net) == before and net.get("/mempool")["count"] == 0


def test_a_put_is_offered_stored_and_read_back(net: MarketNet, stored: dict[str, Any],
                                               tmp_path: Path) -> None:
    data = stored["data"]
    wallet = net.node.principal
    assert stored["path"] == f"/{wallet}/dash/file.bin" and not stored["resumed"]
    assert stored["escrow"] == PRICE * 1 * PERIODS
    assert stored["total"] == stored["escrow"] + stored["fees"] and stored["fees"] > 0
    contract = net.get(f"/contracts/{stored['offers'][0]}")
    assert contract["owner"] == str(wallet) and contract["host"] == net.host["host"]
    assert contract["path"] == stored["path"] and contract["periods"] == PERIODS
    out = tmp_path / "back.bin"
    got = blockcoin("store", "get", stored["path"], "-o", str(out), "--json", "-n", "regtest",
                    "-d", str(net.node.datadir))
    assert got.code == 0, got.err
    assert out.read_bytes() == data
    view = net.get(f"/views/owners/{wallet}")
    assert [f["health"] for f in view["files"] if f["path"] == stored["path"]] == ["healthy"]
    # a put that would cost more than the user confirmed spends nothing
    before = wallet_contracts(net)
    status, body = put(net, "dash/other.bin", b"y" * 1000, max_cost=PRICE * PERIODS - 1)
    assert status == 409 and body["error"] == "cost-changed"
    assert wallet_contracts(net) == before


def test_extend_through_the_dashboard(net: MarketNet, stored: dict[str, Any]) -> None:
    cid = stored["offers"][0]
    before = net.get(f"/contracts/{cid}")
    status, body = call(net, "POST", f"/contracts/{cid}/extend", {"periods": 3})
    assert status == 202, body
    with net.mining():
        wait_until(lambda: net.get(f"/contracts/{cid}")["periods"] == before["periods"] + 3,
                   SETUP_TIMEOUT, "the extension on chain")
    after = net.get(f"/contracts/{cid}")
    assert after["state"] == "active" and after["escrow"] > before["escrow"]


def test_a_new_host_policy_is_in_force_at_once(net: MarketNet, stored: dict[str, Any]) -> None:
    host = net.host["host"]
    status, was = call(net, "GET", "/host/policy")
    assert status == 200 and was["capacity"] == 1 << 20 and was["payout"] == str(net.owner)
    models.HostPolicy.model_validate(was)
    try:
        status, now = call(net, "POST", "/host/policy",
                           {"capacity": "3M", "min_price": f"{2 * PRICE}sat"})
        assert status == 200, now
        assert now == {**was, "capacity": 3 << 20, "min_price": 2 * PRICE}
        saved = json.loads((net.node.datadir / "host" / "policy.json").read_text())
        assert saved == {**now, "live": ["capacity", "min_price"]}  # these outlast a restart
        assert net.get(f"/views/hosts/{host}")["capacity"] == 3 << 20
        status, body = call(net, "POST", "/host/policy", {"capacity": "lots"})
        assert status == 400 and body["error"] == "size"
        # the only host running now takes the offer at its price and leaves the cheaper one
        status, cheap = put(net, "dash/cheap.bin", os.urandom(5000))
        assert status == 200, cheap
        status, dear = put(net, "dash/dear.bin", os.urandom(5000), price=2 * PRICE)
        assert status == 200, dear
        with net.mining():
            wait_until(lambda: active(net, dear["offers"][0]), SETUP_TIMEOUT,
                       "the offer at the new minimum price stored")
        left = net.get(f"/contracts/{cheap['offers'][0]}")
        assert left["state"] == "offered" and left["host"] is None
    finally:
        call(net, "POST", "/host/policy", {"capacity": str(was["capacity"]),
                                           "min_price": f"{was['min_price']}sat"})
