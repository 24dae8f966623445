"""Key files: mode 0600, optional passphrase sealing, clear errors; X25519 agreement."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from chain.core.errors import KeyError_
from chain.core.keys import KeyPair, verify


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    key = KeyPair.generate()
    path = tmp_path / "k" / "wallet.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyPair.load(path).principal == key.principal


def test_sealed_key_needs_the_right_passphrase(tmp_path: Path) -> None:
    key = KeyPair.generate()
    path = tmp_path / "wallet.key"
    key.save(path, passphrase="correct horse")
    assert key.seed.hex() not in path.read_text()
    assert KeyPair.load(path, "correct horse").principal == key.principal
    with pytest.raises(KeyError_, match="wrong passphrase"):
        KeyPair.load(path, "battery staple")
    with pytest.raises(KeyError_, match="passphrase is needed"):
        KeyPair.load(path)


def test_damaged_or_missing_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="blockcoin init"):
        KeyPair.load(tmp_path / "absent.key")
    bad = tmp_path / "bad.key"
    bad.write_text("{not json")
    with pytest.raises(KeyError_, match="unreadable"):
        KeyPair.load(bad)
    other = KeyPair.generate()
    path = tmp_path / "swapped.key"
    KeyPair.generate().save(path)
    record = json.loads(path.read_text())
    record["principal"] = str(other.principal)
    path.write_text(json.dumps(record))
    with pytest.raises(KeyError_, match="does not match"):
        KeyPair.load(path)


def test_signatures_and_key_agreement() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    sig = a.sign(b"msg")
    assert verify(a.public.ed25519, b"msg", sig)
    assert not verify(b.public.ed25519, b"msg", sig)
    assert not verify(a.public.ed25519, b"msg!", sig)
    assert not verify(a.public.ed25519, b"msg", sig[:-1])
    assert a.exchange(b.public.x25519) == b.exchange(a.public.x25519)
    with pytest.raises(KeyError_):
        a.exchange(bytes(32))  # the all-zero point gives no shared secret
