"""``GET /tip?after=H&wait=S``: the long-poll the storage market's agents follow the chain with.
It answers as soon as a block lifts the tip above ``H``, else after ``S`` seconds, and refuses
bad parameters with a JSON 400."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.net.http import ApiClient, ApiError
from tests.framework.netkit import NodeProc, init_node_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    base = tmp_path_factory.mktemp("tipwait")
    proc = NodeProc(init_node_dir(base / "n", 1), "--no-discover", name="n").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_long_poll_answers_when_a_block_arrives(node: NodeProc) -> None:
    height, _ = node.tip()
    mined: list[tuple[int, float]] = []

    def mine_soon() -> None:
        time.sleep(0.4)
        with ApiClient(f"http://127.0.0.1:{node.api_port}", node.client.token) as other:
            mined.append((int(other.post("/mine", {"blocks": 1})["height"]), time.monotonic()))

    miner = threading.Thread(target=mine_soon)
    miner.start()
    try:
        answer = node.get(f"/tip?after={height}&wait=5")
        answered = time.monotonic()
    finally:
        miner.join(10)
    assert answer["height"] == height + 1 == mined[0][0]
    # woken by the block, not by the end of the 5 s wait (measured from the block, so a slow
    # machine does not make it fail)
    assert answered - mined[0][1] < 2.5


def test_long_poll_times_out_and_past_heights_answer_at_once(node: NodeProc) -> None:
    node.post("/mine", {"blocks": 1})
    height, tip_hash = node.tip()
    started = time.monotonic()
    answer = node.get(f"/tip?after={height}&wait=0.5")
    assert 0.4 < time.monotonic() - started < 5
    assert (answer["height"], answer["hash"]) == (height, tip_hash)
    started = time.monotonic()
    assert node.get(f"/tip?after={height - 1}&wait=5")["height"] == height
    assert node.get("/tip?wait=5")["height"] == height  # no after: no waiting
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("query", ["after=-1&wait=1", "after=x", "after=1&wait=6",
                                   "after=1&wait=nan", "after=1&wait=-0.5", "wait=inf"])
def test_bad_parameters_are_refused(node: NodeProc, query: str) -> None:
    with pytest.raises(ApiError) as info:
        node.get(f"/tip?{query}")
    assert info.value.status == 400 and info.value.code == "bad-parameter"


def test_stopping_node_ends_a_pending_long_poll(tmp_path: Path) -> None:
    """A stopping node answers its long-polls (rather than making them wait out the server's
    shutdown grace and then cutting the connection)."""
    other = NodeProc(init_node_dir(tmp_path / "m", 2), "--no-discover", name="m").start()
    result: list[object] = []

    def poll() -> None:
        try:
            result.append(other.get("/tip?after=1000&wait=5"))
        except Exception as exc:  # cut off instead of answered
            result.append(exc)

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.2)
    other.stop()
    waiter.join(15)
    assert not waiter.is_alive()
    assert isinstance(result[0], dict) and result[0]["height"] == 0, result
