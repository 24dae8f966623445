"""The CLI on regtest: a fresh wallet can spend at once; bad input exits non-zero with one clear
line and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain.core.params import DEV_ALLOCATION
from tests.framework.chainkit import DEV
from tests.framework.clirun import blockcoin


def bc(datadir: Path, *args: str) -> tuple[int, str, str]:
    ran = blockcoin(*args, "--network", "regtest", "--datadir", str(datadir))
    return ran.code, ran.out, ran.err


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    code, out, _ = bc(tmp_path / "d", "init", "--dev-key", "0", "--json")
    assert code == 0, out
    assert json.loads(out)["principal"] == str(DEV[0].principal)
    return tmp_path / "d"


def state(datadir: Path) -> tuple[dict[str, object], int]:
    code, out, _ = bc(datadir, "query", "tip", "--json")
    assert code == 0
    code, bal, _ = bc(datadir, "wallet", "balance", "--json")
    return json.loads(out), json.loads(bal)["balance"]


def test_fresh_regtest_wallet_spends_at_once(datadir: Path) -> None:
    tip, balance = state(datadir)
    assert tip["height"] == 0 and balance == DEV_ALLOCATION
    to = str(DEV[5].principal)
    code, out, _ = bc(datadir, "wallet", "send", to, "2.5", "--fee", "0.00001", "--json")
    assert code == 0 and json.loads(out)["amount"] == 250_000_000
    code, out, _ = bc(datadir, "mine", "--blocks", "2", "--json")
    assert code == 0 and json.loads(out)["height"] == 2
    code, out, _ = bc(datadir, "wallet", "balance", to, "--json")
    assert json.loads(out) == {"principal": to, "balance": DEV_ALLOCATION + 250_000_000}
    _, mine_balance = state(datadir)
    assert mine_balance == DEV_ALLOCATION - 250_000_000  # fee paid and earned back by mining
    code, out, _ = bc(datadir, "query", "principal", to, "--json")
    record = json.loads(out)
    assert record["balance"] == DEV_ALLOCATION + 250_000_000 and record["nonce"] == 0
    code, out, _ = bc(datadir, "query", "block", "1", "--json")
    assert code == 0 and [e["kind"] for e in json.loads(out)["events"]] == ["coinbase", "transfer"]


@pytest.mark.parametrize("args, message", [
    (["wallet", "send", str(DEV[5].principal)[:-1] + "a", "1"], "checksum"),
    (["wallet", "send", "blk123", "1"], "61 characters"),
    (["wallet", "send", str(DEV[5].principal), "2000000"], "needs"),
    (["wallet", "send", str(DEV[5].principal), "1.000000001"], "8 decimal"),
    (["wallet", "send", str(DEV[5].principal), "0"], "positive"),
    (["wallet", "send", str(DEV[5].principal), "lots"], "not an amount"),
    (["query", "principal", "blknope"], "61 characters"),
    (["query", "block", "99"], "no block at height"),
    (["query", "block", "zz"], "hex"),
    (["query", "fragments", "relative/path"], "path"),
])
def test_bad_input_one_line_and_nothing_changes(datadir: Path, args: list[str], message: str) -> None:
    before = state(datadir)
    code, out, err = bc(datadir, *args)
    assert code == 1
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in out + err
    assert state(datadir) == before
    code, out, _ = bc(datadir, "mine", "--json")
    assert json.loads(out)["height"] == 1
    assert state(datadir)[1] == before[1]  # nothing was queued by the failed command


def test_unknown_network_and_missing_datadir(tmp_path: Path) -> None:
    ran = blockcoin("query", "tip", "--network", "moon", "--datadir", str(tmp_path))
    assert ran.one_line_error and "unknown network" in ran.err
    code, _, err = bc(tmp_path / "none", "query", "tip")
    assert code == 1 and "blockcoin init" in err


def test_datadir_in_use_is_a_clear_error(datadir: Path) -> None:
    from chain.core.params import REGTEST
    from chain.node.local import LocalNode

    with LocalNode(datadir, REGTEST):
        code, _, err = bc(datadir, "query", "tip")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert "in use" in err or "locked" in err


def test_reindex_keeps_state(datadir: Path) -> None:
    bc(datadir, "wallet", "send", str(DEV[4].principal), "1")
    bc(datadir, "mine", "--blocks", "3")
    before = state(datadir)
    code, out, _ = bc(datadir, "reindex", "--json")
    assert code == 0 and json.loads(out)["height"] == 3
    assert state(datadir) == before


def test_mine_reports_hash_rate_with_threads(datadir: Path) -> None:
    code, _, err = bc(datadir, "mine", "--blocks", "2", "--threads", "1")
    assert code == 0
    lines = [line for line in err.splitlines() if "hashes in" in line]
    assert len(lines) == 2 and lines[0].startswith("block 1:") and "H/s" in lines[0]
    code, out, _ = bc(datadir, "mine")
    assert code == 0 and "paid 0 coins (a block pays its fees and coin minted for storage" in out
    code, _, err = bc(datadir, "mine", "--threads", "0")
    assert code == 1 and err.count("\n") == 1  # refused by the option's range, in one line
    assert state(datadir)[0]["height"] == 3


def test_encrypted_wallet_signs_only_with_its_passphrase_but_shows_without(
        tmp_path: Path) -> None:
    where = ["--network", "regtest", "--datadir", str(tmp_path / "enc")]
    good = {"BLOCKCOIN_PASSPHRASE": "correct horse battery"}
    ran = blockcoin("init", "--encrypt", "--dev-key", "0", "--json", *where, env=good)
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["encrypted"] is True
    stored = (tmp_path / "enc" / "wallet.key").read_text()
    assert DEV[0].seed.hex() not in stored and "sealed" in stored
    # the address and the balance need no passphrase: the key file names its principal
    ran = blockcoin("wallet", "address", "--json", *where, env={"BLOCKCOIN_PASSPHRASE": None})
    assert ran.code == 0 and json.loads(ran.out)["principal"] == str(DEV[0].principal)
    ran = blockcoin("wallet", "balance", "--json", *where, env={"BLOCKCOIN_PASSPHRASE": None})
    assert ran.code == 0 and json.loads(ran.out)["balance"] == DEV_ALLOCATION
    to = str(DEV[5].principal)
    for env, message in (({"BLOCKCOIN_PASSPHRASE": None}, "BLOCKCOIN_PASSPHRASE"),
                         ({"BLOCKCOIN_PASSPHRASE": "not the passphrase"}, "wrong passphrase")):
        ran = blockcoin("wallet", "send", to, "1", *where, env=env)
        assert ran.one_line_error and message in ran.err, ran.err
    assert (tmp_path / "enc" / "wallet.key").read_text() == stored  # refused, and unchanged
    ran = blockcoin("wallet", "send", to, "1", "--json", *where, env=good)
    assert ran.code == 0 and json.loads(ran.out)["amount"] == 10**8
    ran = blockcoin("init", "--encrypt", *where, env={"BLOCKCOIN_PASSPHRASE": "short"})
    assert ran.one_line_error and "8 characters" in ran.err
