"""JSON renderings of blocks, events and headers, shared by the API and the command line."""

from __future__ import annotations

from typing import Any

from chain.core.block import Block
from chain.core.events import (
    Announce,
    Coinbase,
    Event,
    FragmentExtended,
    FragmentOffer,
    FragmentReleased,
    FragmentStored,
    Revoke,
    SignedEvent,
    StorageProof,
    Transfer,
    event_id,
)
from chain.core.header import Header, hash_hex


def body_json(ev: SignedEvent) -> dict[str, Any]:
    body = ev.body
    if isinstance(body, Transfer):
        return {"to": str(body.to), "amount": body.amount}
    if isinstance(body, Announce):
        return {"x25519": body.x25519.hex(), "address": body.address}
    if isinstance(body, FragmentOffer):
        return {"path": body.path, "version": body.version.hex(), "index": body.index,
                "n": body.n, "k": body.k, "size": body.size, "root": body.root.hex(),
                "leaf_size": body.leaf_size, "price": body.price, "collateral": body.collateral,
                "period_blocks": body.period_blocks, "periods": body.periods,
                "expiry_height": body.expiry_height}
    if isinstance(body, FragmentStored):
        return {"offer": body.offer_id.hex(), "host": str(body.host), "payout": str(body.payout)}
    if isinstance(body, StorageProof):
        return {"items": [{"contract": item.contract.hex(), "period": item.period,
                           "leaves": len(item.leaves)} for item in body.items]}
    if isinstance(body, FragmentReleased):
        return {"offer": body.offer_id.hex()}
    if isinstance(body, FragmentExtended):
        return {"offer": body.offer_id.hex(), "periods": body.periods}
    if isinstance(body, Revoke):
        return {"principal": str(body.principal), "until": body.until}
    return {}


def event_json(ev: Event, chain_id: bytes, eid: bytes | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": (eid or event_id(chain_id, ev)).hex(),
                            "kind": ev.kind.name.lower(), "size": len(ev.raw)}
    if isinstance(ev, Coinbase):
        item.update(recipient=str(ev.recipient), amount=ev.amount, height=ev.height)
    else:
        item.update(signer=str(ev.signer), nonce=ev.nonce, fee=ev.fee,
                    account=str(ev.account) if ev.account else None)
        item.update(body_json(ev))
    return item


def header_json(header: Header, height: int | None) -> dict[str, Any]:
    return {"hash": hash_hex(header.hash), "height": height, "prev": hash_hex(header.prev),
            "time": header.time, "bits": f"{header.bits:08x}", "nonce": header.nonce}


def block_json(block: Block, height: int | None, chain_id: bytes) -> dict[str, Any]:
    data = header_json(block.header, height)
    data["hash"] = hash_hex(block.hash)
    data["size"] = block.size
    data["events"] = [event_json(ev, chain_id) for ev in block.events]
    return data
