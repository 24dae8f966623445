"""An announced address is empty or ``host:port``; anything else is refused with ``BadEvent``
(never another exception, which would escape block validation)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.core.errors import BadEvent
from chain.core.events import Announce

KEY = bytes(32)


@pytest.mark.parametrize("address", ["", "127.0.0.1:28633", "[::1]:1", "node.example:65535",
                                     "h:0080"])
def test_valid_addresses(address: str) -> None:
    Announce(KEY, address).check()


@pytest.mark.parametrize("address", ["no-port", ":80", "h:", "h:0", "h:65536", "h :80", "h:8 0",
                                     "h:\u00b2", "h:\u2460", "h:+80", "h:\n80", "h\t:80"])
def test_invalid_addresses(address: str) -> None:
    with pytest.raises(BadEvent):
        Announce(KEY, address).check()


@given(st.one_of(
    st.text(max_size=40),
    # ports made of anything Unicode calls a number: digits int() reads and ones it does not
    st.text(st.characters(categories=["N"]), min_size=1, max_size=6).map(lambda p: f"h:{p}"),
))
def test_any_text_is_accepted_or_refused_cleanly(address: str) -> None:
    with contextlib.suppress(BadEvent):
        Announce(KEY, address).check()
