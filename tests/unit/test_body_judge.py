"""A request body judged by the contract's msgspec structs (``csv_chunks.FamilyRows.judge_body``, the
HTTP path) against the contract it stands for (``submission.check``, the pydantic input model).

Over ``hypothesis``-made bodies (every family's valid bodies, mutated with hostile JSON values, fields
removed, fields the contract does not know added at any depth, values of other fields moved in): the
judge accepts exactly the bodies the contract accepts, every refusal is the contract's (same fields,
same rules, same order), and an accepted body becomes the same event, byte for byte, as the pydantic path
builds (``submission.build_event``, sealed under the same nonce).
"""

from __future__ import annotations

import copy
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.envelope import Family, encode, event_type
from producers.adapters import csv_chunks
from producers.adapters.authorization import authorised_fields
from producers.adapters.csv_chunks import FamilyRows, Row, seal_rows
from producers.submission import build_event, check, seal_checked
from tests import factories
from tests.unit.test_csv_chunks import HOSTILE

FAMILIES = (Family.REGISTRATION, Family.CONSENT, Family.REFERRAL, Family.PLACEMENT, Family.RETENTION)
PK = "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"
KEY = bytes(range(32))
SOURCE = "/hellowork/offices/1301"

_VALID: dict[Family, list[dict[str, Any]]] = {
    Family.REGISTRATION: [
        factories.registration(PK).data,
        factories.registration(PK, foreign_national=True).data,
    ],
    Family.CONSENT: [factories.consent(PK).data, factories.consent(PK, action="withdrawn").data],
    Family.REFERRAL: [
        factories.referral(PK).data,
        factories.referral(PK, team_support_from="2025-05-20").data,
    ],
    Family.PLACEMENT: [factories.placement(PK).data, factories.placement(PK, foreign_national=False).data],
    Family.RETENTION: [
        factories.retention(PK, "ab" * 16).data,
        factories.retention(PK, "ab" * 16, status="left", left_on="2025-06-01").data,
    ],
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(HOSTILE)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _objects(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body and every JSON object inside it (the nested blocks: personal, occupation, captured …)."""
    found = [body]
    for value in body.values():
        if isinstance(value, dict):
            found += _objects(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    found += _objects(item)
    return found


@st.composite
def bodies(draw: st.DrawFn) -> tuple[Family, Any]:
    """A valid body of some family with up to four mutations, at any depth."""
    family = draw(st.sampled_from(FAMILIES))
    body = copy.deepcopy(draw(st.sampled_from(_VALID[family])))
    moved = [v for valid in _VALID.values() for b in valid for o in _objects(b) for v in o.values()]
    for _ in range(draw(st.integers(0, 4))):
        target = draw(st.sampled_from(_objects(body)))
        kind = draw(st.sampled_from(["replace", "replace", "drop", "unknown", "moved"]))
        if kind == "unknown" or not target:
            target[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
            continue
        name = draw(st.sampled_from(sorted(target)))
        if kind == "drop":
            del target[name]
        elif kind == "moved":
            target[name] = copy.deepcopy(draw(st.sampled_from(moved)))
        else:
            target[name] = draw(json_values)
    if draw(st.integers(0, 30)) == 0:  # now and then not an object at all
        return family, draw(json_values)
    return family, body


def _same(family: Family, body: Any, monkeypatch: pytest.MonkeyPatch, prefix: tuple[int, ...] = ()) -> None:
    expected = check(family, body, prefix)
    judged = FamilyRows(family).judge_body(body, prefix)
    if isinstance(expected, list):
        assert judged == expected, "the judge accepted, or refused otherwise than the contract"
        return
    assert isinstance(judged, Row), f"the judge refused a body the contract accepts: {judged}"
    assert dict(judged.view) == dict(authorised_fields(expected.data))
    # Same nonce for both (and the same event id and time): then the two events are the same bytes.
    monkeypatch.setattr(csv_chunks.os, "urandom", lambda n: bytes(n))
    monkeypatch.setattr("infra.crypto.os.urandom", lambda n: bytes(n))
    (event,) = seal_rows(family, [judged], [SOURCE], {judged.subject: KEY})
    wanted = build_event(expected, SOURCE, seal_checked(expected, KEY))._replace(id=event.id, time=event.time)
    assert event.type == event_type(family) and event.subject == wanted.subject
    assert encode(event) == encode(wanted)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(), st.sampled_from([(), (0,), (7,)]))
def test_fuzz_the_body_judge_accepts_refuses_and_builds_as_the_contract(
    case: tuple[Family, Any], prefix: tuple[int, ...]
) -> None:
    family, body = case
    with pytest.MonkeyPatch.context() as monkeypatch:
        _same(family, body, monkeypatch, prefix)


def test_valid_bodies_take_the_structs_and_hostile_ones_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzz is not vacuous: every family's valid bodies are accepted by the structs alone, and a body
    with a field the contract does not know is refused, with the contract's reason."""
    for family in FAMILIES:
        for body in _VALID[family]:
            assert FamilyRows(family).fast(body) is not None, family
            _same(family, body, monkeypatch)
        unknown = {**_VALID[family][0], "nickname": "x"}
        refused = FamilyRows(family).judge_body(unknown)
        assert isinstance(refused, list) and [e.rule_class for e in refused] == ["extra_forbidden"], refused
        assert refused == check(family, unknown)


def test_the_fuzz_finds_a_judge_that_lets_unknown_fields_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """The structs ignore fields they do not know (every reader of the contract does): without the
    judge's own look for them, it would accept bodies the contract refuses, and the fuzz finds one."""

    def looser(case: tuple[Family, Any]) -> bool:
        family, body = case
        return (
            isinstance(body, dict)
            and isinstance(check(family, body), list)
            and FamilyRows(family).fast(body) is not None
        )

    hypothesis.find(bodies(), looser, settings=settings(max_examples=3000, database=None))
