"""JSON renderings of blocks, events and headers, shared by the API and the command line."""

from __future__ import annotations

from typing import Any

from chain.core.block import Block
from chain.core.events import (
    Coinbase,
    Event,
    SignedEvent,
    event_id,
)
from chain.core.header import Header, hash_hex


def body_json(ev: SignedEvent) -> dict[str, Any]:
    return ev.body.to_json()


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
