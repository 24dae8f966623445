from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.node.chainstate import ChainState
from tests.framework.chainkit import open_chain


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[ChainState]:
    state = open_chain(tmp_path / "node")
    yield state
    state.close()
