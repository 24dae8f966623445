"""The storage agents on light clients against a real node: an owner and two hosts that keep
only headers store a file, the hosts prove it and are paid, and the file comes back; a node
that lies to a host's light client is refused, the host keeps running and proving and acts on
nothing the lie said, and carries on once the node answers honestly."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chain.app.light import LightClient, LightClientError
from chain.app.lightchain import LightChain
from chain.core.block import Block
from chain.core.events import FragmentOffer, SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.core.params import COIN, REGTEST
from chain.core.principal import Principal
from chain.net.http import ApiError
from chain.node.mempool import MAX_NONCE_GAP
from storage_market.chainclient import ContractInfo, Signer
from storage_market.host import ACTIVE, HostAgent, HostPolicy
from storage_market.httpclient import HttpChain, NodeApiError
from storage_market.owner import OwnerAgent, StoreOptions
from tests.framework.agentproc import ready_line, stop
from tests.framework.clirun import blockcoin
from tests.framework.lyingproxy import LyingProxy
from tests.framework.marketnet import SETUP_TIMEOUT, MarketNet, spawn_logged
from tests.framework.netkit import init_node_dir, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarketNet]:
    """The node (development key 1), mining a block every quarter second."""
    devnet = MarketNet(tmp_path_factory.mktemp("lightnet"))
    try:
        devnet.node.start()
        devnet.start_mining()
        yield devnet
    finally:
        devnet.close()


def test_owner_and_hosts_on_light_clients_store_prove_are_paid_and_get_back(
        net: MarketNet, tmp_path: Path) -> None:
    home = str(net.node.datadir)
    light = ("--node", home, "--light", "--peer", net.node.p2p)
    hosts, procs = [], []
    try:
        for i, dev in enumerate((3, 4)):
            log = tmp_path / f"host{i}.err"
            procs.append(spawn_logged(log, "host", "start", "-n", "regtest", "-d",
                                      str(init_node_dir(tmp_path / f"h{i}", dev)), "--capacity",
                                      "1M", "--fund", "5", *light))
            hosts.append(ready_line(procs[-1], log)["host"])
        for h in hosts:
            wait_until(lambda h=h: bool(net.get(f"/global/principals/{h}").get("address")),
                       SETUP_TIMEOUT, "the hosts' addresses on chain")
        owner_dir = init_node_dir(tmp_path / "o", 2)
        src = tmp_path / "file.bin"
        src.write_bytes(os.urandom(30_000))
        put = blockcoin("store", "put", str(src), "file.bin", "--k", "1", "--n", "2",
                        "--periods", "40", "--yes", "--json", "-n", "regtest", "-d",
                        str(owner_dir), *light)
        assert put.code == 0, put.err
        placed = json.loads(put.out)
        assert placed["all_placed"] and {f["host"] for f in placed["fragments"]} == set(hosts)
        wait_until(lambda: all(net.record(h).get("proven_periods", 0) >= 2 and
                               net.record(h).get("earned", 0) > 0 for h in hosts),
                   SETUP_TIMEOUT, "both light hosts proven and paid")
        assert all(net.record(h).get("missed_periods", 0) == 0 for h in hosts)
        assert (owner_dir / "light" / "headers.dat").exists()  # the owner kept headers only
        out = tmp_path / "back.bin"
        got = blockcoin("store", "get", "file.bin", "-o", str(out), "--json", "-n", "regtest",
                        "-d", str(owner_dir), *light)
        assert got.code == 0, got.err
        assert out.read_bytes() == src.read_bytes()
    except BaseException:
        for i in range(len(procs)):
            print(f"===== host{i} =====\n{(tmp_path / f'host{i}.err').read_text()[-3000:]}")
        raise
    finally:
        for proc in procs:
            stop(proc)


def drop_offers(path: str, raw: bytes) -> bytes:
    """A raw block without its offers (its header unchanged): hides work from a host."""
    if not path.endswith("/raw"):
        return raw
    block = Block.decode(raw)
    kept = [e for e in block.events
            if not (isinstance(e, SignedEvent) and isinstance(e.body, FragmentOffer))]
    return Block(block.header, kept).encode()


def contracts_failed(path: str, status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Every contract said to have failed: a host believing it would drop its fragment."""
    if path.startswith("/contracts/") and "state" in body:
        body = {**body, "state": "failed"}
    return status, body


def richer(path: str, status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if path.startswith("/global/principals/") and "balance" in body:
        body = {**body, "balance": body["balance"] + 1000 * COIN}
    return status, body


async def until(cond: Callable[[], bool], what: str, timeout: float = SETUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def account(net: MarketNet, p: Principal) -> dict[str, Any]:
    """The principal's record on the node, empty while it has none."""
    try:
        found: dict[str, Any] = net.get(f"/global/principals/{p}")
    except ApiError as exc:
        if exc.status != 404:
            raise
        return {}
    return found


def refusals(host: HostAgent, why: str) -> int:
    return sum("refused the answer" in e and why in e for e in host.events)


def acted_on(host: HostAgent | None, height: int) -> bool:
    """Whether ``host`` has acted on the block at ``height``, so the next may be mined: its
    step on it done, or, while a lie fails its steps, begun with every proof due in the next
    block sent."""
    if host is None or not host.running or host.stepped >= height:
        return True
    if host.height < height:
        return False
    for c in host.contracts.values():
        period = c.window_of(height + 1)
        if (c.status == ACTIVE and 0 <= period < c.periods and c.last_proven < period
                and not (c.proof_period >= period and c.proof_event)):
            return False
    return True


def next_period(c: ContractInfo, tip: int) -> int:
    """The first period of ``c`` opened by a block after ``tip``."""
    return (tip - c.start) // REGTEST.storage_period_blocks + 1


async def test_a_lying_node_is_refused_by_the_hosts_light_client(net: MarketNet,
                                                                tmp_path: Path) -> None:
    honest = HttpChain(net.url, REGTEST, net.token)
    proxy = LyingProxy(net.url)
    chain = LightChain(LightClient(tmp_path / "h", REGTEST), HttpChain(proxy.url, REGTEST, net.token),
                       [net.node.p2p])
    key, owner_key = KeyPair.generate(), KeyPair.development(7)
    host: HostAgent | None = None
    owner: OwnerAgent | None = None
    try:
        # each block once the host has acted on the last: a period is five blocks, and on a
        # busy machine a miner on a timer outruns a host proving through a light client
        async with net.paced_mining(lambda height: acted_on(host, height)):
            await Signer(KeyPair.development(6)).submit(honest, Transfer(key.principal, 10 * COIN))
            await chain.start()
            await until(lambda: bool(account(net, key.principal)), "funding")
            # a richer account than the proof shows is refused, in one line naming the node
            proxy.patch = richer
            with pytest.raises(LightClientError, match="refused the answer of .*not what its proof"):
                await chain.principal(key.principal)
            proxy.honest()
            host = HostAgent(tmp_path / "h", key, chain, HostPolicy(capacity=1 << 20))
            await host.start()
            await until(lambda: bool(account(net, key.principal).get("address")),
                        "the host's address on chain")
            # the node hides the offers in its blocks: the host refuses those blocks and waits
            proxy.patch_raw = drop_offers
            owner = OwnerAgent(tmp_path / "o", Signer(owner_key), honest,
                               defaults=StoreOptions(k=1, n=1, periods=40))
            await owner.start()
            path = owner_key.principal.root_path + "/light.bin"
            data = os.urandom(20_000)
            await owner.put(path, data)
            await until(lambda: refusals(host, "events") >= 3, "the host refusing altered blocks")
            assert not host.contracts  # it took nothing from what it could not check
            # honest again: the blocks it refused are asked for again, the offer is taken
            proxy.honest()
            assert await owner.wait_placed(path, SETUP_TIMEOUT)
            oid = next(iter(host.contracts))
            await until(lambda: host.contracts[oid].status == ACTIVE, "the host's contract active")
            # the node says the contract failed: each answer refused, the host keeps the
            # fragment, and goes on proving (a proof needs the headers and the file, not the
            # node's word on the contract): a period opened during the lie is proven in time
            info = await honest.contract(oid)
            assert info is not None
            lied_in = next_period(info, await honest.tip_height())
            proxy.patch = contracts_failed
            await until(lambda: refusals(host, "contract") >= 3,
                        "the host refusing a forged contract state")
            await until_proven(honest, oid, lied_in, "a period proven while the node lies")
            assert host.contracts[oid].status == ACTIVE and host.store.file_for(oid).exists()
            # honest again: the host reads the contract again, proves on and is paid
            proxy.honest()
            honest_from = next_period(info, await honest.tip_height())
            await until(lambda: host.contracts[oid].last_proven >= honest_from
                        and host.contracts[oid].paid_total > 0,
                        "the host proving and paid once the node is honest again")
            assert (account(net, key.principal).get("host") or {}).get("earned", 0) > 0
            after = await honest.contract(oid)
            assert after is not None and after.state == "active" and after.missed == 0
            assert host.contracts[oid].status == ACTIVE
            await unprovable_answers_are_bounded(net, chain, proxy, owner_key.principal, oid)
    finally:
        if host is not None:
            await host.stop()
        if owner is not None:
            await owner.stop()
        await chain.close()
        await honest.close()
        proxy.close()


async def until_proven(chain: HttpChain, oid: bytes, period: int, what: str) -> None:
    """Until the chain shows ``oid`` proven for ``period`` or later (bounded as :func:`until`)."""
    deadline = time.monotonic() + SETUP_TIMEOUT
    while True:
        info = await chain.contract(oid)
        if info is not None and info.last_proven >= period:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {info!r})")
        await asyncio.sleep(0.1)


async def unprovable_answers_are_bounded(net: MarketNet, chain: LightChain, proxy: LyingProxy,
                                         owner: Principal, oid: bytes) -> None:
    """What has no proof of its own: lists are proven entry by entry, "confirmed" needs a
    verified block holding the event, and a pending count cannot push the nonce past the
    mempool's gap."""
    listed = await chain.contracts_by_owner(owner)
    assert [c.id for c in listed] == [oid]
    stranger = KeyPair.generate().principal
    owners: dict[str, Any] = net.get(f"/contracts?owner={owner}")

    def lists_the_owners(path: str, status: int, body: dict[str, Any]
                         ) -> tuple[int, dict[str, Any]]:
        return (status, owners) if path.startswith("/contracts?owner=") else (status, body)

    proxy.patch = lists_the_owners
    with pytest.raises(LightClientError, match="denies"):
        await chain.contracts_by_owner(stranger)
    tip = await chain.tip_height()
    block = await chain.block_hash(tip - 1)
    assert block is not None

    def confirmed_elsewhere(path: str, status: int, body: dict[str, Any]
                            ) -> tuple[int, dict[str, Any]]:
        if path.startswith("/events/"):
            return 200, {"status": "confirmed", "block": block[::-1].hex(), "height": tip - 1}
        return status, body

    proxy.patch = confirmed_elsewhere
    with pytest.raises(LightClientError, match="does not hold it"):
        await chain.event_status(b"\x01" * 32)
    proxy.patch = lambda path, status, body: (status, {**body, "next_nonce": 10**9})
    account = await chain.principal(owner)
    assert account is not None
    assert await chain.next_nonce(owner) == account.nonce + MAX_NONCE_GAP
    proxy.honest()


class Lines(logging.Handler):
    """The messages logged to one logger while in use."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(name)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self)
        return self.lines

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


async def test_a_refused_node_is_left_for_the_next(net: MarketNet, tmp_path: Path) -> None:
    """Two APIs, the first a liar: its lie is refused in one line naming it and the node asked
    from then on, the same read is answered by the honest node at once, and the transfer the
    light chain signs and submits is confirmed through it; a node that cannot be reached, or
    fails to take an event, is left the same way."""
    proxy = LyingProxy(net.url)
    asked: list[str] = []

    def lying(path: str, status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not path.startswith("/tip"):  # the long poll for a new block is only a hint
            asked.append(path)
        return richer(path, status, body)

    proxy.patch = lying
    nodes = [HttpChain(proxy.url, REGTEST, net.token), HttpChain(net.url, REGTEST, net.token)]
    chain = LightChain(LightClient(tmp_path / "a", REGTEST), nodes, [net.node.p2p])
    sender, to = KeyPair.development(8), KeyPair.generate().principal
    dead: LightChain | None = None
    try:
        await chain.start()
        with Lines("blockcoin.light") as lines:
            found = await chain.principal(sender.principal)  # the liar first, then the next
            assert found is not None
            assert found.balance == net.get(f"/global/principals/{sender.principal}")["balance"]
            switched = [line for line in lines if "from now on" in line]
            assert len(switched) == 1, lines
            assert (f"refused the answer of {proxy.url}" in switched[0]
                    and "not what its proof" in switched[0]
                    and switched[0].endswith(f"asking {net.url} from now on")), switched
        assert chain.http.base == net.url
        before = len(asked)
        eid = await Signer(sender).submit(chain, Transfer(to, COIN))  # nonce, submit: honest
        await until(lambda: bool(account(net, to)), "the transfer mined", 60)
        status = None
        for _ in range(100):  # bounded: confirmed once the light headers hold its block
            status = await chain.event_status(eid)
            if status == "confirmed":
                break
            await chain.wait_for_block(await chain.tip_height(), 1.0)
        assert status == "confirmed"
        assert len(asked) == before  # the liar was not asked again
        got = await chain.principal(to)
        assert got is not None and got.balance == COIN
        # a node that cannot be reached is left the same way
        dead = LightChain(LightClient(tmp_path / "a", REGTEST),
                          [HttpChain("http://127.0.0.1:1", REGTEST), HttpChain(net.url, REGTEST)],
                          [net.node.p2p])
        with Lines("blockcoin.light") as lines:
            assert await dead.principal(to) == got
        assert len(lines) == 1 and "http://127.0.0.1:1" in lines[0] and net.url in lines[0]
        # a node that fails to take an event: the error stands (the event is not sent again
        # by the light chain), and the next node is asked from then on
        chain.nodes.reverse()  # the proxy is next in turn now
        chain._current = 1

        def unavailable(path: str, status: int, body: dict[str, Any]
                        ) -> tuple[int, dict[str, Any]]:
            if path == "/events":
                return 503, {"error": "unavailable", "message": "down for maintenance"}
            return status, body

        proxy.patch = unavailable
        with Lines("blockcoin.light") as lines, pytest.raises(NodeApiError, match="unavailable"):
            await Signer(sender).submit(chain, Transfer(to, COIN))
        assert chain.http.base == net.url and len(lines) == 1 and proxy.url in lines[0]
    finally:
        await chain.close()
        if dead is not None:
            await dead.close()
        proxy.close()
