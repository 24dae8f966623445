"""The one canonical byte encoding of every consensus object.

A consensus object must have exactly one encoding, or two nodes could hash the same event
differently. So the reader is strict: unsigned integers are minimal LEB128 varints, lengths are
bounded before anything is allocated, and trailing bytes are refused. Every failure, whatever
the input, is a :class:`DecodeError` and never another exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from chain.core.errors import DecodeError

T = TypeVar("T")

MAX_U64 = (1 << 64) - 1


class Writer:
    """Accumulates fields; ``bytes()`` gives the encoding."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        if not 0 <= value <= 0xFF:
            raise ValueError(f"u8 out of range: {value}")
        self._parts.append(bytes((value,)))
        return self

    def varint(self, value: int) -> Writer:
        self._parts.append(encode_varint(value))
        return self

    def fixed(self, data: bytes, size: int) -> Writer:
        if len(data) != size:
            raise ValueError(f"expected {size} bytes, got {len(data)}")
        self._parts.append(bytes(data))
        return self

    def var_bytes(self, data: bytes) -> Writer:
        self._parts.append(encode_varint(len(data)))
        self._parts.append(bytes(data))
        return self

    def text(self, value: str) -> Writer:
        return self.var_bytes(value.encode("utf-8"))

    def flag(self, value: bool) -> Writer:
        return self.u8(1 if value else 0)

    def raw(self, data: bytes) -> Writer:
        self._parts.append(data)
        return self

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))  # made once: most lengths and counts


def encode_varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if not 0 <= value <= MAX_U64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """Reads fields back, refusing anything but the canonical form."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError("expected bytes")
        self._data = bytes(data)
        self._pos = 0

    @property
    def position(self) -> int:
        return self._pos

    def consumed_since(self, start: int) -> bytes:
        """The bytes read since ``start``: a strict read's input is its canonical encoding."""
        return self._data[start : self._pos]

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def u8(self) -> int:
        if self._pos >= len(self._data):
            raise DecodeError("unexpected end of data")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def varint(self, maximum: int = MAX_U64) -> int:
        data, pos = self._data, self._pos
        if pos < len(data) and data[pos] < 0x80:  # one byte: most counts, nonces and fees
            value = data[pos]
            self._pos = pos + 1
        else:
            value = self._long_varint()
        if value > maximum:
            raise DecodeError(f"integer {value} above limit {maximum}")
        return value

    def _long_varint(self) -> int:
        data, pos = self._data, self._pos
        if pos + 1 < len(data) and data[pos + 1] < 0x80:  # two bytes: most fees and nonces
            if not data[pos + 1]:
                raise DecodeError("non-minimal varint")
            self._pos = pos + 2
            return (data[pos] & 0x7F) | data[pos + 1] << 7
        end = min(len(data), pos + 10)
        value = 0
        shift = 0
        while pos < end:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise DecodeError("non-minimal varint")
                if value > MAX_U64:
                    raise DecodeError("varint above 64 bits")
                self._pos = pos
                return value
            shift += 7
        if end == len(data) and pos - self._pos < 10:
            raise DecodeError("unexpected end of data")
        raise DecodeError("varint longer than 10 bytes")

    def fixed(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise DecodeError("unexpected end of data")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def var_bytes(self, max_len: int) -> bytes:
        length = self.varint(max_len)
        return self.fixed(length)

    def text(self, max_len: int) -> str:
        raw = self.var_bytes(max_len)
        try:
            return raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid UTF-8 text") from exc

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise DecodeError("boolean flag not 0 or 1")
        return value == 1

    def optional(self, read: Callable[[Reader], T]) -> T | None:
        return read(self) if self.flag() else None

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError(f"{len(self._data) - self._pos} trailing bytes")


def decode_all(data: bytes, read: Callable[[Reader], T]) -> T:
    """Decode exactly one object from ``data``; any failure is a DecodeError."""
    reader = Reader(data)
    try:
        value = read(reader)
    except DecodeError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        raise DecodeError(str(exc)) from exc
    reader.finish()
    return value
