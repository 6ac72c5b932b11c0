"""Consent rules (domain.consent): which record is effective, and what it grants to whom on which day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.consent import ConsentRecord, Recipient, Scope, effective, fence, permits

SHINJUKU = Recipient("authority", "131041")
OFFICE = Recipient("office", "1301")
FROM, UNTIL = date(2025, 4, 1), date(2025, 9, 30)
SIGNED = datetime(2025, 4, 1, 1, 0, tzinfo=UTC)


def record(**over: object) -> ConsentRecord:
    fields: dict[str, object] = {
        "consent_id": "c1",
        "version": 1,
        "withdrawn": False,
        "scopes": frozenset({Scope.SHARE_REGISTRATION}),
        "recipients": frozenset({SHINJUKU, OFFICE}),
        "valid_from": FROM,
        "valid_until": UNTIL,
        "signed_at": SIGNED,
    }
    fields.update(over)
    return ConsentRecord(**fields)  # type: ignore[arg-type]


# --- rule 3: what one record grants ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "granted"),
    [
        (FROM - timedelta(days=1), False),
        (FROM, True),  # valid_from is the first day
        (FROM + timedelta(days=30), True),
        (UNTIL, True),  # valid_until is the last day, not the first day after
        (UNTIL + timedelta(days=1), False),
    ],
)
def test_a_record_grants_from_valid_from_to_valid_until_both_included(day: date, granted: bool) -> None:
    assert record().grants(Scope.SHARE_REGISTRATION, SHINJUKU, day) is granted


def test_without_valid_until_a_record_is_open_ended() -> None:
    open_ended = record(valid_until=None)
    assert open_ended.grants(Scope.SHARE_REGISTRATION, SHINJUKU, date(2099, 12, 31))
    assert not open_ended.grants(Scope.SHARE_REGISTRATION, SHINJUKU, FROM - timedelta(days=1))


def test_a_withdrawn_record_grants_nothing() -> None:
    withdrawn = record(withdrawn=True, scopes=frozenset(Scope))
    assert not any(withdrawn.grants(s, r, FROM) for s in Scope for r in (SHINJUKU, OFFICE))


@pytest.mark.parametrize(
    "listed", [Scope.SHARE_REGISTRATION, Scope.DISCLOSE_PLACEMENT, Scope.RETENTION_SUPPORT]
)
def test_a_record_grants_only_the_scopes_it_lists(listed: Scope) -> None:
    one_scope = record(scopes=frozenset({listed}))
    assert {s for s in Scope if one_scope.grants(s, SHINJUKU, FROM)} == {listed}


def test_a_record_grants_only_to_the_recipients_it_lists() -> None:
    only_office = record(recipients=frozenset({OFFICE}))
    assert only_office.grants(Scope.SHARE_REGISTRATION, OFFICE, FROM)
    assert not only_office.grants(Scope.SHARE_REGISTRATION, SHINJUKU, FROM)
    # The kind is part of the recipient: an office that happens to carry the same code is not it.
    assert not only_office.grants(Scope.SHARE_REGISTRATION, Recipient("authority", "1301"), FROM)


# --- rule 2: the effective record --------------------------------------------------------------------


def test_no_records_no_effective_consent_and_nothing_permitted() -> None:
    assert effective([]) is None
    assert not permits([], Scope.SHARE_REGISTRATION, SHINJUKU, FROM)


def test_the_record_signed_last_is_effective_whatever_its_version() -> None:
    # A fresh form (version 1) signed after an older record reached version 3 is the person's consent.
    old = record(consent_id="old", version=3, signed_at=SIGNED)
    fresh = record(consent_id="fresh", version=1, signed_at=SIGNED + timedelta(days=10))
    assert effective([old, fresh]) is fresh
    assert effective([fresh, old]) is fresh


def test_records_signed_at_the_same_instant_are_ordered_by_version() -> None:
    v1 = record(consent_id="a", version=1)
    v2 = record(consent_id="b", version=2)
    assert effective([v2, v1]) is v2
    assert effective([v1, v2]) is v2


def test_signing_a_new_form_after_a_withdrawal_re_consents() -> None:
    given_ = record(consent_id="first", signed_at=SIGNED)
    withdrawal = record(consent_id="first", version=2, withdrawn=True, signed_at=SIGNED + timedelta(days=5))
    again = record(consent_id="second", signed_at=SIGNED + timedelta(days=9))
    day = FROM + timedelta(days=20)
    assert permits([given_], Scope.SHARE_REGISTRATION, SHINJUKU, day)
    assert not permits([withdrawal], Scope.SHARE_REGISTRATION, SHINJUKU, day)
    assert permits([withdrawal, again], Scope.SHARE_REGISTRATION, SHINJUKU, day)


def test_a_withdrawal_signed_last_overrides_an_earlier_record_of_another_id() -> None:
    other = record(consent_id="other", signed_at=SIGNED)
    withdrawal = record(consent_id="this", withdrawn=True, signed_at=SIGNED + timedelta(hours=1))
    assert not permits([other, withdrawal], Scope.SHARE_REGISTRATION, SHINJUKU, FROM)


def test_permits_asks_the_effective_record_only() -> None:
    # An older record granting retention support does not add to a newer one that does not.
    older = record(consent_id="older", scopes=frozenset({Scope.RETENTION_SUPPORT}))
    newer = record(consent_id="newer", signed_at=SIGNED + timedelta(days=1))
    assert not permits([older, newer], Scope.RETENTION_SUPPORT, SHINJUKU, FROM)
    assert permits([older, newer], Scope.SHARE_REGISTRATION, SHINJUKU, FROM)


_records = st.lists(
    st.builds(
        lambda i, version, minutes, withdrawn: record(
            consent_id=f"c{i}",
            version=version,
            withdrawn=withdrawn,
            signed_at=SIGNED + timedelta(minutes=minutes),
        ),
        st.integers(0, 3),
        st.integers(1, 4),
        st.integers(0, 5),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@given(records=_records, data=st.data())
def test_the_effective_record_does_not_depend_on_arrival_order(
    records: list[ConsentRecord], data: st.DataObject
) -> None:
    chosen = effective(records)
    again = effective(data.draw(st.permutations(records)))
    last = max(r.signed_at for r in records)
    if any(r.withdrawn and r.signed_at == last for r in records):
        # Rule 6: nothing signed at the latest withdrawal's instant grants, whatever its version: the
        # withdrawal, or nothing (records tied on both keys may go either way; neither grants).
        assert all(e is None or (e.withdrawn and e.signed_at == last) for e in (chosen, again))
        return
    assert chosen is not None and again is not None and chosen in records
    assert (again.signed_at, again.version) == (chosen.signed_at, chosen.version)
    # Nothing was signed after it, and nothing signed at the same instant carries a higher version.
    assert not any(r.signed_at > chosen.signed_at for r in records)
    assert not any(r.signed_at == chosen.signed_at and r.version > chosen.version for r in records)


@given(records=_records)
def test_permits_is_what_the_record_signed_last_grants(records: list[ConsentRecord]) -> None:
    last = max(r.signed_at for r in records)
    latest = [r for r in records if r.signed_at == last]
    top = max(r.version for r in latest)
    winners = {r.withdrawn for r in latest if r.version == top}
    if any(r.withdrawn for r in latest):  # rule 6: nothing signed at the withdrawal's instant grants
        assert not permits(records, Scope.SHARE_REGISTRATION, SHINJUKU, FROM)
    elif len(winners) == 1:  # records tied on both keys may go either way; the rule does not order them
        assert permits(records, Scope.SHARE_REGISTRATION, SHINJUKU, FROM) is (not winners.pop())


@given(
    records=st.one_of(st.just([]), _records),
    fenced_minutes=st.one_of(st.none(), st.integers(-1, 6)),
)
def test_the_effective_record_is_the_latest_signed_unless_the_fence_is_after_it(
    records: list[ConsentRecord], fenced_minutes: int | None
) -> None:
    """``effective`` in one pass (the shared view asks it per person per batch) is its definition: the
    fence (rule 6: the latest withdrawal, or the fence kept from before if later; a record signed at or
    before it is dead) and the record signed last (rule 2: then the highest version; the first of records
    tied on both)."""
    fenced_at = None if fenced_minutes is None else SIGNED + timedelta(minutes=fenced_minutes)
    wall = fence(records, fenced_at)
    last = max(records, key=lambda r: (r.signed_at, r.version), default=None)
    dead = last is not None and wall is not None and last.signed_at <= wall and not last.withdrawn
    assert effective(records, fenced_at) is (None if dead else last)
    assert effective(iter(records), fenced_at) is (None if dead else last)
