"""The local blocktree on an in-process regtest chain with real host agents on 127.0.0.1:
directories, versions, sharing through a directory's readcap, links into another tree, a
granted node paying from the tree within its allowance, revocation and re-keying.

The command line and separate processes are exercised in tests/chain/app/test_tree_cli.py;
this file pins the model, where failures are quicker to read.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.core.encoding import encode_varint
from chain.core.errors import AllowanceExceeded, BadWritecap, RevokedSigner
from chain.core.events import FragmentOffer, Transfer
from chain.core.keys import KeyPair
from chain.core.params import COIN
from chain.core.writecap import Writecap
from storage_market.blockstore import KIND_DIR, KIND_LINK, MAGIC, BlockStore, StoredBlock
from storage_market.chainclient import Signer
from storage_market.crypto import Readcap, new_block_key
from storage_market.errors import (
    DecryptError,
    FormatError,
    GrantError,
    NoReadcap,
    TreeError,
)
from storage_market.host import HostAgent, HostPolicy
from storage_market.inprocess import InProcessChain
from storage_market.owner import OwnerAgent, StoreOptions
from storage_market.tree import (
    Identity,
    LocalTree,
    Opener,
    TreeIndex,
    archived,
    check_grant,
    decode_grant,
    decode_link,
    encode_grant,
    encode_link,
    identity,
    listing,
)

TICK = 0.1
ALICE = KeyPair.development(0)
BANK = KeyPair.development(1)
BOB = KeyPair.generate()
PHONE = KeyPair.generate()
A = ALICE.principal.root_path
B = BOB.principal.root_path
# 2,000 blocks outlive the test; proof windows of 100 blocks are not missed on a busy machine
OPTS = StoreOptions(k=1, n=2, price=1000, collateral=0, periods=20, period_blocks=100)

pytestmark = pytest.mark.timeout(300)


class World:
    def __init__(self, root: Path, chain: InProcessChain) -> None:
        self.root = root
        self.chain = chain
        self.agents: list[OwnerAgent] = []
        self.hosts: list[HostAgent] = []

    async def node(self, name: str, key: KeyPair) -> LocalTree:
        """A started agent for ``name``'s data directory, acting as its identity."""
        home = self.root / name
        me = identity(home, key, self.chain.chain_id)
        agent = OwnerAgent(home, me.signer(), self.chain, defaults=OPTS)
        await agent.start()
        self.agents.append(agent)
        return LocalTree(home, me, agent, OPTS, wait=120.0)

    async def close(self, tree: LocalTree) -> None:
        await tree.agent.stop()
        self.agents.remove(tree.agent)


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    chain = InProcessChain.open(tmp_path / "chain")
    w = World(tmp_path, chain)
    try:
        bank = Signer(BANK)
        keys = [KeyPair.generate() for _ in range(2)]
        for key in keys:
            await bank.submit(chain, Transfer(key.principal, 10 * COIN))
        for key in (BOB, PHONE):
            await bank.submit(chain, Transfer(key.principal, COIN))
        await chain.mine()
        for i, key in enumerate(keys):
            host = HostAgent(tmp_path / f"host{i}", key, chain, HostPolicy(capacity=1 << 30))
            await host.start()
            w.hosts.append(host)
        await chain.mine()
        chain.start_mining(TICK)
        yield w
    finally:
        for agent in list(w.agents):
            await agent.stop()
        for host in w.hosts:
            await host.stop()
        await chain.close()


async def test_tree_share_link_grant_revoke(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    beach = os.urandom(30_000)
    (photos / "2024" / "beach.jpg").write_bytes(beach)
    (photos / "cat.jpg").write_bytes(b"meow" * 100)
    async with world(tmp_path) as w:
        alice = await w.node("alice", ALICE)
        bob = await w.node("bob", BOB)  # announces Bob's keys
        await announced(w.chain, BOB)
        placed = await alice.put(photos, f"{A}/photos")
        assert placed == [f"{A}/photos", f"{A}/photos/2024", f"{A}/photos/cat.jpg",
                          f"{A}/photos/2024/beach.jpg"]
        rows = listing(alice.index, alice.agent.entries, f"{A}/photos")
        assert [(r["name"], r["kind"], r["health"]) for r in rows] == [
            ("2024", "dir", "ok"), ("cat.jpg", "file", "ok")]
        # Bob holds no readcap yet
        with pytest.raises(NoReadcap):
            await Opener(w.chain, BOB, bob.blocks).read(f"{A}/photos/2024/beach.jpg")
        await alice.share(f"{A}/photos", BOB.principal)
        assert len(alice.index.nodes[f"{A}/photos"].versions) == 2
        # through the directory's readcap, fetched from the hosts
        _, _, data = await Opener(w.chain, BOB, bob.blocks).read(f"{A}/photos/2024/beach.jpg")
        assert bytes(data) == beach
        # through a link in Bob's own tree
        await bob.link(f"{B}/alice-photos", f"{A}/photos")
        read, _, data = await Opener(w.chain, BOB, bob.blocks).read(
            f"{B}/alice-photos/2024/beach.jpg", bob.index)
        assert read == f"{A}/photos/2024/beach.jpg" and bytes(data) == beach
        # a new version of a file: the old one is kept and logged
        old_version = alice.index.nodes[f"{A}/photos/cat.jpg"].versions[0].version
        (photos / "cat.jpg").write_bytes(b"purr" * 100)
        await alice.put(photos / "cat.jpg", f"{A}/photos/cat.jpg")
        kept = archived(alice.datadir, f"{A}/photos/cat.jpg", old_version)
        assert kept is not None and bytes(kept.open(kept.block_key(ALICE))) == b"meow" * 100
        _, _, data = await Opener(w.chain, BOB, bob.blocks).read(f"{A}/photos/cat.jpg")
        assert bytes(data) == b"purr" * 100

        # the phone: announced, granted /alice/phone with an allowance of two blocks
        phone_home = tmp_path / "phone"
        first = await w.node("phone", PHONE)  # announces the phone's keys (its own coin)
        await w.close(first)
        await announced(w.chain, PHONE)
        with pytest.raises(TreeError, match="unknown on chain"):
            await alice.grant(KeyPair.generate().principal, f"{A}/phone", 2**40, None)
        with pytest.raises(TreeError, match="outside this tree"):
            await alice.grant(PHONE.principal, f"{B}/x", 2**40, None)
        token = await alice.grant(PHONE.principal, f"{A}/phone", int(time.time()) + 3600,
                                  5 * OPTS.n * OPTS.price * OPTS.periods // 2)
        index = TreeIndex(phone_home)
        index.token = token
        index.save()
        phone = await w.node("phone", PHONE)
        assert phone.me.tree == ALICE.principal and phone.me.top == f"{A}/phone"
        notes = tmp_path / "notes.txt"
        notes.write_bytes(b"phone notes v1")
        before = w.chain.node.chain.tree.balance(ALICE.principal)
        phone_before = w.chain.node.chain.tree.balance(PHONE.principal)
        await phone.put(notes, f"{A}/phone/notes.txt")
        # the tree paid the escrow and the offers' fees; the phone at most its own announcement
        paid = before - w.chain.node.chain.tree.balance(ALICE.principal)
        assert paid >= OPTS.n * OPTS.price * OPTS.periods
        assert phone_before - w.chain.node.chain.tree.balance(PHONE.principal) < 1000
        with pytest.raises(TreeError, match="outside this node's grant"):
            await phone.put(notes, f"{A}/photos/x")
        await phone.put(notes, f"{A}/phone/more.txt")
        with pytest.raises(GrantError, match="allows"):
            await phone.put(notes, f"{A}/phone/third.txt")
        # the chain itself refuses past the allowance and outside the path
        cap = phone.me.writecap
        assert cap is not None
        signer = Signer(PHONE, ALICE.principal, cap)
        height = await w.chain.tip_height()
        offer = FragmentOffer(path=f"{A}/phone/x", version=b"\x01" * 32, index=0, n=1, k=1,
                              size=100, root=b"\x02" * 32, leaf_size=1024, price=10**6,
                              collateral=0, period_blocks=4, periods=4,
                              expiry_height=height + 50)
        with pytest.raises(AllowanceExceeded):
            await signer.submit(w.chain, offer)
        with pytest.raises(BadWritecap):
            await signer.submit(w.chain, FragmentOffer(**{**_fields(offer), "path": f"{A}/x",
                                                          "price": 1}))
        # Alice reads what the phone wrote, through her directory's key
        _, _, data = await Opener(w.chain, ALICE, alice.blocks).read(f"{A}/phone/notes.txt")
        assert bytes(data) == b"phone notes v1"

        # revoke the phone, unshare Bob: re-keyed, neither reads the new versions
        _, rekeyed = await alice.revoke(PHONE.principal)
        assert f"{A}/phone/notes.txt" in rekeyed and f"{A}/phone" in rekeyed
        await alice.unshare(f"{A}/photos", BOB.principal)
        for reader, path in ((PHONE, f"{A}/phone/notes.txt"),
                             (BOB, f"{A}/photos/2024/beach.jpg")):
            with pytest.raises((NoReadcap, DecryptError)):
                await Opener(w.chain, reader, BlockStore(tmp_path / "x")).read(path)
        with pytest.raises((NoReadcap, DecryptError)):
            await Opener(w.chain, BOB, bob.blocks).read(f"{B}/alice-photos/2024/beach.jpg",
                                                        bob.index)
        _, _, data = await Opener(w.chain, ALICE, alice.blocks).read(f"{A}/phone/notes.txt")
        assert bytes(data) == b"phone notes v1"
        _, _, data = await Opener(w.chain, ALICE, alice.blocks).read(
            f"{A}/photos/2024/beach.jpg")
        assert bytes(data) == beach
        with pytest.raises(GrantError, match="revoked its grant"):
            await phone.put(notes, f"{A}/phone/late.txt")
        # the chain refuses the revoked phone's writes
        with pytest.raises(RevokedSigner):
            await signer.submit(w.chain, FragmentOffer(**{**_fields(offer), "price": 1}))
        # rm releases the contracts
        assert await alice.rm(f"{A}/photos") == 4
        assert not any(p.startswith(f"{A}/photos") for p in alice.index.nodes)


async def announced(chain: InProcessChain, key: KeyPair) -> None:
    deadline = time.monotonic() + 30
    height = await chain.tip_height()
    while True:
        acct = await chain.principal(key.principal)
        if acct is not None and acct.x25519 == key.public.x25519:
            return
        assert time.monotonic() < deadline, "the announcement was not mined"
        height = await chain.wait_for_block(height, 1.0)


def _fields(offer: FragmentOffer) -> dict[str, object]:
    return {f: getattr(offer, f) for f in FragmentOffer.__dataclass_fields__ if f != "kind"}


def test_grant_tokens_refuse_foreign_expired_and_mistyped() -> None:
    chain_id = b"\x07" * 32
    cap = Writecap.issue(chain_id, ALICE, f"{A}/phone", PHONE.principal, 2000, allowance=5)
    token = encode_grant(chain_id, cap)
    assert token.startswith("BCGRANT1") and token.isalnum() and token.isupper()
    got_chain, got = decode_grant(token.lower())
    assert got == cap and check_grant(chain_id, got, got_chain, PHONE.principal, 1000) \
        == ALICE.principal
    with pytest.raises(GrantError, match="issued to"):
        check_grant(chain_id, got, got_chain, BOB.principal, 1000)
    with pytest.raises(GrantError, match="expired"):
        check_grant(chain_id, got, got_chain, PHONE.principal, 2000)
    with pytest.raises(GrantError, match="another network"):
        check_grant(b"\x08" * 32, got, got_chain, PHONE.principal, 1000)
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    with pytest.raises(GrantError, match="checksum"):
        decode_grant(flipped)
    with pytest.raises(GrantError):
        decode_grant("hello")
    forged = Writecap(cap.path, cap.issued_to, cap.expiry + 1, cap.issuer_key, cap.signature, 5)
    with pytest.raises(GrantError, match="signature"):
        check_grant(chain_id, forged, chain_id, PHONE.principal, 1000)


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e,
                                      blacklist_characters="/"), min_size=1, max_size=30))
def test_links_round_trip_and_refuse_garbage(name: str) -> None:
    target = f"{A}/{name}" if name not in (".", "..") else f"{A}/x"
    cap = Readcap.issue(new_block_key(), target, BOB.public)
    assert decode_link(encode_link(target, cap)) == (target, cap)
    with pytest.raises(FormatError):
        decode_link(encode_link(target, cap)[:-1])
    with pytest.raises(FormatError):
        decode_link(b"BCLX" + encode_link(target, cap)[4:])


def test_block_kinds_in_the_record(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    root = StoredBlock.seal(A, b"", new_block_key(), readers=[ALICE.public], kind=KIND_DIR)
    store.put(root)
    key = new_block_key()
    link = StoredBlock.seal(f"{A}/l", b"xyz", key, parent_key=store.block_key(A, ALICE),
                            kind=KIND_LINK)
    again = StoredBlock.decode(link.record)
    assert again.header.kind == KIND_LINK and again.header.record_format == 3
    # a file keeps format 2; a format-3 record claiming kind "file" is refused
    plain = StoredBlock.seal(f"{A}/f", b"xyz", key, parent_key=store.block_key(A, ALICE))
    assert plain.header.record_format == 2
    body = bytearray(link.header.encode())
    for kind, message in ((0, "format 2"), (7, "unknown block kind")):
        body[-1] = kind  # the kind byte ends a format-3 header
        head = MAGIC + bytes((3,)) + encode_varint(len(body)) + bytes(body)
        forged = head + hashlib.sha256(head).digest() + bytes(link.payload)
        with pytest.raises(FormatError, match=message):
            StoredBlock.decode(forged)


def test_identity_refuses_paths_outside(tmp_path: Path) -> None:
    me = Identity(ALICE, ALICE.principal, A)
    with pytest.raises(TreeError, match="outside this tree"):
        me.check_writable(f"{B}/x")
    with pytest.raises(TreeError, match="own directory"):
        me.check_writable(A)
    cap = Writecap.issue(b"\x00" * 32, ALICE, f"{A}/phone", PHONE.principal, 2**40)
    node = Identity(PHONE, ALICE.principal, f"{A}/phone", cap)
    with pytest.raises(TreeError, match="outside this node's grant"):
        node.check_writable(f"{A}/photos")
    assert node.check_writable(f"{A}/phone/a/b") == f"{A}/phone/a/b"
