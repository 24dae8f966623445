"""ASERT against the aserti3-2d reference: the published vectors, the project's own vectors and
random inputs all give exactly what the reference computes.

Published vectors, checked in unchanged:
- ``aserti3-2d/run01`` .. ``run10``: the aserti3-2d test vector runs generated from Bitcoin Cash
  Node's C++ (``gen_asert_test_vectors``, 600 s spacing, 2-day half-life, pow limit 0x1d00ffff),
  as mirrored in AIBlockOfficial/Network ``src/test_data/asert/``; each line gives the parent's
  height and time and the next block's bits for the run's anchor.
- ``bchn_pow_tests.json``: every exact expectation of Bitcoin Cash Node's
  ``src/test/pow_tests.cpp`` (``calculate_asert_test`` and ``asert_activation_anchor_test``,
  as mirrored in BitcoinCash1/Bitcoin-Cash-Node), as ``CalculateASERT`` arguments.

``blockcoin_asert.json`` holds vectors for the main and test networks' parameters, computed once
by ``asert_reference.calculate_asert``, the transcription of the reference these tests trust.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.consensus.difficulty import asert_bits, asert_target
from chain.consensus.validation import expected_bits
from chain.core.params import GENESIS_TIME, MAIN, TEST, NetworkParams
from tests.vectors.asert_reference import (
    VECTORS_FILE,
    build_project_vectors,
    calculate_asert,
    get_compact,
    set_compact,
)

HERE = Path(__file__).parent
RUNS = sorted((HERE / "aserti3-2d").glob("run*"))
REFERENCE_SPACING, REFERENCE_HALF_LIFE = 600, 2 * 24 * 3600
REFERENCE_POW_LIMIT = set_compact(0x1D00FFFF)
NETWORKS = {"main": MAIN, "test": TEST}


def read_run(path: Path) -> tuple[dict[str, str], list[tuple[int, int, int]]]:
    """A run file's ``##   key: value`` header and its (parent height, parent time, bits) lines."""
    header: dict[str, str] = {}
    lines: list[tuple[int, int, int]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("##") and ":" in line:
            key, value = line[2:].split(":", 1)
            header[key.strip()] = value.strip()
        elif line and not line.startswith("#"):
            iteration, height, time, bits = line.split()
            assert int(iteration) == len(lines) + 1
            lines.append((int(height), int(time), int(bits, 16)))
    assert len(lines) == int(header["iterations"])
    return header, lines


def load(name: str) -> Any:
    return json.loads((HERE / name).read_text())


def test_all_published_runs_are_present() -> None:
    assert [p.name for p in RUNS] == [f"run{i:02d}" for i in range(1, 11)]


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.name)
def test_published_run(path: Path) -> None:
    header, lines = read_run(path)
    anchor_bits = int(header["anchor nBits"], 16)
    anchor_height = int(header["anchor height"])
    anchor_parent_time = int(header["anchor ancestor time"])  # the anchor's parent's time
    anchor_target = set_compact(anchor_bits)
    for height, time, bits in lines:
        got = asert_bits(anchor_target, anchor_parent_time, anchor_height, REFERENCE_SPACING,
                         REFERENCE_HALF_LIFE, REFERENCE_POW_LIMIT, time, height)
        assert got == bits, (path.name, height, time)
        oracle = calculate_asert(anchor_target, REFERENCE_SPACING, time - anchor_parent_time,
                                 height - anchor_height, REFERENCE_POW_LIMIT, REFERENCE_HALF_LIFE)
        assert get_compact(oracle) == bits, (path.name, height, time)


def test_published_calculate_asert_expectations() -> None:
    data = load("bchn_pow_tests.json")
    pow_limit = int(data["pow_limit"], 16)
    assert len(data["vectors"]) == 34
    for source, ref, time_diff, height_diff, target, bits in data["vectors"]:
        ref_target = int(ref, 16)
        got = asert_target(ref_target, 0, 0, data["spacing"], data["half_life"], pow_limit,
                           time_diff, height_diff)
        oracle = calculate_asert(ref_target, data["spacing"], time_diff, height_diff, pow_limit,
                                 data["half_life"])
        for result in (got, oracle):
            if target is not None:
                assert result == int(target, 16), source
            assert get_compact(result) == int(bits, 16), source


def test_project_vectors_are_the_reference_output() -> None:
    assert json.loads(VECTORS_FILE.read_text()) == build_project_vectors()


@pytest.mark.parametrize("net", NETWORKS)
def test_project_vectors(net: str) -> None:
    data = load(VECTORS_FILE.name)
    params = NETWORKS[net]
    table = data["networks"][net]
    assert (table["spacing"], table["half_life"]) == (params.spacing, params.halflife)
    assert int(data["pow_limit_bits"], 16) == params.genesis_bits
    for bits, time_diff, height_diff, target, compact in table["vectors"]:
        got = asert_target(set_compact(int(bits, 16)), 0, 0, params.spacing, params.halflife,
                           params.pow_limit, time_diff, height_diff)
        assert got == int(target, 16), (bits, time_diff, height_diff)
        assert get_compact(got) == int(compact, 16)


@pytest.mark.parametrize(("net", "time_diff", "height_diff", "bits"), [
    ("main", 239, 1, 0x1F00FFFF),  # one second early: the exponent truncates to 0
    ("main", 240, 1, 0x1F00FFFF),
    ("test", 238, 1, 0x1F00FFE6),  # two seconds early
])
def test_early_parent_rounds_toward_zero(net: str, time_diff: int, height_diff: int, bits: int) -> None:
    params = NETWORKS[net]
    assert asert_bits(params.pow_limit, 0, 0, params.spacing, params.halflife, params.pow_limit,
                      time_diff, height_diff) == bits


@pytest.mark.parametrize("net", NETWORKS)
def test_validation_anchors_at_genesis(net: str) -> None:
    """``expected_bits`` feeds the genesis anchor (its target, parent time = genesis time -
    spacing, height 0) and the parent's time and height."""
    params: NetworkParams = NETWORKS[net]
    genesis = params.genesis.header
    assert (genesis.time, genesis.bits) == (GENESIS_TIME, params.genesis_bits)
    anchor_parent_time = GENESIS_TIME - params.spacing
    checked = 0
    for bits, time_diff, height_diff, _, compact in load(VECTORS_FILE.name)["networks"][net]["vectors"]:
        parent_time = anchor_parent_time + time_diff
        if int(bits, 16) != params.genesis_bits or not 0 <= parent_time < 1 << 32:
            continue
        parent = replace(genesis, time=parent_time)
        assert expected_bits(params, parent, height_diff) == int(compact, 16), (time_diff, height_diff)
        checked += 1
    assert checked > 50


PARAMS = st.one_of(
    st.sampled_from([(MAIN.spacing, MAIN.halflife), (TEST.spacing, TEST.halflife),
                     (REFERENCE_SPACING, REFERENCE_HALF_LIFE)]),
    st.tuples(st.integers(1, 600), st.integers(3600, 10**6)),
)


@settings(max_examples=500)
@given(
    anchor=st.integers(1, MAIN.pow_limit).map(lambda t: set_compact(get_compact(t))),
    params=PARAMS,
    anchor_height=st.integers(0, 2**32),
    height_diff=st.integers(0, 2**32),
    skew=st.one_of(st.integers(-10**4, 10**4), st.integers(-(2**33), 2**33)),
    on_schedule=st.booleans(),
)
def test_matches_the_reference(anchor: int, params: tuple[int, int], anchor_height: int,
                               height_diff: int, skew: int, on_schedule: bool) -> None:
    """Random anchors, heights and time differences (negative ones too), measured either from
    the schedule (where the rounding matters) or from the anchor's parent."""
    spacing, half_life = params
    time_diff = spacing * (height_diff + 1) * on_schedule + skew
    anchor_parent_time = 10**9
    got = asert_target(anchor, anchor_parent_time, anchor_height, spacing, half_life,
                       MAIN.pow_limit, anchor_parent_time + time_diff, anchor_height + height_diff)
    for width in (257, 512):  # any width that holds anchor * factor gives the same target
        assert got == calculate_asert(anchor, spacing, time_diff, height_diff, MAIN.pow_limit,
                                      half_life, width=width)
