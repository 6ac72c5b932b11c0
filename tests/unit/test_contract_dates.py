"""Dates and times take exactly one spelling, and only plausible years.

pydantic's lax mode read a Unix time (``1775001600``, ``1775001600.0``, ``"1775001600"``) as a date or an
instant, a midnight datetime (``"2026-04-01T00:00:00"``) as a date, and ``"2026-04-01 09:00+0900"`` or
``"2026-04-01t09:00:00z"`` as an instant; a date's year could be 0001 or 9999 (a forged birth date). Now a
date is ``YYYY-MM-DD`` in ASCII digits, an instant RFC 3339 with seconds and an explicit offset (``Z`` or
``±HH:MM``; a naive one is refused), event dates and instants lie in 2000–2099 and birth dates in
1900–2099. Every reader agrees: the contract read from JSON (consumers) and from Python values (the HTTP
edge), the consume side's quick decoder, the envelope's ``ce_time``. A refusal names the field and the
rule, never the value.
"""

from __future__ import annotations

import copy
import os
import types
import typing
from datetime import date, datetime
from typing import Any

import msgspec
import orjson
import pytest
from pydantic import AwareDatetime, BaseModel, ValidationError

from contracts import wire
from contracts.envelope import MODELS, PERSONAL_MODELS, Family, PoisonMessage, decode, encode
from contracts.events import RegistrationPersonal
from contracts.feed import FeedRevision
from producers.submission import check, to_event
from tests import factories

DAY, INSTANT = "day", "instant"

# Every date and time field of the event contracts, with the partner a cross-field rule compares it with
# (set to the same value, so that a valid spelling is judged alone).
FIELDS: list[tuple[Family, tuple[str, ...], str, tuple[str, ...] | None]] = [
    (Family.REGISTRATION, ("registered_on",), DAY, None),
    (Family.CONSENT, ("valid_from",), DAY, ("valid_until",)),
    (Family.CONSENT, ("valid_until",), DAY, ("valid_from",)),
    (Family.CONSENT, ("captured", "signed_at"), INSTANT, None),
    (Family.REFERRAL, ("referred_on",), DAY, ("team_support_from",)),
    (Family.REFERRAL, ("team_support_from",), DAY, ("referred_on",)),
    (Family.PLACEMENT, ("placed_on",), DAY, None),
    (Family.RETENTION, ("checked_on",), DAY, None),
    (Family.RETENTION, ("left_on",), DAY, None),
    (Family.ERASURE, ("erased_at",), INSTANT, None),
]

SPELLING = {DAY: "YYYY-MM-DD", INSTANT: "RFC 3339"}
RANGE = {DAY: "2000-01-01", INSTANT: "2000-01-01"}

BAD_DAYS: list[tuple[Any, str]] = [
    ("2026-04-01T00:00:00", "spelling"),  # a midnight datetime: pydantic's lax mode read it as the day
    ("2026-04-01T00:00:00Z", "spelling"),
    ("2026-04-01T00:00:00+09:00", "spelling"),
    (1775001600, "spelling"),  # a Unix time (2026-04-01T00:00:00Z)
    (1775001600.0, "spelling"),
    ("1775001600", "spelling"),
    (True, "spelling"),
    ("２０２６-０４-０１", "spelling"),  # full-width digits
    ("٢٠٢٦-٠٤-٠١", "spelling"),  # Arabic-Indic digits
    ("2026-4-1", "spelling"),
    ("20260401", "spelling"),
    ("2026/04/01", "spelling"),
    (" 2026-04-01", "spelling"),
    ("2026-04-01\n", "spelling"),
    ("+2026-04-01", "spelling"),
    ("0001-01-01", "range"),
    ("9999-12-31", "range"),
    ("1999-12-31", "range"),
    ("2100-01-01", "range"),
]
BAD_INSTANTS: list[tuple[Any, str]] = [
    (1775001600, "spelling"),
    (1775001600.5, "spelling"),
    ("1775001600", "spelling"),
    (True, "spelling"),
    ("2026-04-01T09:00:00", "spelling"),  # naive: refused, never taken as UTC or Japan time
    ("2026-04-01", "spelling"),
    ("2026-04-01 09:00:00+09:00", "spelling"),
    ("2026-04-01t09:00:00z", "spelling"),
    ("2026-04-01T09:00+09:00", "spelling"),  # no seconds
    ("2026-04-01T09:00:00+0900", "spelling"),
    ("2026-04-01T09:00:00+09", "spelling"),
    ("2026-04-01T09:00:00.1234567+09:00", "spelling"),  # past microseconds: truncated by one reader
    ("2026-04-01T09:00:00,5+09:00", "spelling"),
    ("２０２６-04-01T09:00:00+09:00", "spelling"),
    ("2026-04-01T09:00:00+09:00\n", "spelling"),
    ("20260401T090000Z", "spelling"),
    ("0001-01-01T00:00:00+23:59", "range"),
    ("9999-12-31T23:59:59Z", "range"),
    ("1999-12-31T23:59:59Z", "range"),
]
GOOD_DAYS = ["2026-04-01", "2000-01-01", "2099-12-31"]
GOOD_INSTANTS = [
    "2026-04-01T09:00:00+09:00",
    "2026-04-01T00:00:00Z",
    "2026-04-01T00:00:00.5-03:30",
    "2000-01-01T00:00:00Z",
    "2099-12-31T23:59:59.999999Z",
]


def _submission(family: Family) -> Any:
    pk = factories.person_key()
    if family is Family.ERASURE:
        return factories.erasure(pk)
    sub = next(s for s in factories.one_of_each(pk) if s.family is family)
    if family is Family.CONSENT:
        sub.data["valid_until"] = "2026-03-31"
    elif family is Family.REFERRAL:
        sub.data["team_support_from"] = "2025-05-20"
    elif family is Family.RETENTION:
        sub.data.update(status="left", left_on="2025-06-01")
    return sub


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    where = changed
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    return changed


def _cases(bad: str) -> list[Any]:
    return [
        pytest.param(family, path, value, rule, id=f"{family.value}.{'.'.join(path)}={value!r}")
        for family, path, kind, _ in FIELDS
        for value, rule in (BAD_DAYS if kind == DAY else BAD_INSTANTS)
        if rule == bad or bad == "any"
    ]


def _expected(family: Family, path: tuple[str, ...], rule: str) -> str:
    kind = next(k for f, p, k, _ in FIELDS if (f, p) == (family, path))
    return SPELLING[kind] if rule == "spelling" else RANGE[kind]


def _no_echo(text: str, value: Any) -> None:
    shown = str(value)
    if len(shown.strip()) >= 3:
        assert shown.strip() not in text, "a refusal repeated the value"
    if isinstance(value, str) and len(value) >= 10:
        assert value[:10] not in text


def test_every_date_and_time_field_of_the_contracts_is_listed() -> None:
    """A date or time field added later is in ``FIELDS`` (or this fails), so each one keeps the rules."""

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        for name, info in model.model_fields.items():
            kinds = [info.annotation]
            while kinds:
                t = kinds.pop()
                if t in (date, datetime, AwareDatetime):
                    found.add((*prefix, name))
                elif isinstance(t, type) and issubclass(t, BaseModel):
                    found |= walk(t, (*prefix, name))
                elif typing.get_origin(t) in (typing.Union, types.UnionType, list, typing.Annotated):
                    kinds += [a for a in typing.get_args(t) if not isinstance(a, (str, int))]
        return found

    listed = {(f.value, *p) for f, p, _, _ in FIELDS}
    found = {(f.value, *p) for f, m in MODELS.items() for p in walk(m, ())}
    assert found == listed
    assert {p for m in PERSONAL_MODELS.values() for p in walk(m, ())} == {("birth_date",)}
    assert walk(FeedRevision, ()) == {("horizon",)}


@pytest.mark.parametrize(("family", "path", "value", "rule"), _cases("any"))
def test_a_date_or_time_in_another_spelling_or_year_is_refused_by_every_reader(
    family: Family, path: tuple[str, ...], value: Any, rule: str
) -> None:
    """The contract from JSON (as consumers read), the quick decoder and both decodes of the record."""
    event = to_event(_submission(family), os.urandom(32))
    key, headers, value_bytes = encode(event)
    document = _set(orjson.loads(value_bytes), path, value)
    raw = orjson.dumps(document)
    with pytest.raises(ValidationError) as refused:
        MODELS[family].model_validate_json(raw)
    (error,) = refused.value.errors(include_input=False)
    assert error["loc"] == path
    assert _expected(family, path, rule) in error["msg"]
    _no_echo(error["msg"], value)
    with pytest.raises(wire.Invalid):
        wire.DATA[family.value].decode(raw)
    for fast in (True, False):
        with pytest.raises(PoisonMessage) as poison:
            decode(key, headers, raw, fast=fast)
        assert ".".join(path) in poison.value.reason and _expected(family, path, rule) in poison.value.reason
        _no_echo(poison.value.reason, value)


@pytest.mark.parametrize(("family", "path", "value", "rule"), _cases("any"))
def test_a_date_or_time_in_another_spelling_or_year_is_refused_at_the_edge(
    family: Family, path: tuple[str, ...], value: Any, rule: str
) -> None:
    """The HTTP edge validates the parsed body (Python values): the same refusals, field and rule named."""
    sub = _submission(family)
    assert not isinstance(check(family, sub.data), list)
    errors = check(family, _set(sub.data, path, value))
    assert isinstance(errors, list), "accepted"
    (error,) = errors
    assert error.field == ".".join(path) and _expected(family, path, rule) in error.rule
    _no_echo(error.message, value)
    _no_echo(error.operator_rule, value)


@pytest.mark.parametrize(
    ("family", "path", "value"),
    [
        pytest.param(f, p, v, id=f"{f.value}.{'.'.join(p)}={v}")
        for f, p, kind, _ in FIELDS
        for v in (GOOD_DAYS if kind == DAY else GOOD_INSTANTS)
    ],
)
def test_the_one_spelling_in_range_is_accepted_by_every_reader(
    family: Family, path: tuple[str, ...], value: str
) -> None:
    partner = next(q for f, p, _, q in FIELDS if (f, p) == (family, path))
    event = to_event(_submission(family), os.urandom(32))
    key, headers, value_bytes = encode(event)
    document = _set(orjson.loads(value_bytes), path, value)
    if partner is not None:
        document = _set(document, partner, value)
    raw = orjson.dumps(document)
    model = MODELS[family].model_validate_json(raw)
    fast = wire.DATA[family.value].decode(raw)
    got = model
    for step in path:
        got, fast = getattr(got, step), getattr(fast, step)
    expected = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    assert got == fast == expected
    assert decode(key, headers, raw, fast=True).subject == decode(key, headers, raw).subject


BAD_BIRTH_DATES: list[tuple[Any, str]] = [
    *[(v, r) for v, r in BAD_DAYS if r == "spelling"],
    ("0001-01-01", "range"),
    ("9999-12-31", "range"),
    ("1899-12-31", "range"),
    ("2100-01-01", "range"),
]


@pytest.mark.parametrize(("value", "rule"), BAD_BIRTH_DATES, ids=repr)
def test_a_birth_date_in_another_spelling_or_an_implausible_year_is_refused(value: Any, rule: str) -> None:
    """A birth year 0001 or 9999 is forged: refused at the edge (HTTP, CSV) and by the block's readers."""
    expected = "YYYY-MM-DD" if rule == "spelling" else "1900-01-01"
    sub = factories.registration(factories.person_key())
    errors = check(Family.REGISTRATION, _set(sub.data, ("personal", "birth_date"), value))
    assert isinstance(errors, list), "accepted"
    (error,) = errors
    assert error.field == "personal.birth_date" and expected in error.rule
    _no_echo(error.message, value)
    block = orjson.dumps({**sub.data["personal"], "birth_date": value})
    with pytest.raises(ValidationError) as refused:
        RegistrationPersonal.model_validate_json(block)
    (err,) = refused.value.errors(include_input=False)
    assert err["loc"] == ("birth_date",) and expected in err["msg"]
    _no_echo(err["msg"], value)
    struct, checks = wire.checked_struct(RegistrationPersonal)
    with pytest.raises((msgspec.ValidationError, ValueError)):
        checked = msgspec.json.decode(block, type=struct)
        if checks is not None:
            checks(checked)


@pytest.mark.parametrize("value", ["1900-01-01", "1950-06-15", "2099-12-31"])
def test_a_plausible_birth_date_is_accepted(value: str) -> None:
    sub = factories.registration(factories.person_key())
    assert not isinstance(check(Family.REGISTRATION, _set(sub.data, ("personal", "birth_date"), value)), list)


@pytest.mark.parametrize(
    "ce_time",
    [
        "1775001600",
        "2026-04-01T09:00:00",
        "2026-04-01 09:00:00+09:00",
        "2026-04-01t09:00:00+09:00",
        "2026-04-01T09:00+09:00",
        "2026-04-01T09+09:00",
        "20260401T090000+0900",
        "2026-W14-3T09:00:00+09:00",
        "2026-04-01T09:00:00,5+09:00",
        "2026-04-01T09:00:00+09:00:30",
        "2026-04-01T09:00:00.1234567+09:00",
    ],
)
@pytest.mark.parametrize("fast", [True, False])
def test_an_envelope_time_in_another_spelling_is_dead_lettered(ce_time: str, fast: bool) -> None:
    """``ce_time`` was read by ``datetime.fromisoformat``, which takes a dozen ISO 8601 spellings."""
    key, headers, value = encode(to_event(_submission(Family.PLACEMENT), os.urandom(32)))
    headers = [(n, ce_time.encode() if n == "ce_time" else v) for n, v in headers]
    with pytest.raises(PoisonMessage) as refused:
        decode(key, headers, value, fast=fast)
    assert "ce_time" in refused.value.reason and "RFC 3339" in refused.value.reason
    assert ce_time not in refused.value.reason


@pytest.mark.parametrize(
    "horizon", [1775001600, "2026-04-01T09:00:00", "2026-04-01 09:00:00Z", "0001-01-01T00:00:00Z"]
)
def test_a_feed_revision_s_horizon_takes_one_spelling(horizon: Any) -> None:
    """The feed topic's record said ``datetime``: a naive horizon or a Unix time passed."""
    from contracts.feed import Invalid, encode_feed_revision
    from tests.unit.test_feed_wire import BUILT, _bodies

    body = _bodies(1)[0]
    FeedRevision.model_validate_json(orjson.dumps(body))
    encode_feed_revision(orjson.dumps(body), BUILT)
    hostile = orjson.dumps({**body, "horizon": horizon})
    with pytest.raises(ValidationError) as refused:
        FeedRevision.model_validate_json(hostile)
    assert [e["loc"] for e in refused.value.errors()] == [("horizon",)]
    with pytest.raises(Invalid):
        encode_feed_revision(hostile, BUILT)
