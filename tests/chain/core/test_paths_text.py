"""Which paths and addresses are valid may not depend on the Python (Unicode) version: the rule
is a fixed list of code-point ranges, and a path names its owner in one spelling only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.core.errors import BadEvent
from chain.core.events import Announce, SignedEvent, Transfer
from chain.core.params import REGTEST
from chain.core.paths import INVISIBLE, check_path, visible
from chain.core.writecap import Writecap
from tests.framework.chainkit import DEV

OWNER = str(DEV[0].principal)


@pytest.mark.parametrize("ch", ["\x00", "\n", "\x7f", "\x85", "\u00a0", "\u200b", "\u200e",
                                "\u202e", "\u2028", "\u2066", "\u3000", "\ufeff", "\ue000",
                                "\U000f0000", "\ufdd0", "\U0001fffe"])
def test_invisible_characters_are_refused_in_paths_and_addresses(ch: str) -> None:
    with pytest.raises(BadEvent):
        check_path(f"/{OWNER}/a{ch}b")
    with pytest.raises(BadEvent):
        Announce(bytes(32), f"host{ch}:80").check()


@pytest.mark.parametrize("segment", ["photos", "été 2026", "日本語", "a b", "\U0001f6dc",
                                     "\U000e0001", "\U0003ffff"[:-1] + "a"])
def test_visible_text_including_code_points_unassigned_today_is_allowed(segment: str) -> None:
    # U+1F6DC was unassigned in Unicode 14 (Python 3.11) and assigned in 15: valid either way
    assert check_path(f"/{OWNER}/{segment}") == DEV[0].principal


def test_the_owner_has_one_spelling() -> None:
    with pytest.raises(BadEvent, match="one text form"):
        check_path(f"/ {OWNER} /docs")
    with pytest.raises(BadEvent):
        check_path(f"/{OWNER.upper()}/docs")


@given(st.text(max_size=20))
def test_visible_is_the_range_list(text: str) -> None:
    expected = not any(lo <= ord(c) <= hi for c in text for lo, hi in INVISIBLE)
    assert visible(text) == expected


@pytest.mark.parametrize("link_path", ["", f"/{OWNER}/", f"/ {OWNER}"])
def test_a_writecap_link_with_a_malformed_path_is_refused(link_path: str) -> None:
    cap = Writecap.issue(REGTEST.chain_id, DEV[0], link_path, DEV[1].principal, 2**31)
    ev = SignedEvent.create(REGTEST.chain_id, DEV[1], 0, 1000, Transfer(DEV[2].principal, 1),
                            account=DEV[0].principal, writecap=cap)
    with pytest.raises(BadEvent):
        ev.check_stateless(REGTEST.chain_id, REGTEST.max_event_bytes)
    good = Writecap.issue(REGTEST.chain_id, DEV[0], f"/{OWNER}", DEV[1].principal, 2**31)
    SignedEvent.create(REGTEST.chain_id, DEV[1], 0, 1000, Transfer(DEV[2].principal, 1),
                       account=DEV[0].principal, writecap=good).check_stateless(
        REGTEST.chain_id, REGTEST.max_event_bytes)
