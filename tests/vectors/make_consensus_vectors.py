"""Consensus test vectors for an independent implementation of ``docs/consensus.md``.

Everything here is deterministic: the regtest development keys, fixed times and fixed fragment
bytes, and Ed25519 signatures are deterministic too, so running this script again writes the
same files byte for byte (``test_consensus_vectors.py`` checks that, and checks every vector
against the code by decoding it).

Run ``python -m tests.vectors.make_consensus_vectors`` from the repository root to rewrite the
``consensus_*.json`` files beside this script.

Files:
- ``consensus_genesis.json``: each network's genesis block.
- ``consensus_block.json``: a valid regtest block at height 1 with six events, the blocks
  file (``blockcoin export``) holding it, and the global tree (every key, the digest) after it.
- ``consensus_events.json``: one event of each kind, with body fields, bytes, id, signer and
  signed message.
- ``consensus_writecap.json``: a three-link writecap chain with allowances.
- ``consensus_principals.json``: the development keys and their principals' text forms.
- ``consensus_merkle.json``: an events root over an odd number of events, level by level.
- ``consensus_storage_proof.json``: a fragment's leaves and root, a period seed and the leaves
  it picks with their paths.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from chain.core.block import Block, events_root
from chain.core.encoding import Writer, encode_varint
from chain.core.events import (
    Announce,
    Body,
    Coinbase,
    Event,
    FragmentExtended,
    FragmentOffer,
    FragmentReleased,
    FragmentStored,
    ProofItem,
    ProvenLeaf,
    Revoke,
    SignedEvent,
    StorageProof,
    Transfer,
    event_id,
    extension_message,
    receipt_message,
)
from chain.core.hashes import ZERO_HASH, leaf_hash, node_hash
from chain.core.header import Header, hash_hex, hash_to_int
from chain.core.keys import KeyPair
from chain.core.params import GENESIS_TIME, HEADER_VERSION, NETWORKS, REGTEST
from chain.core.principal import Principal
from chain.core.storageproof import (
    leaf_count,
    leaf_indexes,
    leaf_length,
    period_seed,
    proof_length,
)
from chain.core.units import COIN
from chain.core.writecap import Writecap
from globaltree.fold import apply_block
from globaltree.queries import GlobalTree
from globaltree.view import StateView
from tests.framework.chainkit import DictDB, hashes_of

HERE = Path(__file__).parent
CHAIN_ID = REGTEST.chain_id
DEV = [KeyPair.development(i) for i in range(10)]
BLOCK_TIME = GENESIS_TIME + 60
WRITECAP_EXPIRY = GENESIS_TIME + 30 * 24 * 3600
FRAGMENT_SIZE = 700  # 11 leaves of 64 bytes, the last one 60 bytes: an odd, uneven tree
LEAF_SIZE = 64


def _hex(data: bytes) -> str:
    return data.hex()


def _header_json(header: Header) -> dict[str, Any]:
    return {"version": header.version, "prev": _hex(header.prev),
            "events_root": _hex(header.events_root), "state_root": _hex(header.state_root),
            "time": header.time, "bits": f"{header.bits:08x}", "nonce": header.nonce}


def _event_json(ev: Event, chain_id: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": int(ev.kind), "kind_name": ev.kind.name, "hex": _hex(ev.raw),
                           "id": _hex(event_id(chain_id, ev))}
    if isinstance(ev, Coinbase):
        out["body"] = {"height": ev.height, "recipient": str(ev.recipient), "amount": ev.amount,
                       "extra": _hex(ev.extra)}
        return out
    out.update(signer_key=_hex(ev.signer_key), signer=str(ev.signer), nonce=ev.nonce, fee=ev.fee,
               account=str(ev.account) if ev.account is not None else None,
               writecap_links=len(ev.writecap.links()) if ev.writecap is not None else 0,
               signing_message=_hex(ev.signing_message(chain_id)), signature=_hex(ev.signature))
    out["body"] = _body_json(ev.body)
    return out


def _body_json(body: Body) -> dict[str, Any]:
    if isinstance(body, FragmentStored):
        return {"offer": _hex(body.offer_id), "host_key": _hex(body.host_key),
                "host": str(body.host), "payout": str(body.payout), "receipt": _hex(body.receipt)}
    if isinstance(body, StorageProof):
        return {"items": [{"contract": _hex(item.contract), "period": item.period,
                           "leaves": [{"leaf": _hex(p.leaf), "path": _hex(p.path)}
                                      for p in item.leaves]} for item in body.items]}
    if isinstance(body, FragmentExtended):
        return {"offer": _hex(body.offer_id), "periods": body.periods,
                "host_signature": _hex(body.host_signature)}
    return body.to_json()


def _sign(key: KeyPair, nonce: int, fee: int, body: Body, account: Principal | None = None,
          writecap: Writecap | None = None) -> SignedEvent:
    return SignedEvent.create(CHAIN_ID, key, nonce, fee, body, account, writecap)


# --- the pieces every file shares ------------------------------------------------------------


def fragment() -> bytes:
    return hashlib.shake_256(b"blockcoin vector fragment").digest(FRAGMENT_SIZE)


def fragment_leaves() -> list[bytes]:
    data = fragment()
    return [data[i : i + LEAF_SIZE] for i in range(0, len(data), LEAF_SIZE)]


def tree_levels(hashes: list[bytes]) -> list[list[bytes]]:
    """Every level of the chain's Merkle tree, leaves' hashes first (an odd last node is
    carried up)."""
    levels = [hashes]
    while len(levels[-1]) > 1:
        level = levels[-1]
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
    return levels


def sibling_path(levels: list[list[bytes]], index: int) -> bytes:
    path = b""
    for level in levels[:-1]:
        if index ^ 1 < len(level):
            path += level[index ^ 1]
        index >>= 1
    return path


def fragment_root() -> bytes:
    return tree_levels([leaf_hash(leaf) for leaf in fragment_leaves()])[-1][0]


def owner_path(key: KeyPair, rest: str) -> str:
    return f"{key.principal.root_path}/{rest}"


def offer_body() -> FragmentOffer:
    return FragmentOffer(path=owner_path(DEV[2], "docs/report.txt"),
                         version=hashlib.sha256(b"report.txt version 1").digest(), index=1, n=3,
                         k=2, size=FRAGMENT_SIZE, root=fragment_root(), leaf_size=LEAF_SIZE,
                         price=1_000, collateral=500, period_blocks=5, periods=2,
                         expiry_height=10)


@cache
def writecap_chain() -> Writecap:
    """DEV0 (the owner) -> DEV1 (its whole tree, 100 coins) -> DEV2 (``photos``, 10 coins) ->
    DEV3 (``photos/2026``, no allowance of its own). The first link is issued to the signer."""
    owner = DEV[0]
    top = Writecap.issue(CHAIN_ID, owner, owner.principal.root_path, DEV[1].principal,
                         WRITECAP_EXPIRY, allowance=100 * COIN)
    mid = Writecap.issue(CHAIN_ID, DEV[1], owner_path(owner, "photos"), DEV[2].principal,
                         WRITECAP_EXPIRY, parent=top, allowance=10 * COIN)
    return Writecap.issue(CHAIN_ID, DEV[2], owner_path(owner, "photos/2026"), DEV[3].principal,
                          WRITECAP_EXPIRY - 1, parent=mid)


@cache
def block_one() -> Block:
    """A valid regtest block on genesis: transfers (one acting for a blocktree under a
    writecap), an announcement, an offer and a revocation; the coinbase claims the fees."""
    delegate = Writecap.issue(CHAIN_ID, DEV[0], DEV[0].principal.root_path, DEV[4].principal,
                              WRITECAP_EXPIRY, allowance=2 * COIN)
    events: list[SignedEvent] = [
        _sign(DEV[0], 0, 200, Transfer(DEV[1].principal, 5 * COIN)),
        _sign(DEV[1], 0, 150, Announce(DEV[1].public.x25519, "127.0.0.1:28633")),
        _sign(DEV[2], 0, 300, offer_body()),
        _sign(DEV[0], 1, 120, Revoke(DEV[5].principal, GENESIS_TIME + 3600)),
        _sign(DEV[4], 0, 250, Transfer(DEV[6].principal, COIN), account=DEV[0].principal,
              writecap=delegate),
    ]
    fees = sum(ev.fee for ev in events)
    all_events: list[Event] = [Coinbase(1, DEV[9].principal, fees, b"vectors"), *events]
    header = Header(HEADER_VERSION, REGTEST.genesis_hash, events_root(all_events), ZERO_HASH,
                    BLOCK_TIME, REGTEST.genesis_bits, 0)
    while hash_to_int(header.hash) > header.target:  # regtest: about one nonce in two
        header = header.with_nonce(header.nonce + 1)
    return Block(header, all_events)


def proof_item(opening_hash: bytes, contract: bytes, period: int) -> tuple[ProofItem, bytes,
                                                                            list[int]]:
    seed = period_seed(opening_hash, contract)
    leaves = fragment_leaves()
    levels = tree_levels([leaf_hash(leaf) for leaf in leaves])
    picks = leaf_indexes(seed, len(leaves), REGTEST.proof_leaves)
    item = ProofItem(contract, period, tuple(ProvenLeaf(leaves[i], sibling_path(levels, i))
                                             for i in picks))
    return item, seed, picks


def offer_event() -> SignedEvent:
    ev = block_one().events[3]
    assert isinstance(ev, SignedEvent)
    return ev


@cache
def one_of_each() -> list[Event]:
    """One event of each kind, in kind order; the storage events follow the block's offer
    (its id is the contract id), hosted by DEV7 with its pay to DEV8."""
    block = block_one()
    offer = offer_event()
    cid = event_id(CHAIN_ID, offer)
    host = DEV[7]
    receipt = host.sign(receipt_message(CHAIN_ID, cid, host.principal, fragment_root(),
                                        DEV[8].principal))
    item, _, _ = proof_item(block.hash, cid, 0)
    extend = host.sign(extension_message(CHAIN_ID, cid, 3))
    return [
        block.events[0],
        block.events[2],
        block.events[1],
        offer,
        _sign(DEV[2], 1, 400, FragmentStored(cid, host.public.ed25519, DEV[8].principal, receipt)),
        _sign(host, 0, 5_000, StorageProof((item,))),
        _sign(DEV[2], 2, 100, FragmentReleased(cid)),
        block.events[4],
        _sign(DEV[2], 3, 200, FragmentExtended(cid, 3, extend)),
    ]


# --- the files -------------------------------------------------------------------------------


def genesis_vectors() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, params in NETWORKS.items():
        g = params.genesis
        out[name] = {
            "chain_id": params.chain_id.decode("ascii"),
            "header": _header_json(g.header),
            "header_hex": _hex(g.header.encode()),
            "hash": _hex(g.hash),
            "hash_display": hash_hex(g.hash),
            "target": f"{g.header.target:064x}",
            "events": [_event_json(ev, params.chain_id) for ev in g.events],
            "events_root": _hex(events_root(g.events)),
            "block_hex": _hex(g.encode()),
        }
    return out


def state_after(blocks: list[Block]) -> dict[str, Any]:
    """The global tree after folding ``blocks`` from genesis: every key and value, and the
    digest ``GET /state/digest`` reports."""
    db = DictDB()
    for height, block in enumerate(blocks):
        view = StateView(db)
        apply_block(view, REGTEST, block, height, hashes_of(blocks[:height]))
        view.commit(db)
    digest, count = GlobalTree(db).digest()
    return {"digest": digest, "keys": count,
            "entries": [[_hex(k), _hex(v)] for k, v in db.iterator(prefix=b"S")]}


def block_vectors() -> dict[str, Any]:
    block = block_one()
    raw = block.encode()
    return {
        "network": REGTEST.name,
        "height": 1,
        "parent": hash_hex(REGTEST.genesis_hash),
        "header": _header_json(block.header),
        "header_hex": _hex(block.header.encode()),
        "hash": _hex(block.hash),
        "hash_display": hash_hex(block.hash),
        "events_root": _hex(block.header.events_root),
        "size": len(raw),
        "events": [_event_json(ev, CHAIN_ID) for ev in block.events],
        "block_hex": _hex(raw),
        "blocks_file_hex": _hex(encode_varint(len(raw)) + raw),
        "state_after": state_after([REGTEST.genesis, block]),
    }


def event_vectors() -> dict[str, Any]:
    events = one_of_each()
    offer_id = event_id(CHAIN_ID, offer_event())
    host = DEV[7]
    return {
        "network": REGTEST.name,
        "chain_id": CHAIN_ID.decode("ascii"),
        "events": [_event_json(ev, CHAIN_ID) for ev in events],
        "receipt_message": _hex(receipt_message(CHAIN_ID, offer_id, host.principal,
                                                fragment_root(), DEV[8].principal)),
        "extension_message": _hex(extension_message(CHAIN_ID, offer_id, 3)),
    }


def writecap_vectors() -> dict[str, Any]:
    cap = writecap_chain()
    w = Writer()
    cap.write(w)
    body = FragmentOffer(path=owner_path(DEV[0], "photos/2026/cat.jpg"),
                         version=hashlib.sha256(b"cat.jpg version 1").digest(), index=0, n=1, k=1,
                         size=FRAGMENT_SIZE, root=fragment_root(), leaf_size=LEAF_SIZE, price=2_000,
                         collateral=0, period_blocks=10, periods=3, expiry_height=20)
    ev = _sign(DEV[3], 0, 500, body, account=DEV[0].principal, writecap=cap)
    return {
        "network": REGTEST.name,
        "owner": str(DEV[0].principal),
        "signer": str(DEV[3].principal),
        "encoding_hex": _hex(bytes(w)),
        "links": [{
            "path": link.path, "issued_to": str(link.issued_to), "expiry": link.expiry,
            "issuer_key": _hex(link.issuer_key), "issuer": str(link.issuer),
            "allowance": link.allowance, "signature": _hex(link.signature),
            "signed_message": _hex(link.link_message(CHAIN_ID)),
            "link_id": _hex(link.link_id(CHAIN_ID)),
        } for link in cap.links()],
        "event": _event_json(ev, CHAIN_ID),
        "event_path": body.path,
        "outflow": body.price * body.periods + ev.fee,
    }


def principal_vectors() -> dict[str, Any]:
    keys = []
    for i, key in enumerate(DEV):
        digest = key.principal.digest
        keys.append({"index": i, "seed": _hex(key.seed), "ed25519": _hex(key.public.ed25519),
                     "x25519": _hex(key.public.x25519), "digest": _hex(digest),
                     "checksum": _hex(hashlib.sha256(b"blockcoin principal checksum"
                                                     + digest).digest()[:4]),
                     "text": str(key.principal)})
    return {"development_keys": keys, "zero_principal": str(Principal(bytes(32)))}


def merkle_vectors() -> dict[str, Any]:
    events = one_of_each()
    levels = tree_levels([leaf_hash(ev.raw) for ev in events])
    return {"network": REGTEST.name, "items": [_hex(ev.raw) for ev in events],
            "levels": [[_hex(h) for h in level] for level in levels],
            "root": _hex(events_root(events)), "empty_root": _hex(events_root([]))}


def storage_proof_vectors() -> dict[str, Any]:
    block = block_one()
    cid = event_id(CHAIN_ID, offer_event())
    item, seed, picks = proof_item(block.hash, cid, 0)
    leaves = fragment_leaves()
    return {
        "network": REGTEST.name,
        "fragment_hex": _hex(fragment()),
        "size": FRAGMENT_SIZE,
        "leaf_size": LEAF_SIZE,
        "leaf_count": leaf_count(FRAGMENT_SIZE, LEAF_SIZE),
        "levels": [[_hex(h) for h in level]
                   for level in tree_levels([leaf_hash(leaf) for leaf in leaves])],
        "root": _hex(fragment_root()),
        "contract_id": _hex(cid),
        "period": 0,
        "opening_block_hash": _hex(block.hash),
        "seed": _hex(seed),
        "picks": [{"j": j, "index": index, "length": leaf_length(index, FRAGMENT_SIZE, LEAF_SIZE),
                   "path_hashes": proof_length(index, len(leaves)), "leaf": _hex(p.leaf),
                   "path": _hex(p.path)}
                  for j, (index, p) in enumerate(zip(picks, item.leaves, strict=True))],
    }


BUILDERS = {
    "consensus_genesis.json": genesis_vectors,
    "consensus_block.json": block_vectors,
    "consensus_events.json": event_vectors,
    "consensus_writecap.json": writecap_vectors,
    "consensus_principals.json": principal_vectors,
    "consensus_merkle.json": merkle_vectors,
    "consensus_storage_proof.json": storage_proof_vectors,
}


def render(name: str) -> str:
    return json.dumps(BUILDERS[name](), indent=1) + "\n"


if __name__ == "__main__":
    for file_name in BUILDERS:
        (HERE / file_name).write_text(render(file_name))
