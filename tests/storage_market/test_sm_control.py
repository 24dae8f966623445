"""The host's side of the control API without processes: a policy update changes only the
fields it names (parsed as the command line parses them), and a host agent puts a new policy
in force and saves it where ``host status`` and the dashboard read it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from chain.core.errors import BlockcoinError
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.net.control import PolicyUpdate
from storage_market.control import changed_policy
from storage_market.host import HostAgent, HostPolicy, load_policy, save_policy, starting_policy

PAYEE = KeyPair.development(4).principal
CURRENT = HostPolicy(1 << 20, 5, 700, PAYEE, fee_rate=3)


def test_an_update_changes_only_what_it_names() -> None:
    assert changed_policy(CURRENT, PolicyUpdate()) == CURRENT
    assert changed_policy(CURRENT, PolicyUpdate(capacity="2M", min_price="1.5")) == HostPolicy(
        2 << 20, 150_000_000, 700, PAYEE, fee_rate=3)
    # null lifts the collateral cap and pays the host's own key; left out, they stay
    lifted = changed_policy(CURRENT, PolicyUpdate(max_collateral=None, payout=None))
    assert (lifted.max_collateral, lifted.payout) == (None, None)
    assert changed_policy(CURRENT, PolicyUpdate(max_collateral="0sat")).max_collateral == 0
    for bad in (PolicyUpdate(capacity="lots"), PolicyUpdate(min_price="0"),
                PolicyUpdate(max_collateral="-1sat")):
        with pytest.raises(BlockcoinError):
            changed_policy(CURRENT, bad)


def test_a_host_agent_puts_a_new_policy_in_force_and_saves_it(tmp_path: Path) -> None:
    chain = SimpleNamespace(chain_id=REGTEST.chain_id, params=REGTEST)
    agent = HostAgent(tmp_path, KeyPair.development(5), chain, CURRENT)  # type: ignore[arg-type]
    offer = SimpleNamespace(price=5, collateral=700)
    assert agent._terms_ok(offer)  # type: ignore[arg-type]
    update = PolicyUpdate(min_price="6sat", payout=None)
    agent.set_policy(changed_policy(CURRENT, update), update.model_fields_set)
    assert not agent._terms_ok(offer)  # type: ignore[arg-type]
    assert agent.payout == agent.principal and agent.policy.fee_rate == 3
    assert load_policy(tmp_path) == (HostPolicy(1 << 20, 6, 700, None), {"min_price", "payout"})


def test_a_restart_keeps_dashboard_changes_unless_a_flag_names_them(tmp_path: Path) -> None:
    """Flags > a change made on the running host > config.toml: the configured terms below
    stand for config.toml plus whatever flags were given."""
    configured = HostPolicy(1 << 20, 5, 700, PAYEE, fee_rate=3)
    assert starting_policy(tmp_path, configured, ()) == (configured, set())  # first start
    save_policy(tmp_path, HostPolicy(2 << 20, 9, 800, None), {"min_price", "capacity"})
    policy, live = starting_policy(tmp_path, configured, ())
    assert policy == HostPolicy(2 << 20, 9, 700, PAYEE, fee_rate=3)
    assert live == {"capacity", "min_price"}
    # a flag wins over the dashboard's change, and ends it
    policy, live = starting_policy(tmp_path, HostPolicy(1 << 20, 7, 700, PAYEE), {"min_price"})
    assert (policy.capacity, policy.min_price, live) == (2 << 20, 7, {"capacity"})
