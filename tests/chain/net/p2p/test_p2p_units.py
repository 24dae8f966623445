"""Protocol pieces in process: message encoding (round trip, strict decoding of anything),
the header tree (checks, best chain, locators, invalid branches), addresses and bans."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.core.errors import BadParent, BadProofOfWork, DecodeError
from chain.core.events import SignedEvent
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.net.p2p.addrman import AddressBook, parse_address, parse_peer_spec
from chain.net.p2p.bans import BanList
from chain.net.p2p.eviction import Candidate, select_victim
from chain.net.p2p.fetchwait import BlockWaits
from chain.net.p2p.gate import ConnectionGate, Stage
from chain.net.p2p.messages import (
    MAX_HEADERS,
    Addr,
    AddrEntry,
    BlockMsg,
    Events,
    GetAddr,
    GetBlocks,
    GetHeaders,
    Headers,
    Hello,
    NotFound,
    Ping,
    Pong,
    decode_message,
    encode_message,
)
from chain.net.p2p.peer import TokenBucket
from chain.net.p2p.presync import HeaderPreSync, Phase, PreSyncError
from chain.node.headers import HeaderTree
from tests.framework.chainkit import unsolved_nonce
from tests.framework.netkit import make_blocks

BLOCKS = make_blocks(30, events_per_block=2, seed=5)
P = KeyPair.development(3).principal


def samples() -> list[object]:
    ev = BLOCKS[0].events[1]
    assert isinstance(ev, SignedEvent)
    return [
        Hello(1, 1, REGTEST.chain_id, REGTEST.genesis_hash, P, 30, 12345, BLOCKS[-1].hash,
              "127.0.0.1:1", "blockcoin/0.1", 1_800_000_000),
        Ping(7), Pong(2**63), GetHeaders([b.hash for b in BLOCKS[:5]]),
        GetHeaders([], BLOCKS[0].hash), Headers([b.header for b in BLOCKS]),
        GetBlocks([b.hash for b in BLOCKS[:3]]), BlockMsg.of(BLOCKS[3]), NotFound([bytes(32)]),
        Events([ev]), GetAddr(), Addr([AddrEntry(P, "example.org:8633", 5)]),
    ]


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_messages_round_trip_exactly(msg: object) -> None:
    data = encode_message(msg)  # type: ignore[arg-type]
    back = decode_message(data)
    assert encode_message(back) == data
    if not isinstance(msg, BlockMsg):
        assert back == msg
    with pytest.raises(DecodeError):
        decode_message(data + b"\x00")
    for cut in range(len(data) if len(data) < 200 else 50):
        with pytest.raises(DecodeError):
            decode_message(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decoding_garbage_only_raises_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 11), st.binary(max_size=300))
def test_decoding_typed_garbage_only_raises_decode_error(kind: int, body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(bytes([kind]) + body)


def test_limits_are_enforced_on_decode() -> None:
    too_many = bytes([5]) + (MAX_HEADERS + 1).to_bytes(2, "little")  # not even a varint
    with pytest.raises(DecodeError):
        decode_message(too_many)
    hello = encode_message(samples()[0])  # type: ignore[arg-type]
    with pytest.raises(DecodeError):  # a coinbase is never relayed
        decode_message(bytes([9, 1]) + bytes([len(BLOCKS[0].events[0].raw)])
                       + BLOCKS[0].events[0].raw)
    assert decode_message(hello)


def test_header_tree_checks_and_tracks_the_best_chain() -> None:
    tree = HeaderTree(REGTEST)
    now = int(time.time())
    last = tree.add_headers([b.header for b in BLOCKS[:20]], now)
    assert last.height == 20 and tree.best is last
    assert tree.best_chain[20] == BLOCKS[19].hash
    # A side branch with less work does not move the best header.
    side = make_blocks(5, events_per_block=0, seed=99, parent=BLOCKS[9].header, start_height=10)
    side_last = tree.add_headers([b.header for b in side], now)
    assert tree.best is last and not tree.on_best_chain(side_last)
    assert tree.fork_height(side_last) == 10
    assert tree.fork_point(side_last, last).height == 10
    # Headers must be a chain on a known parent, with valid proof of work.
    with pytest.raises(BadParent):
        tree.add_headers([BLOCKS[25].header], now)
    bad = unsolved_nonce(BLOCKS[20].header)
    with pytest.raises(BadProofOfWork):
        tree.add_headers([bad], now)
    # Locator: ten one apart, then doubling, ending at genesis.
    more = tree.add_headers([b.header for b in BLOCKS[20:]], now)
    loc = tree.locator()
    assert loc[0] == more.hash and loc[-1] == REGTEST.genesis_hash
    heights = [tree.nodes[h].height for h in loc]
    assert heights[:10] == list(range(30, 20, -1)) and heights == sorted(heights, reverse=True)
    # Marking a block invalid moves the best header to the best valid one.
    tree.mark_invalid(BLOCKS[15].hash)
    assert tree.best is tree.nodes[BLOCKS[14].hash]  # ties with the side branch; seen first
    assert tree.best.work == side_last.work and tree.best_chain[-1] == BLOCKS[14].hash
    assert all(tree.nodes[b.hash].invalid for b in BLOCKS[15:])


def test_addresses_and_bans() -> None:
    assert parse_address("127.0.0.1:8633") == ("127.0.0.1", 8633)
    assert parse_address("[::1]:1") == ("::1", 1)
    for bad in ("nohost", ":1", "h:0", "h:70000", "h:x", "a b:1", "a/b:1"):
        with pytest.raises(ValueError):
            parse_address(bad)
    principal, address = parse_peer_spec(f"{P}@10.0.0.1:5")
    assert principal == P and address == "10.0.0.1:5"
    book = AddressBook()
    assert book.add("garbage", None, "peer") is None
    book.add("10.0.0.1:5", None, "peer")
    book.add("10.0.0.1:5", P, "announce")
    info = book.entries["10.0.0.1:5"]
    assert info.principal == P and info.source == "announce"
    book.add("10.0.0.1:5", KeyPair.development(4).principal, "peer")  # hearsay cannot replace
    assert info.principal == P
    book.failure("10.0.0.1:5")
    assert book.candidates(time.time(), set()) != [] or info.backoff() > 0
    bans = BanList(60)
    bans.ban(P, None, "test")
    assert bans.is_banned(P) and not bans.is_banned(KeyPair.development(5).principal)
    bans.ban(None, "1.2.3.4:5", "wrong key", seconds=0)
    assert not bans.is_banned(address="1.2.3.4:5")
    assert [b["principal"] for b in bans.to_json()] == [str(P)]


def test_bans_outlive_a_restart_and_a_damaged_line_costs_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "bans.log"
    other = KeyPair.development(5).principal
    bans = BanList(60, path)
    bans.ban(P, None, "sent an invalid block")
    bans.ban(None, "1.2.3.4:5", "wrong key")
    bans.ban(other, None, "short", seconds=0)  # already over: not kept
    again = BanList(60, path)  # the node restarts
    assert again.is_banned(P) and again.is_banned(address="1.2.3.4:5")
    assert not again.is_banned(other)
    assert {b["reason"] for b in again.to_json()} == {"sent an invalid block", "wrong key"}
    again.clear()
    assert not BanList(60, path).is_banned(P)
    again.ban(P, None, "again")
    with path.open("a") as fh:
        fh.write('{"kind": "principal", "key": "torn')  # a crash in the middle of an append
    assert BanList(60, path).is_banned(P)


def test_bans_by_address_and_subnet_are_one_append_each(tmp_path: Path) -> None:
    path = tmp_path / "bans.log"
    bans = BanList(60, path)
    bans.ban(P, None, "garbage", ip="10.1.2.3")
    assert bans.is_banned(ip="10.1.2.3") and not bans.is_banned(ip="10.1.2.4")
    bans.ban(ip="192.168.7.0/24", reason="operator")
    assert bans.is_banned(ip="192.168.7.200") and not bans.is_banned(ip="192.168.8.1")
    size = path.stat().st_size
    bans.ban(KeyPair.development(6).principal, None, "x")
    grown = path.read_bytes()[size:]
    assert grown.count(b"\n") == 1  # one line appended, nothing rewritten
    again = BanList(60, path)
    assert again.is_banned(ip="192.168.7.9") and again.is_banned(ip="10.1.2.3")
    assert {b["network"] for b in again.to_json()} >= {"10.1.2.3/32", "192.168.7.0/24"}


def test_token_bucket_limits_bursts() -> None:
    bucket = TokenBucket(rate=10, burst=20)
    assert sum(bucket.take() for _ in range(100)) <= 21


def test_presync_keeps_commitments_only_and_checks_the_redownload() -> None:
    tree = HeaderTree(REGTEST)
    ours = make_blocks(3, events_per_block=0, seed=40)
    tree.add_headers([b.header for b in ours])
    theirs = [b.header for b in make_blocks(5, events_per_block=0, seed=41)]
    ps = HeaderPreSync(tree, tree.genesis)
    ps.feed(theirs[:2], int(time.time()))
    assert ps.work < tree.best.work and len(tree) == 4  # checked, not stored
    ps.feed(theirs[2:], int(time.time()))
    assert ps.work > tree.best.work and len(ps.commitments) == 5
    ps.start_redownload()
    assert ps.phase is Phase.REDOWNLOAD and ps.follows(theirs)
    ps.verify(theirs[:3])
    assert ps.follows(theirs[3:]) and not ps.redownload_done
    other = [b.header for b in make_blocks(5, events_per_block=0, seed=42)]
    with pytest.raises(PreSyncError):  # 1 in 256 per header to pass by luck: two must match
        ps.verify(other[3:])
        ps.verify(other[3:])


def test_blocks_nobody_delivers_stop_being_candidates_until_new_work() -> None:
    tree = HeaderTree(REGTEST)
    chain = make_blocks(4, events_per_block=0, seed=43)
    tree.add_headers([b.header for b in chain[:3]])
    waits = BlockWaits(grace=5.0, max_failures=2)
    first = chain[0].hash
    assert not waits.give_up(first, has_source=False, now=100.0)
    assert waits.give_up(first, has_source=False, now=105.0)
    tree.mark_unavailable(first)
    assert tree.best is tree.genesis
    tree.add_headers([chain[3].header])  # new work on top: worth trying again
    assert tree.best.hash == chain[3].hash and not tree.get(first).unavailable  # type: ignore[union-attr]
    waits.failed(first, now=110.0)
    waits.failed(first, now=111.0)
    assert waits.give_up(first, has_source=True, now=112.0)
    assert waits.exhausted(first, now=111.0 + waits.retry_after - 1)
    # Failures are forgotten after a while: a chain nobody mines on any more can come back.
    assert not waits.exhausted(first, now=111.0 + waits.retry_after)
    assert not waits.give_up(first, has_source=True, now=111.0 + waits.retry_after)


def test_eviction_protects_useful_peers_and_picks_the_busiest_group() -> None:
    useful = [Candidate(f"fast{i}", f"10.0.{i}.1", 0.0, 0.001, 0.0, 0.0) for i in range(4)]
    useful += [Candidate(f"blocks{i}", f"10.1.{i}.1", 0.0, None, 50.0 + i, 0.0) for i in range(4)]
    flood = [Candidate(f"flood{i}", f"203.0.113.{i}", 100.0 + i, None, 0.0, 0.0)
             for i in range(40)]
    assert select_victim(useful) is None
    victim = select_victim(useful + flood)
    assert victim == "flood39"  # the youngest of the busiest group


def test_the_gate_caps_per_address_and_evicts_the_busiest_idle() -> None:
    class FakeTransport:
        def __init__(self, host: str) -> None:
            self.host, self.aborted = host, False

        def get_extra_info(self, name: str) -> tuple[str, int]:
            return (self.host, 1)

        def abort(self) -> None:
            self.aborted = True

    gate = ConnectionGate("t", max_total=4, max_per_host=3, pending_timeout=10,
                          idle_timeout=10)
    flood = [FakeTransport("10.9.9.9") for _ in range(4)]
    assert [gate.admit(t) for t in flood] == [True, True, True, False]  # type: ignore[arg-type]
    honest = FakeTransport("10.0.0.1")
    assert gate.admit(honest)  # type: ignore[arg-type]
    assert gate.admit(FakeTransport("10.0.0.2"))  # type: ignore[arg-type]
    assert sum(t.aborted for t in flood) == 1 and not honest.aborted  # full: the flood gives way
    gate.set_stage(honest, Stage.ACTIVE)  # type: ignore[arg-type]
    assert gate.sweep(now=1e12) == 3 and not honest.aborted
