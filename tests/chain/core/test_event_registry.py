"""Every event kind is declared once and complete: its body type (encoding, stateless check,
JSON view) in ``chain.core.events``, its handler in the fold, its name in the API schema. A kind
added without any of these fails here, not in production."""

from __future__ import annotations

from chain.api.openapi import openapi_document
from chain.core.events import BODY_TYPES, Kind
from chain.core.params import REGTEST
from globaltree.fold import Fold
from globaltree.view import MemoryDB, StateView


def test_every_signed_kind_has_one_body_type_with_all_its_parts() -> None:
    signed = {k for k in Kind if k != Kind.COINBASE}
    assert set(BODY_TYPES) == signed
    for kind, body in BODY_TYPES.items():
        assert body.kind == kind
        for part in ("write", "read", "check", "to_json"):
            assert callable(getattr(body, part, None)), f"{body.__name__} lacks {part}"


def test_the_fold_handles_exactly_the_body_types() -> None:
    fold = Fold(StateView(MemoryDB()), REGTEST, 1, 0, lambda h: None)
    assert set(fold._handlers) == set(BODY_TYPES.values())


def test_the_api_schema_names_every_kind() -> None:
    event = openapi_document()["components"]["schemas"]["Event"]
    assert set(event["properties"]["kind"]["enum"]) == {k.name.lower() for k in Kind}
