"""Encoders round-trip exactly; decoders fed random or mutated bytes raise only DecodeError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.core.block import Block
from chain.core.encoding import Reader, Writer, decode_all, encode_varint
from chain.core.errors import DecodeError, PrincipalFormatError
from chain.core.events import (
    Announce,
    FragmentExtended,
    FragmentOffer,
    FragmentStored,
    ProofItem,
    ProvenLeaf,
    StorageProof,
    Transfer,
    decode_event,
)
from chain.core.header import Header, compact_to_target, target_to_compact
from chain.core.principal import Principal
from chain.core.writecap import Writecap
from globaltree.records import Account, Contract, ContractState, HostRecord
from ledger.store import IndexEntry
from tests.framework.chainkit import DEV, P, sign

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u64 = st.integers(0, 2**64 - 1)
b32 = st.binary(min_size=32, max_size=32)


@given(u64)
def test_varint_roundtrip(value: int) -> None:
    raw = encode_varint(value)
    assert decode_all(raw, lambda r: r.varint()) == value


@given(st.binary(max_size=12))
def test_varint_decoder_is_strict(data: bytes) -> None:
    try:
        value = decode_all(data, lambda r: r.varint())
    except DecodeError:
        return
    assert encode_varint(value) == data  # anything accepted is the one canonical form


def test_non_minimal_varint_refused() -> None:
    with pytest.raises(DecodeError):
        decode_all(b"\x80\x00", lambda r: r.varint())
    with pytest.raises(DecodeError):
        decode_all(b"\x01\x00", lambda r: r.varint())  # trailing byte


sig64 = st.binary(min_size=64, max_size=64)
offers = st.builds(FragmentOffer, st.just(DEV[0].principal.root_path + "/a"), b32,
                   st.integers(0, 4), st.just(5), st.just(3), u64, b32, st.just(1024),
                   st.integers(1, 2**64 - 1), u64, st.integers(1, 99), st.integers(1, 99), u64)
proofs = st.builds(StorageProof, st.lists(st.builds(
    ProofItem, b32, u64, st.lists(st.builds(
        ProvenLeaf, st.binary(min_size=1, max_size=1024),
        st.lists(b32, max_size=20).map(b"".join)), min_size=1, max_size=4).map(tuple)),
    min_size=1, max_size=3, unique_by=lambda item: item.contract).map(tuple))
bodies = st.one_of(
    st.builds(Transfer, st.builds(Principal, b32), st.integers(1, 2**64 - 1)),
    st.builds(Announce, b32, st.sampled_from(["", "127.0.0.1:80", "host.example:65535"])),
    proofs,
    st.builds(FragmentStored, b32, b32, st.builds(Principal, b32), sig64),
    st.builds(FragmentExtended, b32, st.integers(1, 2**64 - 1), sig64),
    offers,
)


@FUZZ
@given(bodies, st.integers(0, 9), u64, u64, st.data())
def test_event_roundtrip_and_mutations(body: object, key: int, nonce: int, fee: int,
                                       data: st.DataObject) -> None:
    ev = sign(DEV[key], nonce, body, fee)  # type: ignore[arg-type]
    assert decode_event(ev.raw) == ev
    assert ev.verify_signature(P.chain_id)
    raw = bytearray(ev.raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "extend", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        elif op == "extend":
            raw += data.draw(st.binary(min_size=1, max_size=8))
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = decode_event(bytes(raw))
    except DecodeError:
        return
    assert decoded.raw == bytes(raw)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_only_decode_error(data: bytes) -> None:
    decoders = [
        decode_event,
        Block.decode,
        Header.decode,
        lambda d: decode_all(d, Writecap.read),
        Account.decode,
        Contract.decode,
        HostRecord.decode,
        lambda d: IndexEntry.decode(b"\0" * 32, d),
    ]
    for decode in decoders:
        with contextlib.suppress(DecodeError):
            decode(data)


@FUZZ
@given(st.data())
def test_block_mutations_only_decode_error(data: st.DataObject) -> None:
    raw = bytearray(P.genesis.encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    try:
        block = Block.decode(bytes(raw))
    except DecodeError:
        return
    assert block.encode() == bytes(raw)


@given(st.integers(1, 2**256 - 1))
def test_compact_target_roundtrip_rounds_down(target: int) -> None:
    bits = target_to_compact(target)
    decoded = compact_to_target(bits)
    assert decoded <= target
    assert target_to_compact(decoded) == bits


def test_negative_compact_refused() -> None:
    with pytest.raises(DecodeError):
        compact_to_target(0x04923456)


@given(b32)
def test_principal_text_roundtrip(digest: bytes) -> None:
    p = Principal(digest)
    assert Principal.parse(str(p)) == p


@given(b32, st.integers(3, 60), st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"))
def test_mistyped_principal_refused(digest: bytes, pos: int, ch: str) -> None:
    text = str(Principal(digest))
    typo = text[:pos] + ch + text[pos + 1 :]
    if typo == text:
        return
    with pytest.raises(PrincipalFormatError):
        Principal.parse(typo)


def test_writer_reader_roundtrip_all_fields() -> None:
    w = Writer().u8(7).varint(300).fixed(b"ab", 2).var_bytes(b"xyz").text("hé").flag(True)
    r = Reader(bytes(w))
    assert (r.u8(), r.varint(), r.fixed(2), r.var_bytes(10), r.text(10), r.flag()) == (
        7, 300, b"ab", b"xyz", "hé", True)
    r.finish()


@given(offers, st.sampled_from(ContractState), st.one_of(st.none(), b32),
       st.one_of(st.none(), st.builds(Principal, b32)), st.lists(u64, min_size=9, max_size=9))
def test_contract_record_roundtrip(offer: FragmentOffer, state: ContractState,
                                   host_key: bytes | None, payout: Principal | None,
                                   numbers: list[int]) -> None:
    start, periods, escrow, locked, proven, missed, last, paid, closes = numbers
    contract = Contract(b"\x07" * 32, DEV[0].principal, DEV[0].public.ed25519, offer, 5, state,
                        host_key, payout, start, periods, escrow, locked, proven, missed,
                        min(last, 2**64 - 2), paid, closes)
    again = Contract.decode(contract.encode())
    assert again == contract and again.host == contract.host


@given(st.lists(u64, min_size=7, max_size=7))
def test_host_record_roundtrip(numbers: list[int]) -> None:
    record = HostRecord(*numbers)
    assert HostRecord.decode(record.encode()) == record


@given(st.one_of(st.none(), u64))
def test_writecap_allowance_is_signed_and_round_trips(allowance: int | None) -> None:
    cap = Writecap.issue(P.chain_id, DEV[0], DEV[0].principal.root_path, DEV[1].principal, 2**40,
                         allowance=allowance)
    w = Writer()
    cap.write(w)
    again = decode_all(bytes(w), Writecap.read)
    assert again == cap and again.allowance == allowance
    forged = Writecap(cap.path, cap.issued_to, cap.expiry, cap.issuer_key, cap.signature,
                      None if allowance is not None else 1)
    from chain.core.keys import verify

    assert verify(cap.issuer_key, cap.link_message(P.chain_id), cap.signature)
    assert not verify(cap.issuer_key, forged.link_message(P.chain_id), cap.signature)


@given(offers)
def test_offer_json_roundtrip(offer: FragmentOffer) -> None:
    assert FragmentOffer.from_json(offer.to_json()) == offer


@pytest.mark.parametrize("change", [
    {"size": "5"}, {"root": "zz"}, {"version": "00"}, {"path": 7}, {"price": 1.5}, {"k": None},
])
def test_offer_json_with_a_wrong_field_is_a_decode_error(change: dict[str, object]) -> None:
    data = {**FragmentOffer(DEV[0].principal.root_path + "/a", b"\1" * 32, 0, 5, 3, 100,
                            b"\2" * 32, 1024, 1, 0, 10, 10, 99).to_json(), **change}
    with pytest.raises(DecodeError, match="not a fragment offer"):
        FragmentOffer.from_json(data)
    del data["n"]
    with pytest.raises(DecodeError):
        FragmentOffer.from_json(data)
