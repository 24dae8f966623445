"""Every mistake a user can make on the command line is one line on stderr, exit status 1, and
changes nothing: the cases testers hit, then every command walked with paths that cannot
work."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from chain.app.cli import app
from tests.framework.chainkit import DEV
from tests.framework.clirun import blockcoin


def files_under(root: Path) -> dict[str, object]:
    """The data directory as a user sees it: its files (the database's own bookkeeping files
    aside, which LevelDB rewrites on every open) and the chain's tip."""
    files: dict[str, object] = {str(p.relative_to(root)): p.read_bytes()
                                for p in sorted(root.rglob("*"))
                                if p.is_file() and p.relative_to(root).parts[0] != "chain"}
    files["tip"] = blockcoin("query", "tip", "-d", str(root), "--json").out
    return files


@pytest.fixture
def home(tmp_path: Path) -> Path:
    ran = blockcoin("init", "-n", "regtest", "-d", str(tmp_path / "home"), "--dev-key", "0")
    assert ran.code == 0, ran.err
    assert blockcoin("mine", "-d", str(tmp_path / "home"), "--blocks", "2").code == 0
    return tmp_path / "home"


@pytest.mark.parametrize("args, message", [
    (["init", "-n", "regtest", "-d", "/proc/foo"], "/proc/foo"),
    (["export", "/nonexistent/x"], "/nonexistent/x: No such file or directory"),
    (["import", "/nope"], "/nope: No such file or directory"),
    (["store", "get", "f", "-o", "/nonexistent/x"], "/nonexistent is not a directory"),
    (["store", "status", "unknown/path"], "unknown/path is not stored by this owner"),
    (["store", "put", "/nope", "f", "--yes"], "/nope: No such file or directory"),
    (["query", "status"], "no node is running on"),
    (["query", "peers"], "no node is running on"),
    (["wallet", "send", str(DEV[1].principal), "1", "--fee", "lots"], "not an amount"),
    (["wallet", "send", str(DEV[1].principal)], "Missing argument"),
    (["query", "tip", "--bogus"], "No such option: --bogus"),
    (["mine", "--blocks", "0"], "--blocks"),
    (["host", "start"], "--capacity"),
    (["host", "start", "--capacity", "lots"], "not a size"),
    (["host", "status"], "no host in"),
    (["init", "-n", "main"], "is a 'regtest' data directory, not 'main'"),
    (["init", "--dev-key", "1"], "already has a wallet key"),
])
def test_reported_mistakes_are_one_line_and_change_nothing(home: Path, args: list[str],
                                                           message: str) -> None:
    before = files_under(home)
    datadir = [] if "-d" in args else ["-d", str(home)]
    ran = blockcoin(*args, *datadir)
    assert ran.one_line_error and message in ran.err, ran.err
    assert files_under(home) == before
    assert not Path("/proc/foo").exists()


def _commands() -> list[tuple[str, ...]]:
    """Every leaf command's words (``("store", "put")``), read from the command tree."""
    root = typer.main.get_command(app)
    found: list[tuple[str, ...]] = []

    def walk(group: object, words: tuple[str, ...]) -> None:
        for name, cmd in getattr(group, "commands", {}).items():
            if hasattr(cmd, "commands"):
                walk(cmd, (*words, name))
            else:
                found.append((*words, name))

    walk(root, ())
    return found


# what each command's required arguments get, besides the bad paths
_ARGS = {
    ("wallet", "send"): [str(DEV[1].principal), "1"],
    ("query", "block"): ["1"],
    ("query", "principal"): [str(DEV[1].principal)],
    ("query", "fragments"): [f"/{DEV[1].principal}/x"],
    ("store", "put"): ["BAD/file", "x", "--yes"],
    ("store", "get"): ["x", "-o", "BAD/out"],
    ("store", "release"): ["x"],
    ("store", "extend"): ["x", "--periods", "1"],
    ("host", "start"): ["--capacity", "1M"],
    ("tree", "put"): ["BAD/file", "x", "--yes"],
    ("tree", "get"): ["x", "-o", "BAD/out"],
    ("tree", "log"): ["x"],
    ("tree", "rm"): ["x"],
    ("tree", "mkdir"): ["x", "--yes"],
    ("tree", "share"): ["x", str(DEV[2].principal), "--yes"],
    ("tree", "unshare"): ["x", str(DEV[2].principal), "--yes"],
    ("tree", "link"): ["x", f"/{DEV[2].principal}/y", "--yes"],
    ("tree", "grant"): [str(DEV[2].principal), "x", "--expires", "1d", "--yes"],
    ("tree", "import-grant"): ["BCGRANT1AAAA"],
    ("tree", "revoke"): [str(DEV[2].principal), "--yes"],
    ("import",): ["BAD/blocks"],
    ("export",): ["BAD/blocks"],
    ("demo",): ["--keep", "BAD/demo"],
}


@pytest.mark.parametrize("words", _commands(), ids=" ".join)
def test_every_command_with_bad_paths_is_one_line(tmp_path: Path, words: tuple[str, ...]) -> None:
    """A data directory (and any file argument) under a regular file can never be made,
    not even by root: each command must say so in one line and leave the tree as it was."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad = f"{blocker}/sub"
    args = [a.replace("BAD", bad) for a in _ARGS.get(words, [])]
    datadir = [] if words == ("demo",) else ["-n", "regtest", "-d", bad]
    ran = blockcoin(*words, *args, *datadir)
    assert ran.one_line_error, (words, ran.code, ran.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert blocker.read_text() == "not a directory"
    assert blockcoin(*words, "--help").code == 0


def test_version_and_help() -> None:
    ran = blockcoin("--version")
    assert ran.code == 0 and ran.out.startswith("blockcoin ")
    ran = blockcoin("--help")
    assert ran.code == 0 and "--install-completion" in ran.out
