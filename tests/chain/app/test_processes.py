"""The shared node-process runner: a child that exits at start is reported at once, with the
end of its log, instead of a wait running into its timeout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chain.app.processes import NodeProcess, ProcessError, free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    taken: set[int] = set()
    ports = [free_port(taken) for _ in range(20)]
    assert len(set(ports)) == 20 and taken == set(ports)


def test_a_node_that_exits_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n", "--connect", "not an address", name="n")
    started = time.monotonic()
    with pytest.raises(ProcessError) as err:
        node.start(timeout=120)
    assert time.monotonic() - started < 100  # told at once, not after the timeout
    assert "n exited with status 1" in str(err.value)
    assert "last lines of" in str(err.value)
    assert not node.running
