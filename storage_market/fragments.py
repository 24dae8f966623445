"""Erasure coding of sealed blocks into ``n`` fragments, any ``k`` of which rebuild the block.

zfec's Reed-Solomon code (systematic: fragments ``0..k-1`` are the data itself, cut in ``k``
equal pieces; fragments ``k..n-1`` are parity). Default 3-of-5, as on regtest.

**Padding.** zfec needs ``k`` equal pieces, so the data is padded ISO/IEC 7816-4 style: one
``0x80`` byte, then zeros, to the next multiple of ``k`` (1 to ``k`` bytes in all). Every
fragment is therefore ``ceil((len + 1) / k)`` bytes, and decoding recovers the exact length from
the fragments alone; no length field has to travel beside them, and the on-chain
``FragmentOffer.size`` is just the fragment size. A tail that is not a valid padding is an
:class:`~storage_market.errors.IntegrityError`: fragments from different blocks were mixed, or
one was corrupted in a way its Merkle root did not catch (it always should).

**Copies.** Encoding passes zero-copy slices of the caller's buffer to zfec for every full data
piece and copies only the piece that holds the padding; the primary fragments it returns are
views of the caller's buffer, so the caller must not modify that buffer while it uses them.
Decoding from the primary fragments needs no zfec work at all, and copies once to join (or not
at all, with :func:`decode_contiguous`, when they were received into one buffer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import zfec

from storage_market.crypto import Bytes, byte_view
from storage_market.errors import FragmentError, IntegrityError, NotEnoughFragments

DEFAULT_K = 3
DEFAULT_N = 5
#: The chain's limit (``chain.core.events.MAX_FRAGMENTS``); zfec itself stops at 256.
MAX_N = 255
PAD_MARKER = 0x80


def check_params(k: int, n: int) -> None:
    """Refuse a code zfec cannot build or the chain cannot name."""
    if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n <= MAX_N):
        raise FragmentError(f"need 1 <= k <= n <= {MAX_N}, got k={k} n={n}")


def fragment_size(data_size: int, k: int = DEFAULT_K) -> int:
    """Size of every fragment of ``data_size`` bytes: ``ceil((data_size + 1) / k)``."""
    if data_size < 0:
        raise FragmentError("a negative data size")
    return (data_size + k) // k


@lru_cache(maxsize=32)
def _encoder(k: int, n: int) -> Any:
    return zfec.Encoder(k, n)


@lru_cache(maxsize=32)
def _decoder(k: int, n: int) -> Any:
    return zfec.Decoder(k, n)


def split(data: Bytes, k: int = DEFAULT_K) -> list[memoryview]:
    """The ``k`` data fragments of ``data`` (padded), fragments ``0..k-1`` of :func:`encode`:
    views of ``data`` but for the piece that holds the padding, which is copied."""
    check_params(k, k)
    view = byte_view(data)
    total = view.nbytes
    size = fragment_size(total, k)
    pieces: list[memoryview] = []
    for i in range(k):
        start, end = i * size, (i + 1) * size
        if end <= total:
            pieces.append(view[start:end])
            continue
        piece = bytearray(size)  # zero-filled: the padding's zeros come for free
        tail = view[start:total] if start < total else view[0:0]
        piece[: tail.nbytes] = tail
        if start <= total:  # the marker byte falls in this piece
            piece[total - start] = PAD_MARKER
        pieces.append(memoryview(piece))
    return pieces


def parity(pieces: list[memoryview], k: int = DEFAULT_K, n: int = DEFAULT_N,
           indexes: Iterable[int] | None = None) -> list[memoryview]:
    """Fragments ``k..n-1`` (or just ``indexes``) from the ``k`` data fragments of :func:`split`.

    zfec releases the GIL while it computes, and each parity fragment is computed on its own,
    so a caller may compute them in parallel worker threads while the data fragments are
    already hashed and sent.
    """
    check_params(k, n)
    if len(pieces) != k:
        raise FragmentError(f"{len(pieces)} data fragments given, {k} needed")
    wanted = tuple(range(k, n) if indexes is None else indexes)
    if not all(k <= i < n for i in wanted):
        raise FragmentError(f"parity fragments are numbered {k}..{n - 1}")
    if not wanted:
        return []
    return [memoryview(p) for p in _encoder(k, n).encode(tuple(pieces), wanted)]


def encode(data: Bytes, k: int = DEFAULT_K, n: int = DEFAULT_N) -> list[memoryview]:
    """The ``n`` fragments of ``data``, in index order, each ``fragment_size(len(data), k)`` bytes.

    Fragments ``0..k-1`` that hold no padding are views of ``data`` (no copy).
    """
    check_params(k, n)
    pieces = split(data, k)
    return pieces + parity(pieces, k, n)


def _select(fragments: Mapping[int, Bytes], k: int, n: int) -> tuple[list[int], list[memoryview]]:
    """Check the fragments and pick ``k`` of them, primaries first (they decode for free)."""
    check_params(k, n)
    size: int | None = None
    for index, buf in fragments.items():
        if not isinstance(index, int) or not 0 <= index < n:
            raise FragmentError(f"fragment index {index!r} outside 0..{n - 1}")
        length = byte_view(buf).nbytes
        if size is None:
            size = length
        elif length != size:
            raise FragmentError(f"fragments of different sizes ({size} and {length} bytes)")
    if len(fragments) < k:
        raise NotEnoughFragments(f"{len(fragments)} fragments given, {k} needed")
    if not size:
        raise FragmentError("a fragment is at least one byte")
    chosen = sorted(fragments)[:k]
    return chosen, [byte_view(fragments[i]) for i in chosen]


def recover_primaries(fragments: Mapping[int, Bytes], k: int, n: int) -> list[memoryview]:
    """The ``k`` data pieces (padded) recovered from any ``k`` fragments (or from the same
    stripe of each: the code works byte position by byte position)."""
    indexes, bufs = _select(fragments, k, n)
    if indexes == list(range(k)):
        return bufs
    segments = _decoder(k, n).decode(tuple(bufs), tuple(indexes))
    return [byte_view(s) for s in segments]


def _data_size(pieces: list[memoryview], k: int) -> int:
    """Length of the data before padding, read from the last ``k`` bytes of the pieces."""
    size = pieces[0].nbytes
    total = size * len(pieces)
    tail = bytearray()
    for piece in reversed(pieces):  # the padding may span pieces when they are tiny
        tail[:0] = piece[max(0, size - (k - len(tail))) :]
        if len(tail) >= k:
            break
    stripped = tail.rstrip(b"\x00")
    if not stripped or stripped[-1] != PAD_MARKER:
        raise IntegrityError("fragments do not end in a valid padding: mixed or corrupted")
    return total - (len(tail) - len(stripped) + 1)


def decode(fragments: Mapping[int, Bytes], k: int = DEFAULT_K, n: int = DEFAULT_N) -> bytes:
    """The original data from any ``k`` of its fragments, keyed by fragment index.

    The fragments are trusted to be the right bytes: check each against its Merkle root first
    (a wrong fragment decodes to wrong data, which the payload's AEAD tag then refuses).
    """
    pieces = recover_primaries(fragments, k, n)
    remaining = _data_size(pieces, k)
    parts: list[memoryview] = []
    for piece in pieces:
        take = min(remaining, piece.nbytes)
        parts.append(piece[:take])
        remaining -= take
    return b"".join(parts)


def decode_contiguous(primaries: Bytes, k: int = DEFAULT_K) -> memoryview:
    """The original data from the ``k`` data fragments lying back to back in one buffer.

    A reader that receives fragments ``0..k-1`` straight into their places in one buffer
    needs no decoding and no join: the data is that buffer without its padding (a view).
    """
    view = byte_view(primaries)
    if k < 1 or not view.nbytes or view.nbytes % k:
        raise FragmentError(f"{view.nbytes} bytes are not {k} equal fragments")
    size = view.nbytes // k
    pieces = [view[i * size : (i + 1) * size] for i in range(k)]
    return view[: _data_size(pieces, k)]


def rebuild(
    fragments: Mapping[int, Bytes], index: int, k: int = DEFAULT_K, n: int = DEFAULT_N
) -> bytes:
    """Fragment ``index`` recomputed from any ``k`` other fragments (repair after a host loss).

    A fragment already present under ``index`` is ignored, so the result is always recomputed.
    """
    check_params(k, n)
    if not isinstance(index, int) or not 0 <= index < n:
        raise FragmentError(f"fragment index {index!r} outside 0..{n - 1}")
    others = {i: buf for i, buf in fragments.items() if i != index}
    pieces = recover_primaries(others, k, n)
    if index < k:
        return bytes(pieces[index])
    return bytes(_encoder(k, n).encode(tuple(pieces), (index,))[0])
