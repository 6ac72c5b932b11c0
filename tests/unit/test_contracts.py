"""Contracts without a broker: strict validation, committed schema drift and compatibility."""

from __future__ import annotations

import copy
import json
import os

import pytest
from pydantic import ValidationError

from contracts.compat import breaking_changes
from contracts.envelope import MODELS, Family, PoisonMessage, decode, encode
from contracts.generate import check_all, event_schema, schema_path
from producers.submission import to_event
from tests import factories


def test_event_rejection_names_field_and_rule_never_the_value() -> None:
    sub = factories.registration(factories.person_key(), authority="112039", site="112039-01")
    with pytest.raises(ValidationError) as info:
        to_event(sub, os.urandom(32))
    errors = {".".join(map(str, e["loc"])): e for e in info.value.errors()}
    assert "check digit (sixth digit) does not match the first five" in errors["authority"]["msg"]
    assert "112039" not in errors["authority"]["msg"] and "112039" not in errors["site"]["msg"]


def test_unknown_fields_are_rejected_at_the_edge_and_ignored_by_readers() -> None:
    sub = factories.registration(factories.person_key(), favourite_colour="blue")
    with pytest.raises(ValidationError, match="favourite_colour"):
        to_event(sub, os.urandom(32))
    event = to_event(sub, os.urandom(32), extra="ignore")
    assert not hasattr(event.data, "favourite_colour")


@pytest.mark.parametrize(
    ("family", "field", "value", "rule"),
    [
        (Family.REGISTRATION, "registered_on", "2025-02-30", "day value is outside expected range"),
        (Family.REGISTRATION, "sex", "x", "Input should be 'male', 'female' or 'not_stated'"),
        (Family.PLACEMENT, "route", "walk-in", "hello_work_referral"),
        (Family.RETENTION, "checkpoint_months", 2, "Input should be 1, 3 or 6"),
        (Family.CONSENT, "version", 0, "greater than or equal to 1"),
    ],
)
def test_dates_and_enums_are_strict(family: Family, field: str, value: object, rule: str) -> None:
    pk = factories.person_key()
    make = {
        Family.REGISTRATION: factories.registration,
        Family.PLACEMENT: factories.placement,
        Family.CONSENT: factories.consent,
    }
    sub = (
        make[family](pk, **{field: value})
        if family in make
        else factories.retention(pk, "a" * 32, **{field: value})
    )
    with pytest.raises(ValidationError) as info:
        to_event(sub, os.urandom(32))
    err = next(e for e in info.value.errors() if e["loc"][0] == field)
    assert rule in err["msg"]


def test_envelope_round_trip_binary_mode() -> None:
    event = to_event(factories.placement(factories.person_key()), os.urandom(32))
    key, headers, value = encode(event)
    assert key == event.subject.encode()
    names = [h for h, _ in headers]
    assert {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time"} <= set(names)
    assert decode(key, headers, value) == event


def test_decode_rejects_a_key_that_is_not_the_subject() -> None:
    event = to_event(factories.placement(factories.person_key()), os.urandom(32))
    _, headers, value = encode(event)
    with pytest.raises(PoisonMessage, match="key: does not match ce_subject"):
        decode(b"someone-else", headers, value)


def test_decode_rejects_a_record_without_a_key() -> None:
    event = to_event(factories.placement(factories.person_key()), os.urandom(32))
    _, headers, value = encode(event)
    with pytest.raises(PoisonMessage, match="key: missing"):
        decode(None, headers, value)


def test_committed_contracts_match_the_models() -> None:
    assert check_all() == []


def test_drift_is_caught(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = schema_path(Family.RETENTION)
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(original.replace("定着", "retention"), encoding="utf-8")
        assert any("retention.v1.json: drifted" in p for p in check_all())
    finally:
        path.write_text(original, encoding="utf-8")


def _committed(family: Family) -> dict:  # type: ignore[type-arg]
    return json.loads(schema_path(family).read_text(encoding="utf-8"))


def test_breaking_changes_are_caught() -> None:
    old = _committed(Family.PLACEMENT)
    # a new enum value: old consumers reject it
    new = copy.deepcopy(old)
    new["$defs"]["PlacementRoute"]["enum"].append("agency")
    assert any("enum values added ['agency']" in p for p in breaking_changes(old, new))
    # a required field made optional
    new = copy.deepcopy(old)
    new["required"].remove("placed_on")
    assert breaking_changes(old, new) == ["placed_on: required field made optional"]
    # a type widened
    new = copy.deepcopy(old)
    new["properties"]["placed_on"] = {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}
    assert any("placed_on: type widened" in p for p in breaking_changes(old, new))
    # a length relaxed inside a nested model
    new = copy.deepcopy(old)
    new["$defs"]["Sealed"]["properties"]["kid"]["pattern"] = ".*"
    assert any("personal.kid: pattern changed" in p for p in breaking_changes(old, new))


def test_compatible_changes_pass() -> None:
    old = _committed(Family.REGISTRATION)
    new = copy.deepcopy(old)
    new["properties"]["preferred_language"] = {"type": "string"}  # new optional field
    new["properties"]["sex"] = copy.deepcopy(old["properties"]["sex"])
    new["description"] = "edited"
    assert breaking_changes(old, new) == []
    assert breaking_changes(old, event_schema(Family.REGISTRATION)) == []


def test_dead_letter_reasons_never_echo_text_that_could_be_a_name() -> None:
    pk = factories.person_key()
    event = to_event(factories.registration(pk), os.urandom(32))
    _, headers, value = encode(event)
    broken = json.loads(value)
    broken.update(sex="yamada", office="Yamada Taro", authority="112039", site="1988-06-01")
    with pytest.raises(PoisonMessage) as info:
        decode(pk.encode(), headers, json.dumps(broken).encode())
    reason = info.value.reason
    assert "authority: Value error, check digit (sixth digit) does not match the first five" in reason
    assert "112039" not in reason, "not even a code's value is echoed"
    assert "yamada" not in reason.lower() and "1988-06-01" not in reason
    assert "sex: Input should be 'male', 'female' or 'not_stated'" in reason


def test_a_full_width_job_seeker_number_is_refused_naming_the_rule() -> None:
    """Rust's regex reads ``\\d`` as any Unicode digit: ``１２３４５-…`` passed the pattern and would have
    stored a number no ASCII search finds (P1)."""
    from pydantic import ValidationError

    from consumers.shared_view.api import SearchRequest
    from contracts.events import RegistrationPersonal

    good = {"name": "x", "birth_date": "1990-01-01", "job_seeker_number": "13010-12345678"}
    assert RegistrationPersonal.model_validate(good).job_seeker_number == "13010-12345678"
    forged = "１３０１０-12345678"
    for model, body in (
        (RegistrationPersonal, {**good, "job_seeker_number": forged}),
        (SearchRequest, {"purpose": "share_registration", "job_seeker_number": forged}),
    ):
        with pytest.raises(ValidationError) as refused:
            model.model_validate(body)
        assert "ASCII digits" in str(refused.value)


@pytest.mark.parametrize("forged", ["１１０２", "١١٠٢"])
def test_a_prior_application_office_in_other_digits_is_refused(forged: str) -> None:
    """The v1.1 field's pattern said ``\\d``, which pydantic reads as any Unicode digit: the JSON API took
    ``１１０２`` as an office code, a second spelling of office 1102 (P1)."""
    from contracts.events import Registration
    from contracts.wire import DATA, Invalid

    pk = factories.person_key()
    event = to_event(factories.registration(pk, prior_application_office="1102"), os.urandom(32))
    body = event.data.model_dump(mode="json")
    assert Registration.model_validate(body).prior_application_office == "1102"
    with pytest.raises(ValidationError, match=r"prior_application_office\n  String should match pattern"):
        Registration.model_validate({**body, "prior_application_office": forged})
    with pytest.raises(Invalid):  # the consumers' fast decoder refuses it too
        DATA["registration"].decode(json.dumps({**body, "prior_application_office": forged}).encode())


def test_an_event_s_value_is_the_json_of_its_data_without_nulls() -> None:
    """``encode`` serialises with pydantic's core; the bytes are those of the plain JSON route, for every
    family, characters outside ASCII and CP932 and aware times included."""
    import orjson

    for sub in factories.one_of_each(factories.person_key()):
        event = to_event(sub, os.urandom(32))
        _, _, value = encode(event)
        assert value == orjson.dumps(event.data.model_dump(mode="json", exclude_none=True)), sub.family


def _leaves(value: object, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], object]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [(path, value)]


def _with(document: dict, path: tuple[str | int, ...], value: object) -> dict:  # type: ignore[type-arg]
    changed = copy.deepcopy(document)
    where = changed
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    return changed


RULES = {"Input should be a valid integer", "Input should be a valid boolean", "Input should be 1, 3 or 6"}


@pytest.mark.parametrize(
    "family", [Family.REGISTRATION, Family.CONSENT, Family.PLACEMENT, Family.RETENTION], ids=lambda f: f.value
)
def test_numbers_and_yes_no_fields_take_no_other_spelling(family: Family) -> None:
    """The contract read ``true``, ``"1"`` and ``1.0`` as a consent's version 1, ``true`` as a retention
    checkpoint of 1 month and ``"yes"``, ``1`` or ``"true"`` as a yes/no field, where its JSON Schema says
    integer or boolean: a client reading the schema and one reading the contract disagreed about what is
    valid. Now every such spelling is refused, naming the field and the rule, never the value."""
    import jsonschema

    pk = factories.person_key()
    sub = next(
        s
        for s in [
            factories.registration(pk, foreign_national=True),
            factories.placement(pk, foreign_national=False),
            *factories.one_of_each(pk),
        ]
        if s.family is family
    )
    document = json.loads(encode(to_event(sub, os.urandom(32)))[2])
    schema = jsonschema.Draft202012Validator(json.loads(schema_path(family).read_text()))
    model = MODELS[family]
    spellings = {
        bool: lambda v: [str(v).lower(), int(v), float(v), "yes", "1"],
        int: lambda v: [str(v), float(v), True, f" {v}"],
    }
    tried = 0
    for path, value in _leaves(document):
        for lax in spellings.get(type(value), lambda v: [])(value):  # type: ignore[no-untyped-call]
            changed = _with(document, path, lax)
            with pytest.raises(ValidationError) as refused:
                model.model_validate_json(json.dumps(changed))
            (error,) = refused.value.errors(include_input=False)
            assert error["loc"] == path, (path, lax)
            assert error["msg"] in RULES, (path, lax)  # the rule alone: no value is echoed
            if not isinstance(lax, float):  # JSON Schema counts 1.0 an integer; the contract does not
                assert not schema.is_valid(changed), (path, lax)
            tried += 1
    assert tried > 0
