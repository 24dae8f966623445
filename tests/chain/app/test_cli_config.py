"""Where a command acts and on which network: flags, then BLOCKCOIN_* variables, then the data
directory's config.toml (validated whole), then the defaults; a fresh key for every init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain.core.params import DEV_ALLOCATION
from tests.framework.chainkit import DEV
from tests.framework.clirun import blockcoin

CLEAN = {"BLOCKCOIN_NETWORK": None, "BLOCKCOIN_DATADIR": None, "BLOCKCOIN_HOME": None}


def test_network_comes_from_the_datadir_once_chosen(tmp_path: Path) -> None:
    d = str(tmp_path / "d")
    assert blockcoin("init", "-n", "regtest", "-d", d, "--dev-key", "4", env=CLEAN).code == 0
    ran = blockcoin("wallet", "balance", "-d", d, "--json", env=CLEAN)  # no --network
    assert ran.code == 0 and json.loads(ran.out)["balance"] == DEV_ALLOCATION
    assert blockcoin("mine", "-d", d, env=CLEAN).code == 0
    ran = blockcoin("query", "tip", "--json", env={**CLEAN, "BLOCKCOIN_DATADIR": d})
    assert ran.code == 0 and json.loads(ran.out)["height"] == 1
    # a variable naming another network is refused; a flag beats the variable
    env = {**CLEAN, "BLOCKCOIN_DATADIR": d, "BLOCKCOIN_NETWORK": "main"}
    ran = blockcoin("query", "tip", env=env)
    assert ran.one_line_error and "is a 'regtest' data directory, not 'main'" in ran.err
    assert blockcoin("query", "tip", "-n", "regtest", env=env).code == 0
    assert blockcoin("query", "tip", "-d", d, env={**CLEAN, "BLOCKCOIN_NETWORK": "regtest"}
                     ).code == 0


def test_home_and_network_variables_place_the_default_datadir(tmp_path: Path) -> None:
    env = {**CLEAN, "BLOCKCOIN_HOME": str(tmp_path / "home"), "BLOCKCOIN_NETWORK": "regtest"}
    ran = blockcoin("init", "--json", env=env)
    assert ran.code == 0 and json.loads(ran.out)["datadir"] == str(tmp_path / "home" / "regtest")
    assert (tmp_path / "home" / "regtest" / "config.toml").read_text() == 'network = "regtest"\n'


def test_every_init_has_its_own_key_unless_a_dev_key_is_asked_for(tmp_path: Path) -> None:
    made = [json.loads(blockcoin("init", "-n", "regtest", "-d", str(tmp_path / f"h{i}"), "--json",
                                 env=CLEAN).out)["principal"] for i in range(3)]
    assert len(set(made)) == 3 and not set(made) & {str(k.principal) for k in DEV}
    ran = blockcoin("init", "-n", "regtest", "-d", str(tmp_path / "dev"), "--dev-key", "2",
                    "--json", env=CLEAN)
    assert json.loads(ran.out)["principal"] == str(DEV[2].principal)
    ran = blockcoin("init", "-n", "test", "-d", str(tmp_path / "t"), "--dev-key", "2", env=CLEAN)
    assert ran.one_line_error and "regtest only" in ran.err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("text, message", [
    ('network = "regtest"\n[node]\nlisen = "127.0.0.1:1"\n', "node.lisen: Extra inputs"),
    ('network = "regtest"\n[node]\nmine = "often"\n', "node.mine: Input should be a valid boolean"),
    ('network = "moon"\n', "network: Input should be 'main', 'test' or 'regtest'"),
    ('network = "regtest"\n[host]\nlog_level = "loud"\n', "host.log_level"),
    ('network = "regtest\n', "not valid TOML"),
])
def test_a_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str,
                                                     message: str) -> None:
    d = tmp_path / "d"
    assert blockcoin("init", "-n", "regtest", "-d", str(d), env=CLEAN).code == 0
    (d / "config.toml").write_text(text)
    ran = blockcoin("query", "tip", "-d", str(d), env=CLEAN)
    assert ran.one_line_error and str(d / "config.toml") in ran.err and message in ran.err, ran.err
