"""``contracts.events.built``, the importer's ``model_construct``, makes the same models as pydantic's."""

from __future__ import annotations

import uuid

import pytest
from pydantic import BaseModel

from contracts import events
from contracts.envelope import MODELS, PERSONAL_MODELS, Family
from contracts.events import Contract, Sealed, built
from infra.crypto import seal
from producers.submission import build_event, seal_checked, validate
from tests import factories


def _contracts() -> list[type[BaseModel]]:
    found = [m for m in vars(events).values() if isinstance(m, type) and issubclass(m, Contract)]
    return [*found, *MODELS.values(), *PERSONAL_MODELS.values()]


@pytest.mark.parametrize("model", _contracts(), ids=lambda m: m.__name__)
def test_every_contract_is_one_built_may_make(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") != "allow"
    assert not model.__private_attributes__
    assert model.__pydantic_post_init__ is None
    assert not model.__pydantic_root_model__


@pytest.mark.parametrize("family", list(Family), ids=lambda f: f.value)
def test_an_event_built_equals_the_one_model_construct_makes(family: Family) -> None:
    pk = uuid.uuid4().hex
    subs = [*factories.one_of_each(pk), factories.erasure(pk)]
    sub = next(s for s in subs if s.family is family)
    c = validate(family, sub.data, trusted=True)
    key = bytes(32)
    sealed = seal_checked(c, key)
    event = build_event(c, sub.source, sealed)
    values = dict(c.data.__dict__)
    if c.personal is not None:
        values["personal"] = sealed
    old = MODELS[family].model_construct(c.data.model_fields_set, **values)
    assert event.data == old
    assert event.data.model_fields_set == old.model_fields_set
    assert event.data.model_dump_json(exclude_none=True) == old.model_dump_json(exclude_none=True)
    assert event.data.model_dump() == old.model_dump()


def test_a_sealed_block_built_equals_model_construct() -> None:
    block = seal(bytes(32), "a" * 32, {"name": "x"})
    old = Sealed.model_construct(kid=block.kid, nonce=block.nonce, ct=block.ct)
    assert block == old
    assert block.model_fields_set == old.model_fields_set
    assert block.model_dump_json() == old.model_dump_json()
    assert built(Sealed, {"kid"}, dict(old.__dict__)).model_fields_set == {"kid"}
