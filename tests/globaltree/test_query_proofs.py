"""Proofs of ``/global`` answers: the answer a client computes from the proven keys alone is
the node's answer, for members and absentees; a tampered, foreign or incomplete proof is
refused; and the proof follows the tip through a reorg."""

from __future__ import annotations

import dataclasses
import json

import pytest

from chain.core import statetree
from chain.core.keys import KeyPair
from chain.node.chainstate import ChainState
from globaltree.errors import StateProofError
from globaltree.proofs import StateProof, answer_from_proof
from tests.framework.chainkit import make_block
from tests.globaltree.test_storage_contracts import HOST, OWNER, PATH, Market


def test_answers_come_back_from_their_proofs(chain: ChainState) -> None:
    market = Market(chain)
    market.place()
    root = chain.tip.header.state_root
    stranger = KeyPair.development(8).principal  # funded at genesis, never a host
    nobody = KeyPair.generate().principal
    queries = [lambda t: t.principal_json(HOST.principal), lambda t: t.principal_json(stranger),
               lambda t: t.principal_json(nobody), lambda t: t.fragments_json(PATH),
               lambda t: t.fragments_json(PATH + "-absent")]
    for query in queries:
        answer, proof = chain.prove(query)
        assert answer == query(chain.tree)
        again = StateProof.from_json(json.loads(json.dumps(proof.to_json())))
        assert answer_from_proof(again, root, query) == answer
    holders, proof = chain.prove(lambda t: t.fragments_json(PATH))
    assert holders["fragments"]["0"][0]["host"] == str(HOST.principal)
    # the path's record, its contract and the host's account
    assert len(proof.items) == 3
    assert chain.prove(lambda t: t.principal_json(nobody))[0] is None


def test_tampered_foreign_and_incomplete_proofs_are_refused(chain: ChainState) -> None:
    market = Market(chain)
    market.place()
    query = lambda t: t.fragments_json(PATH)  # noqa: E731
    _, proof = chain.prove(query)
    root = chain.tip.header.state_root
    key, value, tree_proof = proof.items[0]
    assert value is not None
    lies = [
        dataclasses.replace(proof, items=((key, value[:-1] + bytes([value[-1] ^ 1]), tree_proof),
                                          *proof.items[1:])),
        dataclasses.replace(proof, items=((key, None, tree_proof), *proof.items[1:])),
        dataclasses.replace(proof, items=proof.items[1:]),  # a key left out
        dataclasses.replace(proof, state_root=bytes(32)),
    ]
    for lie in lies:
        with pytest.raises(StateProofError):
            answer_from_proof(lie, root, query)
    # an honest proof against another root (the parent's): refused
    with pytest.raises(StateProofError):
        answer_from_proof(proof, chain.index[chain.tip.header.prev].header.state_root, query)
    # a proof that scans keys cannot be made
    with pytest.raises(StateProofError):
        chain.prove(lambda t: t.contracts_by_owner(OWNER.principal))
    with pytest.raises(StateProofError):
        StateProof.from_json({"items": [{"key": "zz"}]})


def test_the_proof_follows_the_tip_through_a_reorg(chain: ChainState) -> None:
    fork_at = chain.tip
    Market(chain).place()
    query = lambda t: t.principal_json(HOST.principal)  # noqa: E731
    on_first, _ = chain.prove(query)
    side = [make_block(chain, [], parent=fork_at.hash)]
    for _ in range(3):  # a longer empty branch from before the contract
        chain.accept_block(side[-1])
        side.append(make_block(chain, [], parent=side[-1].hash))
    chain.accept_block(side[-1])
    assert chain.tip.hash == side[-1].hash
    answer, proof = chain.prove(query)
    assert answer != on_first and answer is not None and answer["host"] is None
    assert answer_from_proof(proof, chain.tip.header.state_root, query) == answer
    assert statetree.verify(chain.tip.header.state_root, proof.items[0][0], proof.items[0][1],
                            proof.items[0][2])
