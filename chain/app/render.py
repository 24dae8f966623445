"""The human form of what the API and the commands return as JSON.

JSON carries exact integers (base units, bytes) under one vocabulary of keys; people read coins
and KiB/MiB. :func:`human` turns one value into text by its key, so every command shows an
amount or a size the same way, and a new key gets the right unit by being named in
:data:`AMOUNT_KEYS` or :data:`SIZE_KEYS`.
"""

from __future__ import annotations

import time
from typing import Any

from chain.core.units import format_coins, format_size

AMOUNT_KEYS = frozenset({
    "amount", "fee", "price", "collateral", "balance", "earned", "collateral_locked",
    "paid_total", "escrow", "future", "min_price", "max_collateral", "reward",
})
SIZE_KEYS = frozenset({"size", "bytes_stored", "capacity", "used", "fragment_size"})
_HIDDEN_IN_EVENTS = frozenset({"id", "kind", "signer", "nonce", "fee", "account", "size"})


def short(ident: object, keep: int = 12) -> str:
    """A principal, hash or id cut to ``keep`` characters and an ellipsis; None as ``-``."""
    if ident is None or ident == "":
        return "-"
    text = str(ident)
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def human(key: str, value: Any) -> str:
    """``value`` for a person, by the unit its ``key`` names."""
    if isinstance(value, int) and not isinstance(value, bool):
        if key in AMOUNT_KEYS:
            return format_coins(value)
        if key in SIZE_KEYS:
            return format_size(value)
    if value is None:
        return "-"
    return str(value)


def fields_text(data: dict[str, Any], indent: str = "") -> str:
    """``key: value`` lines, nested dicts indented under their key."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(fields_text(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {human(key, value)}")
    return "\n".join(lines)


def event_line(ev: dict[str, Any]) -> str:
    kind = str(ev["kind"])
    if kind == "coinbase":
        return f"{kind:<18} -> {short(ev['recipient'])} {format_coins(int(ev['amount']))}"
    details = " ".join(f"{k}={human(k, v) if k in AMOUNT_KEYS | SIZE_KEYS else short(v, 16)}"
                       for k, v in ev.items() if k not in _HIDDEN_IN_EVENTS
                       and not isinstance(v, (list, dict)))
    return (f"{kind:<18} {short(ev.get('signer'))} #{ev.get('nonce')} "
            f"fee {format_coins(int(ev.get('fee', 0)))}  {details}  id {short(ev['id'], 16)}")


def block_text(block: dict[str, Any]) -> str:
    """A block: one header line, one summary line, one line per event."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(block["time"])))
    events = block.get("events", [])
    lines = [f"block {block['height']} {block['hash']}",
             f"  {when} · {format_size(int(block['size']))} · {len(events)} event"
             f"{'' if len(events) == 1 else 's'} · prev {short(block['prev'], 16)} · "
             f"bits {block['bits']} · nonce {block['nonce']}"]
    lines += [f"  {event_line(ev)}" for ev in events]
    return "\n".join(lines)


def principal_text(data: dict[str, Any]) -> str:
    return fields_text({k: v for k, v in data.items() if v is not None or k != "host"})


def fragments_text(data: dict[str, Any]) -> str:
    frags: dict[str, list[dict[str, Any]]] = data["fragments"]
    if not frags:
        return f"{data['path']}: no fragments stored"
    lines = [str(data["path"])]
    for index, holders in sorted(frags.items(), key=lambda kv: int(kv[0])):
        for h in holders:
            lines.append(f"  [{index}] {h['host']} {h['address'] or '-'} "
                         f"{format_size(int(h['size']))}, until block {h['end_height']}")
    return "\n".join(lines)
