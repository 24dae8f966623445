"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against a node whose
chain has mined, stored, proven and missed (:mod:`tests.framework.marketnet`).

Each view loads with no console error and shows the figures the API gives for the same tip (the
chain stands still while they are compared), follows a new block over the WebSocket, and an
action without login is refused with nothing changed. The put and host policy forms act
through the agents on the node's data directory: the policy changes what the host sells, the
put states its cost, spends nothing before the confirmation and is stored after it, and a
missing owner agent is named. Screenshots of every view go to ``build/screenshots/``.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chain.core.events import FragmentOffer, SignedEvent
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from tests.framework.marketnet import MarketNet, market_net
from tests.framework.netkit import ROOT, wait_until

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000  # a view's render or a live update, on a loaded machine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.xdist_group("dashboard-browser"),
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="needs Debian's chromium (.ci/run installs it)")]


class Browser:
    """One page of a fresh chromium profile, with every console error and page error kept."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url
        self.errors: list[str] = []
        self.expected: list[str] = []  # errors a test provokes on purpose (substrings)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def show(self, route: str, view: str) -> None:
        """Open ``#/route`` and wait until its view has rendered."""
        target = f"{self.url}/#/{route}"
        before = self.page.evaluate("Number(document.body.dataset.renders || 0)")
        if self.page.url == target:  # the same address: no hashchange, so load it again
            self.page.reload()
            before = 0
        elif self.page.url.startswith(self.url):
            self.page.evaluate("r => { location.hash = r }", f"#/{route}")
        else:
            self.page.goto(target)
            before = 0
        self.page.wait_for_function(
            "([v, n]) => document.body.dataset.view === v && "
            "Number(document.body.dataset.renders || 0) > n", arg=[view, before], timeout=WAIT_MS)

    def figure(self, name: str) -> str:
        value: str = self.page.get_attribute(f'[data-figure="{name}"]', "data-value")
        return value

    def figures(self, names: list[str]) -> dict[str, str]:
        return {name: self.figure(name) for name in names}

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def wait_height(self, height: int) -> None:
        self.page.wait_for_function("h => Number(document.body.dataset.height) >= h",
                                    arg=height, timeout=WAIT_MS)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarketNet]:
    with market_net(tmp_path_factory.mktemp("dashboard")) as found:
        yield found


@pytest.fixture(scope="module")
def browser(net: MarketNet) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=ARGS, headless=True,
                viewport={"width": 1280, "height": 900})
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(WAIT_MS)
                yield Browser(page, net.url)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def clean(browser: Browser) -> Iterator[Browser]:
    """The page, checked for console errors once the test is done with it."""
    browser.errors.clear()
    browser.expected.clear()
    yield browser
    assert [e for e in browser.errors if not any(x in e for x in browser.expected)] == []


def last_point(series: dict[str, Any]) -> dict[str, int]:
    return dict(zip(series["fields"], series["points"][-1], strict=True))


def test_explorer_shows_the_chain_and_follows_new_blocks(net: MarketNet, clean: Browser) -> None:
    b = clean
    b.show("", "explorer")
    status, totals = net.get("/status"), last_point(net.get("/stats/chain"))
    assert b.figures(["tip-height", "tip-hash", "circulation", "under-contract",
                      "active-hosts"]) == {
        "tip-height": str(status["height"]), "tip-hash": status["hash"],
        "circulation": str(totals["circulation"]),
        "under-contract": str(totals["under_contract"]),
        "active-hosts": str(totals["active_hosts"])}
    assert totals["under_contract"] > 0 and totals["proven_bytes"] > 0
    assert b.page.locator("[data-chart] canvas").count() >= 4
    first_row = b.page.locator("#recent-blocks tbody tr").first.locator("td").first
    assert first_row.inner_text() == str(status["height"])
    b.shot("explorer")
    # a block mined now reaches the page over the WebSocket
    height = net.mine()
    b.wait_height(height)
    assert b.figure("tip-height") == str(height) == str(net.get("/status")["height"])


def search(b: Browser, query: str, view: str) -> None:
    before = b.page.evaluate("Number(document.body.dataset.renders || 0)")
    b.page.fill("#q", query)
    b.page.press("#q", "Enter")
    b.page.wait_for_function(
        "([v, n]) => document.body.dataset.view === v && Number(document.body.dataset.renders) > n",
        arg=[view, before], timeout=WAIT_MS)


def test_the_search_box_opens_every_kind_of_id(net: MarketNet, clean: Browser) -> None:
    b = clean
    b.show("", "explorer")
    tip = net.get("/tip")
    search(b, str(tip["height"]), "block")
    assert b.figure("block-hash") == tip["hash"]
    b.shot("block")
    contracts = net.get(f"/contracts?owner={net.owner}")["contracts"]
    search(b, contracts[0]["id"], "contract")
    assert b.figures(["contract-state", "contract-proven", "contract-missed"]) == {
        "contract-state": contracts[0]["state"],
        "contract-proven": str(contracts[0]["proven_periods"]),
        "contract-missed": str(contracts[0]["missed_periods"])}
    b.shot("contract")
    found = net.get(f"/blocks/{contracts[0]['start']}")
    event_id = next(e["id"] for e in found["events"] if e["kind"] == "fragment_stored")
    search(b, event_id, "event")
    assert b.figure("event-status") == "confirmed"
    search(b, net.path, "path")
    assert b.figure("fragments-held") == str(len(net.get(f"/global/fragments{net.path}")[
        "fragments"]))
    b.shot("path")
    host = net.other_host["host"]
    search(b, host, "principal")
    record = net.get(f"/global/principals/{host}")
    assert b.figures(["balance", "host-proven", "host-missed", "host-earned"]) == {
        "balance": str(record["balance"]), "host-proven": str(record["host"]["proven_periods"]),
        "host-missed": str(record["host"]["missed_periods"]),
        "host-earned": str(record["host"]["earned"])}
    assert record["host"]["missed_periods"] >= 1
    b.shot("principal")


HOST_FIGURES = ["capacity", "used", "free", "host-active", "host-proven", "host-missed",
                "host-earned", "host-collateral", "balance"]


def host_api(view: dict[str, Any]) -> dict[str, str]:
    r = view["record"]
    return {"capacity": str(view["capacity"]), "used": str(view["used"]),
            "free": str(view["free"]), "host-active": str(r["contracts_active"]),
            "host-proven": str(r["proven_periods"]), "host-missed": str(r["missed_periods"]),
            "host-earned": str(r["earned"]), "host-collateral": str(r["collateral_locked"]),
            "balance": str(view["balance"])}


def test_host_view_of_the_nodes_host_and_of_one_that_missed(net: MarketNet,
                                                            clean: Browser) -> None:
    b = clean
    b.show("host", "host")
    host = net.host["host"]
    view = net.get(f"/views/hosts/{host}")
    assert view["node_host"] and view["capacity"] == 1 << 20
    assert b.figures(HOST_FIGURES) == host_api(view)
    rows = b.page.locator("tr[data-contract]")
    assert rows.count() == len(view["contracts"]) >= 1
    assert b.page.locator('[data-chart="earnings"] canvas').count() == 1
    b.shot("host")
    # the next block moves the proof windows and the page with them
    height = net.mine()
    b.wait_height(height)
    assert b.figures(HOST_FIGURES) == host_api(net.get(f"/views/hosts/{host}"))
    # the host that stopped: its misses, in public
    other = net.other_host["host"]
    b.show(f"host/{other}", "host")
    seen = b.figures(["host-missed", "host-proven"])
    record = net.get(f"/views/hosts/{other}")["record"]
    assert seen == {"host-missed": str(record["missed_periods"]),
                    "host-proven": str(record["proven_periods"])}
    assert record["missed_periods"] >= 1
    # its current window, unproven, down to its last block: the alert, as the API gives it
    active = [c for c in net.get(f"/views/hosts/{other}")["contracts"] if c["state"] == "active"]
    if active and active[0]["blocks_left"] > 1:
        net.mine(active[0]["blocks_left"] - 1)
    view = net.get(f"/views/hosts/{other}")
    if active:
        assert "proof-window-closing" in [a["code"] for a in view["alerts"]]
    b.show(f"host/{other}", "host")
    b.wait_height(view["tip"])  # drawn from the tip the API answered at, not a block before
    shown = b.page.eval_on_selector_all("[data-alert]", "els => els.map(e => e.dataset.alert)")
    assert shown == [a["code"] for a in view["alerts"]]
    b.shot("host-missed")


def test_owner_view_shows_health_spend_and_solvency(net: MarketNet, clean: Browser) -> None:
    b = clean
    b.show(f"owner/{net.owner}", "owner")
    view = net.get(f"/views/owners/{net.owner}")
    assert b.figures(["files", "liability", "host-earnings", "repairs"]) == {
        "files": str(len(view["files"])), "liability": str(view["liability_per_period"]),
        "host-earnings": str(view["host_earnings_per_period"]),
        "repairs": str(len(view["repairs"]))}
    assert view["host_earnings_per_period"] > 0  # the node's host pays this owner
    row = b.page.locator(f'tr[data-file="{net.path}"]')
    file = view["files"][0]
    assert row.locator("[data-health]").get_attribute("data-health") == file["health"]
    assert row.locator("[data-held]").get_attribute("data-held") == str(file["held"])
    assert b.page.locator('[data-chart="spend"] canvas').count() == 1
    assert b.page.locator('[data-chart="solvency"] canvas').count() == 1
    b.shot("owner")
    height = net.mine()
    b.wait_height(height)
    now = net.get(f"/views/owners/{net.owner}")
    assert b.figure("liability") == str(now["liability_per_period"])


def offer_from_the_wallet(net: MarketNet) -> str:
    """An open offer of the node's own wallet (development key 1), mined: the contract the
    dashboard's release ends."""
    key = KeyPair.development(1)
    tip = int(net.get("/tip")["height"])
    body = FragmentOffer(key.principal.root_path + "/offer.bin", bytes(32), 0, 1, 1, 4096,
                         bytes(32), 1024, 1000, 0, REGTEST.storage_period_blocks, 2, tip + 50)
    nonce = int(net.get(f"/global/principals/{key.principal}")["next_nonce"])
    event = SignedEvent.create(REGTEST.chain_id, key, nonce, 10_000, body, None, None)
    cid = str(net.node.post("/events", {"event": event.raw.hex()})["id"])
    net.mine()
    assert net.get(f"/contracts/{cid}")["state"] == "offered"
    return cid


def click_action(b: Browser, name: str) -> str:
    b.page.click(f'[data-action="{name}"] button')
    done = f'[data-result="{name}"][data-outcome]'
    b.page.locator(done).wait_for(timeout=WAIT_MS)
    outcome: str = b.page.get_attribute(done, "data-outcome")
    return outcome


def test_actions_are_refused_without_login_and_work_after_it(net: MarketNet,
                                                             clean: Browser) -> None:
    b = clean
    b.expected.append("the server responded with a status of 401")  # the refusals, as logged
    wallet = net.node.principal
    cid = offer_from_the_wallet(net)
    b.show(f"contract/{cid}", "contract")
    assert click_action(b, "release") == "unauthorized"
    assert net.get(f"/contracts/{cid}")["state"] == "offered"
    b.show("owner", "owner")  # the node's own wallet: its send form
    before = net.get(f"/global/principals/{wallet}")
    pool = net.get("/mempool")["count"]
    b.page.fill('[data-action="send"] input[name="to"]', str(net.owner))
    b.page.fill('[data-action="send"] input[name="amount"]', "1.5")
    assert click_action(b, "send") == "unauthorized"
    assert net.get("/mempool")["count"] == pool
    assert net.get(f"/global/principals/{wallet}")["next_nonce"] == before["next_nonce"]
    # the API's own writes too: no session, no header, no token
    status = b.page.evaluate("fetch('/mine', {method: 'POST', body: '{}', headers: "
                             "{'Content-Type': 'application/json', 'X-Blockcoin-Dashboard': "
                             "'1'}}).then(r => r.status)")
    assert status == 401
    # a wrong token is refused; the right one gives a session the page's script cannot read
    b.show("login", "login")
    b.page.fill('#login-form input[name="token"]', "0" * 64)
    b.page.click("#login-form button")
    b.page.locator('[data-result="login"][data-outcome]').wait_for(timeout=WAIT_MS)
    b.page.fill('#login-form input[name="token"]', net.token)
    b.page.click("#login-form button")
    b.page.wait_for_selector('#login-link[data-logged-in="true"]', timeout=WAIT_MS)
    assert "blockcoin_session" not in b.page.evaluate("document.cookie")
    assert net.token not in b.page.url
    b.show("login", "login")
    assert b.figure("logged-in") == "true"
    b.shot("login")
    b.show("owner", "owner")
    b.page.fill('[data-action="send"] input[name="to"]', str(net.owner))
    b.page.fill('[data-action="send"] input[name="amount"]', "1.5")
    assert click_action(b, "send") == "ok"
    assert net.get(f"/global/principals/{wallet}")["pending"] == before["pending"] + 1
    b.shot("owner-send")
    # the offer, released from its page; the next block ends it, and the page follows
    b.show(f"contract/{cid}", "contract")
    assert click_action(b, "release") == "ok"
    b.shot("contract-release")
    height = net.mine()
    b.wait_height(height)
    assert net.get(f"/contracts/{cid}")["state"] == "released"
    b.page.wait_for_selector('[data-figure="contract-state"][data-value="released"]',
                             timeout=WAIT_MS)
    # logged out, refused again
    b.show("login", "login")
    b.page.click("text=Log out")
    b.page.wait_for_selector('#login-link[data-logged-in="false"]', timeout=WAIT_MS)
    status = b.page.evaluate("fetch('/wallet/send', {method: 'POST', body: '{}', headers: "
                             "{'Content-Type': 'application/json', 'X-Blockcoin-Dashboard': "
                             "'1'}}).then(r => r.status)")
    assert status == 401


def raw(net: MarketNet, method: str, path: str, body: str | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", net.node.api_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_the_session_cookie_and_what_it_allows(net: MarketNet) -> None:
    """HttpOnly and SameSite=Strict; a session alone (without the header no other site's page
    can send) moves nothing; the token itself is never taken from a URL."""
    status, headers, _ = raw(net, "POST", "/session", json.dumps({"token": net.token}),
                             {"Content-Type": "application/json"})
    cookie = headers["Set-Cookie"]
    assert status == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = cookie.split(";")[0]
    send = json.dumps({"to": str(net.owner), "amount": "1sat"})
    pool = net.get("/mempool")["count"]
    for extra in ({}, {"X-Blockcoin-Dashboard": "1", "Cookie": "blockcoin_session=" + "0" * 64},
                  {"Cookie": session}):
        code, _, _ = raw(net, "POST", "/wallet/send", send,
                         {"Content-Type": "application/json", **extra})
        assert code == 401
    code, _, _ = raw(net, "POST", f"/wallet/send?token={net.token}", send,
                     {"Content-Type": "application/json"})
    assert code == 401 and net.get("/mempool")["count"] == pool
    code, _, body = raw(net, "POST", "/wallet/send", send, {
        "Content-Type": "application/json", "X-Blockcoin-Dashboard": "1", "Cookie": session})
    assert code == 202 and net.get("/mempool")["count"] == pool + 1
    # release and extend take only the wallet's own contracts
    other = net.get(f"/contracts?owner={net.owner}")["contracts"][0]["id"]
    for action, payload in (("release", "{}"), ("extend", '{"periods": 2}')):
        code, _, body = raw(net, "POST", f"/contracts/{other}/{action}", payload, {
            "Content-Type": "application/json", "Authorization": f"Bearer {net.token}"})
        assert code == 403 and json.loads(body)["error"] == "not-owner"
        code, _, _ = raw(net, "POST", f"/contracts/{'ab' * 32}/{action}", payload, {
            "Content-Type": "application/json", "Authorization": f"Bearer {net.token}"})
        assert code == 404
    # the page: a strict content security policy, only its own assets
    code, headers, page = raw(net, "GET", "/")
    assert code == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    for asset in re.findall(rb'(?:src|href)="(/ui/[^"]+)"', page):
        assert raw(net, "GET", asset.decode())[0] == 200
    assert raw(net, "GET", "/ui/package.json")[0] == 404
    assert raw(net, "GET", "/ui/..%2Fdashboard.py")[0] == 404


def test_stats_and_search_answer_from_the_chain(net: MarketNet) -> None:
    period = REGTEST.storage_period_blocks
    series = net.get(f"/stats/chain?bucket={2 * period}")
    heights = [p[0] for p in series["points"]]
    assert series["bucket"] == 2 * period and heights[-1] == series["tip"]
    assert all(h % (2 * period) == 0 for h in heights[:-1])
    assert raw(net, "GET", f"/stats/chain?bucket={period + 1}")[0] == 400
    host = net.get(f"/stats/hosts/{net.other_host['host']}")
    last = dict(zip(host["fields"], host["points"][-1], strict=True))
    record = net.get(f"/global/principals/{net.other_host['host']}")["host"]
    assert last["missed_periods"] == record["missed_periods"] >= 1
    assert last["earned"] == record["earned"]
    tip = net.get("/tip")
    for query, kind in ((str(tip["height"]), "block"), (tip["hash"], "block"),
                        (str(net.owner), "principal"), (net.path, "path")):
        assert net.get(f"/search?q={query}") == {"kind": kind, "id": query}
    for query, code in (("x" * 64, 400), ("9" * 12, 404), ("nonsense", 400)):
        assert raw(net, "GET", f"/search?q={query}")[0] == code


def log_in(b: Browser, net: MarketNet) -> None:
    b.show("login", "login")
    if b.figure("logged-in") != "true":
        b.page.fill('#login-form input[name="token"]', net.token)
        b.page.click("#login-form button")
        b.page.wait_for_selector('#login-link[data-logged-in="true"]', timeout=WAIT_MS)


def outcome(b: Browser, name: str) -> tuple[str, str]:
    done = b.page.locator(f'[data-result="{name}"][data-outcome]')
    done.wait_for(timeout=WAIT_MS)
    return str(done.get_attribute("data-outcome")), done.inner_text()


def test_the_host_policy_form_changes_what_the_host_sells(net: MarketNet, clean: Browser) -> None:
    b = clean
    b.expected.append("the server responded with a status of 503")
    host = net.host["host"]
    b.show("login", "login")
    if b.figure("logged-in") == "true":
        b.page.click("text=Log out")
        b.page.wait_for_selector('#login-link[data-logged-in="false"]', timeout=WAIT_MS)
    b.show("host", "host")
    assert b.page.locator('[data-policy="login"]').count() == 1  # nothing shown before login
    log_in(b, net)
    b.show("host", "host")
    form = '[data-action="policy"]'
    assert b.page.input_value(f'{form} input[name="capacity"]') == str(1 << 20)
    b.page.fill(f'{form} input[name="capacity"]', "2M")
    b.page.fill(f'{form} input[name="min_price"]', "3sat")
    b.page.click(f"{form} button")
    assert outcome(b, "policy")[0] == "ok"
    policy = json.loads((net.node.datadir / "host" / "policy.json").read_text())
    assert policy["capacity"] == 2 << 20 and policy["min_price"] == 3
    b.shot("host-policy")
    b.show("host", "host")
    assert b.figure("capacity") == str(2 << 20) == str(net.get(f"/views/hosts/{host}")["capacity"])
    # with no owner agent on the data directory, the owner's put says what to run
    net.stop_owner()
    b.show("owner", "owner")
    assert b.page.locator('[data-agent="owner-absent"]').is_visible()
    b.page.set_input_files('[data-action="quote"] input[name="file"]',
                           files=[{"name": "a.bin", "mimeType": "application/octet-stream",
                                   "buffer": b"a" * 100}])
    b.page.click('[data-action="quote"] button')
    code, text = outcome(b, "quote")
    assert code == "agent-not-running" and text.endswith("run blockcoin store serve")
    b.shot("owner-no-agent")
    raw(net, "POST", "/host/policy", json.dumps({"capacity": str(1 << 20), "min_price": "1sat"}),
        {"Content-Type": "application/json", "Authorization": f"Bearer {net.token}"})


def test_the_put_form_states_the_cost_and_stores_after_confirmation(net: MarketNet,
                                                                   clean: Browser) -> None:
    b = clean
    net.start_owner()
    log_in(b, net)
    wallet = net.node.principal
    data = bytes(range(256)) * 40
    b.show("owner", "owner")
    form = '[data-action="quote"]'
    b.page.set_input_files(f'{form} input[name="file"]', files=[{
        "name": "page.bin", "mimeType": "application/octet-stream", "buffer": data}])
    for name, value in (("k", "1"), ("n", "1"), ("periods", "3"), ("collateral", "1000sat")):
        b.page.fill(f'{form} input[name="{name}"]', value)
    b.page.click(f"{form} button")
    assert outcome(b, "quote")[0] == "ok"
    code, _, body = raw(net, "POST", "/store/quote", json.dumps({
        "path": "page.bin", "size": len(data), "k": 1, "n": 1, "periods": 3,
        "collateral": "1000sat"}), {"Content-Type": "application/json",
                                    "Authorization": f"Bearer {net.token}"})
    quote = json.loads(body)
    assert code == 200 and quote["escrow"] == 100_000 * 1 * 3
    assert b.figure("put-total") == str(quote["total"])
    pool = net.get("/mempool")["count"]
    b.shot("owner-put-confirm")
    assert net.get("/mempool")["count"] == pool  # nothing is spent before the confirmation
    b.page.click('[data-action="put-confirm"]')
    code, text = outcome(b, "put")
    assert code == "ok", text
    path = f"/{wallet}/page.bin"
    assert text.startswith(f"offered {path}: 1 fragment offer(s)")
    with net.mining():  # the page follows: offered, then stored by the node's host
        b.page.wait_for_selector(f'tr[data-file="{path}"] [data-health="healthy"]',
                                 timeout=WAIT_MS * 4)
    b.shot("owner-put-stored")
    contract = next(c for c in net.get(f"/contracts?owner={wallet}")["contracts"]
                    if c["path"] == path)
    assert contract["state"] == "active" and contract["host"] == net.host["host"]
    # the wallet's contract, run longer from its page with the host's consent
    cid = contract["id"]
    b.show(f"contract/{cid}", "contract")
    b.page.fill('[data-action="extend"] input[name="periods"]', "2")
    b.page.click('[data-action="extend"] button')
    code, text = outcome(b, "extend")
    assert code == "ok", text
    with net.mining():
        wait_until(lambda: net.get(f"/contracts/{cid}")["periods"] == 3 + 2, 120.0,
                   "the extension on chain")
    b.shot("contract-extend")
