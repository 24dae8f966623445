"""The consensus vectors of ``docs/consensus.md`` against the code: every vector decodes with
the project's decoders to the same bytes, ids and hashes, the block is accepted by a real chain
state, and the generator still writes exactly the files checked in (so they cannot drift)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chain.core.block import Block, events_root
from chain.core.blockfile import read_blocks, write_blocks
from chain.core.encoding import decode_all
from chain.core.errors import BadWritecap
from chain.core.events import Coinbase, SignedEvent, StorageProof, decode_event, event_id
from chain.core.hashes import merkle_root_of_hashes, node_hash
from chain.core.header import Header, hash_hex, hash_to_int
from chain.core.keys import KeyPair, verify
from chain.core.params import NETWORKS, REGTEST
from chain.core.principal import Principal
from chain.core.storageproof import leaf_count, leaf_indexes, period_seed, root_from_path
from chain.core.writecap import Writecap, check_writecap
from tests.framework.chainkit import open_chain, state_dump
from tests.vectors import make_consensus_vectors as gen

HERE = Path(__file__).parent


def load(name: str) -> Any:
    return json.loads((HERE / name).read_text())


@pytest.mark.parametrize("name", sorted(gen.BUILDERS))
def test_files_are_what_the_generator_writes(name: str) -> None:
    assert (HERE / name).read_text() == gen.render(name), (
        f"{name} is stale: run python -m tests.vectors.make_consensus_vectors")


def check_event(vector: dict[str, Any], chain_id: bytes) -> SignedEvent | Coinbase:
    ev = decode_event(bytes.fromhex(vector["hex"]))
    assert ev.raw.hex() == vector["hex"]
    assert int(ev.kind) == vector["kind"]
    assert event_id(chain_id, ev).hex() == vector["id"]
    if isinstance(ev, Coinbase):
        body = vector["body"]
        assert (ev.height, str(ev.recipient), ev.amount, ev.extra.hex()) == (
            body["height"], body["recipient"], body["amount"], body["extra"])
        return ev
    assert str(ev.signer) == vector["signer"]
    assert (ev.nonce, ev.fee) == (vector["nonce"], vector["fee"])
    assert (str(ev.account) if ev.account else None) == vector["account"]
    assert ev.signing_message(chain_id).hex() == vector["signing_message"]
    assert vector["signing_message"] + vector["signature"] == chain_id.hex() + vector["hex"]
    assert verify(bytes.fromhex(vector["signer_key"]), bytes.fromhex(vector["signing_message"]),
                  bytes.fromhex(vector["signature"]))
    ev.check_stateless(chain_id, REGTEST.max_event_bytes)
    return ev


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_genesis(name: str) -> None:
    params = NETWORKS[name]
    v = load("consensus_genesis.json")[name]
    block = Block.decode(bytes.fromhex(v["block_hex"]))
    header = Header.decode(bytes.fromhex(v["header_hex"]))
    assert block.header == header
    h = v["header"]
    assert header == Header(h["version"], bytes.fromhex(h["prev"]), bytes.fromhex(h["events_root"]),
                            bytes.fromhex(h["state_root"]), h["time"], int(h["bits"], 16),
                            h["nonce"])
    assert block.hash == params.genesis_hash == bytes.fromhex(v["hash"])
    assert hash_hex(block.hash) == v["hash_display"]
    assert hash_to_int(block.hash) <= header.target == int(v["target"], 16)
    assert [e.raw.hex() for e in block.events] == [e["hex"] for e in v["events"]]
    for ev in v["events"]:
        assert isinstance(check_event(ev, params.chain_id), Coinbase)
    assert events_root(block.events).hex() == v["events_root"] == h["events_root"]


def test_block_is_accepted_by_a_chain_state(tmp_path: Path) -> None:
    v = load("consensus_block.json")
    raw = bytes.fromhex(v["block_hex"])
    block = Block.decode(raw)
    assert block.encode() == raw and block.size == v["size"] == len(raw)
    assert block.header.encode().hex() == v["header_hex"] == raw[:116].hex()
    assert block.hash.hex() == v["hash"] and hash_hex(block.hash) == v["hash_display"]
    assert events_root(block.events).hex() == v["events_root"]
    for ev, vector in zip(block.events, v["events"], strict=True):
        assert check_event(vector, REGTEST.chain_id).raw == ev.raw
    blocks_file = tmp_path / "blocks.dat"
    blocks_file.write_bytes(bytes.fromhex(v["blocks_file_hex"]))
    (read_back,) = read_blocks(blocks_file)
    assert read_back.encode() == raw
    again = tmp_path / "again.dat"
    write_blocks(again, iter([block]))
    assert again.read_bytes().hex() == v["blocks_file_hex"]
    chain = open_chain(tmp_path / "node")
    try:
        result = chain.accept_block(block, now=v["header"]["time"])
        assert result.new_tip and result.height == v["height"] == 1
        assert chain.tip.hash == block.hash
        state = v["state_after"]
        assert chain.tree.digest() == (state["digest"], state["keys"])
        assert [[k.hex(), val.hex()] for k, val in sorted(state_dump(chain).items())] == (
            state["entries"])
    finally:
        chain.close()


def test_one_event_of_each_kind() -> None:
    v = load("consensus_events.json")
    chain_id = v["chain_id"].encode()
    kinds = [check_event(ev, chain_id).kind for ev in v["events"]]
    assert [int(k) for k in kinds] == list(range(9))
    stored = decode_event(bytes.fromhex(v["events"][4]["hex"]))
    extended = decode_event(bytes.fromhex(v["events"][8]["hex"]))
    assert isinstance(stored, SignedEvent) and isinstance(extended, SignedEvent)
    host_key = bytes.fromhex(v["events"][4]["body"]["host_key"])
    assert verify(host_key, bytes.fromhex(v["receipt_message"]),
                  bytes.fromhex(v["events"][4]["body"]["receipt"]))
    assert verify(host_key, bytes.fromhex(v["extension_message"]),
                  bytes.fromhex(v["events"][8]["body"]["host_signature"]))
    # a contract's id is its offer's event id
    assert v["events"][4]["body"]["offer"] == v["events"][3]["id"]


def test_writecap_chain() -> None:
    v = load("consensus_writecap.json")
    chain_id = REGTEST.chain_id
    cap = decode_all(bytes.fromhex(v["encoding_hex"]), Writecap.read)
    links = cap.links()
    assert len(links) == len(v["links"]) == 3
    for link, lv in zip(links, v["links"], strict=True):
        assert (link.path, str(link.issued_to), link.expiry, link.allowance) == (
            lv["path"], lv["issued_to"], lv["expiry"], lv["allowance"])
        assert link.link_message(chain_id).hex() == lv["signed_message"]
        assert link.link_id(chain_id).hex() == lv["link_id"]
        assert verify(link.issuer_key, bytes.fromhex(lv["signed_message"]), link.signature)
    ev = check_event(v["event"], chain_id)
    assert isinstance(ev, SignedEvent) and ev.writecap == cap
    assert ev.raw.hex().find(v["encoding_hex"]) > 0
    owner, signer = Principal.parse(v["owner"]), Principal.parse(v["signer"])
    last_expiry = min(link.expiry for link in links)
    check_writecap(chain_id, cap, signer, v["event_path"], owner, last_expiry - 1, lambda p: False)
    with pytest.raises(BadWritecap):
        check_writecap(chain_id, cap, signer, v["event_path"], owner, last_expiry, lambda p: False)
    with pytest.raises(BadWritecap):
        check_writecap(chain_id, cap, signer, owner.root_path, owner, 0, lambda p: False)


def test_principal_text_forms() -> None:
    v = load("consensus_principals.json")
    for key in v["development_keys"]:
        pair = KeyPair(bytes.fromhex(key["seed"]))
        assert pair.seed == KeyPair.development(key["index"]).seed
        assert (pair.public.ed25519.hex(), pair.public.x25519.hex()) == (key["ed25519"],
                                                                          key["x25519"])
        principal = Principal.parse(key["text"])
        assert principal.digest.hex() == key["digest"] and str(principal) == key["text"]
        assert len(key["text"]) == 61
    assert Principal.parse(v["zero_principal"]).digest == bytes(32)


def test_merkle_root_of_an_odd_count() -> None:
    v = load("consensus_merkle.json")
    events = [decode_event(bytes.fromhex(x)) for x in v["items"]]
    assert len(events) % 2 == 1
    assert events_root(events).hex() == v["root"] == v["levels"][-1][0]
    levels = [[bytes.fromhex(h) for h in level] for level in v["levels"]]
    for below, above in zip(levels, levels[1:], strict=False):
        pairs = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        assert above == pairs + ([below[-1]] if len(below) % 2 else [])
    assert merkle_root_of_hashes(levels[0]).hex() == v["root"]
    assert v["empty_root"] == "00" * 32


def test_storage_proof_seed_and_picks() -> None:
    v = load("consensus_storage_proof.json")
    count = leaf_count(v["size"], v["leaf_size"])
    assert count == v["leaf_count"] == len(v["levels"][0])
    seed = period_seed(bytes.fromhex(v["opening_block_hash"]), bytes.fromhex(v["contract_id"]))
    assert seed.hex() == v["seed"]
    assert leaf_indexes(seed, count, REGTEST.proof_leaves) == [p["index"] for p in v["picks"]]
    data = bytes.fromhex(v["fragment_hex"])
    root = bytes.fromhex(v["root"])
    for pick in v["picks"]:
        leaf, path = bytes.fromhex(pick["leaf"]), bytes.fromhex(pick["path"])
        start = pick["index"] * v["leaf_size"]
        assert leaf == data[start : start + v["leaf_size"]] and len(leaf) == pick["length"]
        assert len(path) == 32 * pick["path_hashes"]
        assert root_from_path(leaf, pick["index"], count, path) == root
        assert root_from_path(leaf, pick["index"], count, path + bytes(32)) is None
    proof = decode_event(bytes.fromhex(load("consensus_events.json")["events"][5]["hex"]))
    assert isinstance(proof, SignedEvent) and isinstance(proof.body, StorageProof)
    (item,) = proof.body.items
    assert (item.contract.hex(), item.period) == (v["contract_id"], v["period"])
    assert [(p.leaf.hex(), p.path.hex()) for p in item.leaves] == [
        (pick["leaf"], pick["path"]) for pick in v["picks"]]
