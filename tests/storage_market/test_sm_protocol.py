"""The owner-host protocol's messages, the fragment stream's limits, who may do what, the host's
durable fragment store, the HTTP chain client, and the command line as real processes (the
demo has its own module, test_sm_demo.py)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from chain.core.errors import InsufficientFunds
from chain.core.events import FragmentOffer, SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.net.channel import SecureChannel
from storage_market import protocol as proto
from storage_market.chainclient import Signer
from storage_market.errors import IntegrityError
from storage_market.fragmentstore import FragmentStore
from storage_market.host import HostAgent, HostPolicy
from storage_market.httpclient import HttpChain
from storage_market.inprocess import InProcessChain, serve_api
from storage_market.merkle import HashTree, MerkleTree

CHAIN_ID = b"BLKR"
ROOT = Path(__file__).resolve().parents[2]


def test_messages_round_trip_and_decode_strictly() -> None:
    msgs: list[proto.Message] = [
        proto.Fetch((b"\x01" * 32, b"\x03" * 32)), proto.FragmentHeader(b"\x02" * 32, 123456),
        proto.Receipt(b"\x03" * 64, KeyPair.generate().principal), proto.Stored(b"\x04" * 32),
        proto.Extend(b"\x05" * 32, 17), proto.Consent(b"\x06" * 64), proto.Retrieve(b"\x07" * 32),
        proto.Error("busy", "try later"),
    ]
    for m in msgs:
        raw = proto.encode(m)
        assert proto.decode(raw) == m
        with pytest.raises(proto.ProtocolError):
            proto.decode(raw + b"\x00")  # trailing bytes
        with pytest.raises(proto.ProtocolError):
            proto.decode(raw[:-1] if len(raw) > 1 else b"")  # truncated
    with pytest.raises(proto.ProtocolError):
        proto.decode(b"\xff")


def test_hash_tree_matches_merkle_tree() -> None:
    data = os.urandom(10_000)
    full, light = MerkleTree(data, 1024), HashTree.of(data, 1024)
    assert light.root == full.root and light.leaf_count == full.leaf_count
    assert all(light.proof(i) == full.proof(i) for i in range(full.leaf_count))


async def _pair(handler: proto.Handler) -> tuple[SecureChannel, proto.Listener]:
    server_key, client_key = KeyPair.generate(), KeyPair.generate()
    listener = proto.Listener(server_key, CHAIN_ID, handler)
    address = await listener.start()
    channel = await proto.dial(address, client_key, CHAIN_ID, server_key.principal)
    return channel, listener


async def test_fragment_stream_refuses_wrong_sizes() -> None:
    oid = b"\x09" * 32

    async def liar(ch: SecureChannel) -> None:  # announces the right size, sends one byte more
        await proto.send(ch, proto.FragmentHeader(oid, 10))
        await ch.send(b"x" * 11)
        await asyncio.sleep(0.5)

    channel, listener = await _pair(liar)
    try:
        with pytest.raises(proto.ProtocolError, match="wrong size"):
            await proto.recv_fragment(channel, oid, 10, lambda c: None, 5)
    finally:
        await channel.close()
        await listener.close()

    async def big(ch: SecureChannel) -> None:  # announces more than the chain says
        await proto.send(ch, proto.FragmentHeader(oid, 1 << 40))
        await asyncio.sleep(0.5)

    channel, listener = await _pair(big)
    try:
        with pytest.raises(proto.ProtocolError, match="the chain says 10"):
            await proto.recv_fragment(channel, oid, 10, lambda c: None, 5)
    finally:
        await channel.close()
        await listener.close()


async def test_dial_refuses_an_impostor() -> None:
    listener = proto.Listener(KeyPair.generate(), CHAIN_ID, lambda ch: asyncio.sleep(0))
    address = await listener.start()
    try:
        with pytest.raises(proto.PeerUnreachable):
            await proto.dial(address, KeyPair.generate(), CHAIN_ID, KeyPair.generate().principal)
        with pytest.raises(proto.PeerUnreachable):
            await proto.dial(None, KeyPair.generate(), CHAIN_ID, KeyPair.generate().principal)
    finally:
        await listener.close()


async def test_a_listener_turns_away_connections_beyond_its_limit() -> None:
    listener = proto.Listener(KeyPair.generate(), CHAIN_ID, lambda ch: asyncio.sleep(0),
                              handshake_timeout=5, max_connections=2)
    host, port = proto.split_address(await listener.start())
    streams = []
    try:
        async with asyncio.timeout(10):
            for _ in range(3):  # connect, say nothing: each holds a slot until its handshake times out
                streams.append(await asyncio.open_connection(host, port))
            extra_reader, _ = streams[2]
            assert await extra_reader.read(1) == b""  # the third is closed at once
            assert listener.turned_away == 1
            for reader, _ in streams[:2]:  # the first two are still waiting for a handshake
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(reader.read(1), 0.2)
    finally:
        for _, writer in streams:
            writer.close()
        await listener.close()


def test_fragment_store_is_atomic_and_checked(tmp_path: Path) -> None:
    data = os.urandom(5000)
    tree = MerkleTree(data, 1024)
    offer = FragmentOffer("/" + str(KeyPair.generate().principal) + "/f", b"\x00" * 32, 0, 5, 3,
                          len(data), tree.root, 1024, 1, 0, 5, 1, 100)
    store = FragmentStore(tmp_path / "frags")

    async def write(payload: bytes) -> HashTree:
        w = store.open_writer(b"\x01" * 32, offer)
        for i in range(0, len(payload), 1500):  # chunks not aligned to leaves
            await w.write(payload[i : i + 1500])
        return await w.commit()

    with pytest.raises(IntegrityError):  # wrong bytes: nothing lands, no temporary left
        asyncio.run(write(os.urandom(5000)))
    assert list((tmp_path / "frags").iterdir()) == []
    assert asyncio.run(write(data)).root == tree.root
    assert store.load_tree(b"\x01" * 32, offer).root == tree.root
    assert store.read_leaves(b"\x01" * 32, offer, (4,)) == [tree.leaf(4)]
    path = store.file_for(b"\x01" * 32)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(raw)
    with pytest.raises(IntegrityError, match="no longer matches"):
        store.load_tree(b"\x01" * 32, offer)
    (tmp_path / "frags" / ".stale.tmp").write_bytes(b"x")
    FragmentStore(tmp_path / "frags")  # a restart sweeps interrupted writes
    assert not (tmp_path / "frags" / ".stale.tmp").exists()


async def test_http_client_speaks_the_node_api_and_keeps_error_types(tmp_path: Path) -> None:
    chain = InProcessChain.open(tmp_path / "node")
    token = secrets.token_hex(8)
    runner, url = await serve_api(chain, token)
    http = HttpChain(url, chain.node.params, token)
    try:
        dev = KeyPair.development(2)
        fresh = KeyPair.generate()
        assert await http.tip_height() == 0
        assert await http.next_nonce(fresh.principal) == 0
        eid = await Signer(dev).submit(http, Transfer(fresh.principal, 5))
        assert len(eid) == 32 and await http.next_nonce(dev.principal) == 1
        waiter = asyncio.ensure_future(http.wait_for_block(0, 5))
        await asyncio.sleep(0.05)
        await chain.mine()
        assert await waiter == 1
        acct = await http.principal(fresh.principal)
        assert acct is not None and acct.balance == 5
        assert [type(e.body) for e in await http.block_events(1)] == [Transfer]
        assert await http.contract(b"\x00" * 32) is None
        assert await http.fragments(dev.principal.root_path + "/nothing") == {}
        poor = Signer(fresh)
        with pytest.raises(InsufficientFunds):  # the consensus error class, through HTTP
            await poor.submit(http, Transfer(dev.principal, 10))
        with pytest.raises(Exception, match="unauthorized"):
            await HttpChain(url, chain.node.params, "wrong").submit(
                SignedEvent.create(CHAIN_ID, fresh, 0, 0, Transfer(dev.principal, 1)))
    finally:
        await http.close()
        await runner.cleanup()
        await chain.close()


async def test_host_refuses_what_it_does_not_hold_and_a_new_key_must_be_funded(
        tmp_path: Path) -> None:
    chain = InProcessChain.open(tmp_path / "node")
    key = KeyPair.generate()
    host = HostAgent(tmp_path / "h", key, chain, HostPolicy(1 << 20))
    try:
        with pytest.raises(InsufficientFunds, match="has 0"):  # it cannot pay to announce
            await host.start()
        await host.stop()
        await Signer(KeyPair.development(2)).submit(chain, Transfer(key.principal, 10**6))
        await chain.mine()
        host = HostAgent(tmp_path / "h", key, chain, HostPolicy(1 << 20))
        await host.start()
        for ask in (proto.Extend(b"\x01" * 32, 9), proto.Retrieve(b"\x01" * 32)):
            channel = await proto.dial(host.address, KeyPair.generate(), chain.chain_id,
                                       host.principal)
            async with channel:
                await proto.send(channel, ask)
                with pytest.raises(proto.PeerRefused, match="unknown-contract"):
                    await proto.recv(channel, 5)
    finally:
        await host.stop()
        await chain.close()


@pytest.mark.slow
async def test_command_line_put_get_status_against_a_node_api(tmp_path: Path) -> None:
    """`store put/get/status` and `host start/status` as processes around one chain API."""
    chain = InProcessChain.open(tmp_path / "node")
    token = secrets.token_hex(8)
    runner, url = await serve_api(chain, token)
    chain.start_mining(0.1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    common = ["--network", "regtest", "--api", url, "--token", token]

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chain", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    # each host's key is funded before it starts: it pays to announce and locks collateral
    bank = Signer(KeyPair.development(3))
    for i in range(3):
        made = await asyncio.to_thread(cli, "init", "--network", "regtest", "--datadir",
                                       str(tmp_path / f"h{i}"))
        assert made.returncode == 0, made.stderr
        key = KeyPair.generate()
        key.save(tmp_path / f"h{i}" / "host" / "host.key")
        await bank.submit(chain, Transfer(key.principal, 10**9))
    hosts = [subprocess.Popen([sys.executable, "-m", "chain", "host", "start", "--capacity", "1M",
                               "--datadir", str(tmp_path / f"h{i}"), "--json", *common],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
             for i in range(3)]
    try:
        for h in hosts:
            assert h.stdout is not None
            assert json.loads(await asyncio.to_thread(h.stdout.readline))["address"]
        owner = tmp_path / "owner"
        init = await asyncio.to_thread(cli, "init", "--network", "regtest", "--datadir", str(owner),
                                       "--dev-key", "0")
        assert init.returncode == 0
        src = tmp_path / "in.txt"
        src.write_bytes(os.urandom(70_000))
        put = await asyncio.to_thread(cli, "store", "put", str(src), "notes/in.txt", "--k", "2",
                                      "--n", "3", "--periods", "100", "--datadir", str(owner),
                                      "--json", "--yes", *common)
        assert put.returncode == 0, put.stderr[-2000:]
        placed = json.loads(put.stdout)
        assert placed["placed"] and placed["path"].endswith("/notes/in.txt")
        out = tmp_path / "out.txt"
        got = await asyncio.to_thread(cli, "store", "get", "notes/in.txt", "-o", str(out),
                                      "--datadir", str(owner), "--json", *common)
        assert got.returncode == 0, got.stderr[-2000:]
        assert out.read_bytes() == src.read_bytes()
        status = await asyncio.to_thread(cli, "store", "status", "--network", "regtest",
                                         "--datadir", str(owner), "--json")
        assert json.loads(status.stdout)["blocks"][0]["n"] == 3
        bad = await asyncio.to_thread(cli, "store", "get", "nothing/here", "-o", str(out),
                                      "--datadir", str(owner), *common)
        assert bad.returncode == 1 and "no fragments" in bad.stderr
    finally:
        for h in hosts:
            h.terminate()
        for h in hosts:
            h.wait(15)
        await runner.cleanup()
        await chain.close()
    held = [json.loads(cli("host", "status", "--network", "regtest", "--datadir",
                           str(tmp_path / f"h{i}"), "--json").stdout) for i in range(3)]
    assert sum(len(h["contracts"]) for h in held) == 3
    assert all(h["capacity"] == 1 << 20 for h in held)
    # nobody ran `store serve`: the hosts proved and were paid by the chain all the same
    assert all(h["proven_periods"] >= 1 and h["earned"] > 0 for h in held)
