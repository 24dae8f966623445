"""``GET /tip?after=H&wait=S``: the long-poll the storage market's agents follow the chain with.
It answers as soon as a block lifts the tip above ``H``, else after ``S`` seconds, and refuses
bad parameters with a JSON 400."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.api.client import ApiClient, ApiError
from tests.chain.net.netkit import NodeProc, init_node_dir

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
    mined: list[int] = []

    def mine_soon() -> None:
        time.sleep(0.4)
        with ApiClient(f"http://127.0.0.1:{node.api_port}", node.client.token) as other:
            mined.append(int(other.post("/mine", {"blocks": 1})["height"]))

    miner = threading.Thread(target=mine_soon)
    started = time.monotonic()
    miner.start()
    try:
        answer = node.get(f"/tip?after={height}&wait=5")
    finally:
        miner.join(10)
    took = time.monotonic() - started
    assert answer["height"] == height + 1 == mined[0]
    assert 0.3 < took < 4, took  # woken by the block, not by the timeout


def test_long_poll_times_out_and_past_heights_answer_at_once(node: NodeProc) -> None:
    node.post("/mine", {"blocks": 1})
    height, tip_hash = node.tip()
    started = time.monotonic()
    answer = node.get(f"/tip?after={height}&wait=0.5")
    assert 0.4 < time.monotonic() - started < 3
    assert (answer["height"], answer["hash"]) == (height, tip_hash)
    started = time.monotonic()
    assert node.get(f"/tip?after={height - 1}&wait=5")["height"] == height
    assert node.get("/tip?wait=5")["height"] == height  # no after: no waiting
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("query", ["after=-1&wait=1", "after=x", "after=1&wait=6",
                                   "after=1&wait=nan", "after=1&wait=-0.5", "wait=inf"])
def test_bad_parameters_are_refused(node: NodeProc, query: str) -> None:
    with pytest.raises(ApiError) as info:
        node.get(f"/tip?{query}")
    assert info.value.status == 400 and info.value.code == "bad-parameter"


def test_stopping_node_ends_a_pending_long_poll(tmp_path: Path) -> None:
    other = NodeProc(init_node_dir(tmp_path / "m", 2), "--no-discover", name="m").start()
    result: list[object] = []

    def poll() -> None:
        try:
            result.append(other.get("/tip?after=1000&wait=5"))
        except Exception as exc:  # the node went away: an answer or an error, but promptly
            result.append(exc)

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.2)
    started = time.monotonic()
    other.stop()
    waiter.join(15)
    assert not waiter.is_alive() and result
    assert time.monotonic() - started < 3  # not the 5 s the poll asked for
