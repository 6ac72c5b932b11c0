"""The shared view's rules, without a broker: projection under consent, read decisions, disclosure."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

from domain.consent import Scope, consent_record
from domain.shared_view import (
    UNREAD,
    Reader,
    ReaderKind,
    StoredEvent,
    active_consent,
    decide,
    disclose,
    extend,
    project,
    releases,
)

PK = "0" * 31 + "1"
T0 = datetime(2025, 4, 3, 1, 0, tzinfo=UTC)
SHINJUKU = Reader(ReaderKind.AUTHORITY, "131041")
KAWAGUCHI = Reader(ReaderKind.AUTHORITY, "112038")
OFFICE = Reader(ReaderKind.OFFICE, "1301")


def consent(version: int = 1, action: str = "given", scopes: list[str] | None = None, **over: object) -> dict:
    data: dict = {
        "consent_id": "c" * 32,
        "version": version,
        "action": action,
        "person_key": PK,
        "scopes": ([] if action == "withdrawn" else ["share_registration"]) if scopes is None else scopes,
        "recipients": [{"kind": "authority", "code": "131041"}, {"kind": "office", "code": "1301"}],
        "valid_from": "2025-04-03",
        "captured": {"signed_at": f"2025-04-0{2 + version}T10:00:00+09:00"},
    }
    data.update(over)
    return data


def events() -> list[StoredEvent]:
    sealed = {"alg": "A256GCM", "kid": "x", "nonce": "n", "ct": "c"}
    reg = {
        "person_key": PK,
        "registered_on": "2025-04-03",
        "office": "1301",
        "site": "131041-01",
        "authority": "131041",
        "sex": "female",
        "age_band": "35-39",
        "attributes": ["public_assistance"],
        "desired_occupation": {"group": "06"},
        "team_support": True,
        "personal": sealed,
    }
    ref = {
        "referral_id": "r" * 32,
        "person_key": PK,
        "authority": "131041",
        "site": "131041-01",
        "programme": "general",
        "referred_on": "2025-04-01",
        "personal": sealed,
    }
    plc = {
        "placement_id": "p" * 32,
        "person_key": PK,
        "office": "1301",
        "site": "131041-01",
        "placed_on": "2025-05-12",
        "route": "self_found",
        "occupation": {"group": "08"},
        "employment_type": "part_time",
        "personal": sealed,
    }
    ret = {
        "person_key": PK,
        "placement_id": "p" * 32,
        "checkpoint_months": 1,
        "status": "employed",
        "checked_on": "2025-06-12",
        "site": "131041-01",
    }
    return [
        StoredEvent(
            "e1", "registration", T0, reg, {"name": "髙橋 花子", "birth_date": "1988-06-01", "phone": "03"}
        ),
        StoredEvent("e2", "referral", T0, ref, {"case_number": "SJ-1"}),
        StoredEvent("e3", "placement", T0, plc, {"employer_name": "𠮷野ケア"}),
        StoredEvent("e4", "retention", T0, ret, None),
    ]


TODAY = date(2025, 7, 1)


def test_no_consent_means_not_in_view() -> None:
    assert project(PK, active_consent([], TODAY), events()) is None


def test_newest_version_wins_and_withdrawal_grants_nothing() -> None:
    given, withdrawn = consent_record(consent(1)), consent_record(consent(2, "withdrawn"))
    assert active_consent([given], TODAY) == given
    assert active_consent([given, withdrawn], TODAY) is None
    fresh = consent_record(consent(3, consent_id="d" * 32))  # a new form signed later re-consents
    assert active_consent([given, withdrawn, fresh], TODAY) == fresh


def test_validity_period() -> None:
    rec = consent_record(consent(valid_from="2025-05-01", valid_until="2025-06-30"))
    assert active_consent([rec], date(2025, 4, 30)) is None
    assert active_consent([rec], date(2025, 5, 1)) == rec
    assert active_consent([rec], date(2025, 7, 1)) is None


def test_fields_only_under_their_scope() -> None:
    only_share = project(PK, consent_record(consent(scopes=["share_registration"])), events())
    assert only_share is not None
    assert only_share.name == "髙橋 花子"
    assert only_share.case_numbers == ({"authority": "131041", "case_number": "SJ-1"},)
    assert "employer_name" not in only_share.placements[0] and only_share.retention == ()

    only_retention = project(PK, consent_record(consent(scopes=["retention_support"])), events())
    assert only_retention is not None
    assert only_retention.name == "髙橋 花子"  # needed to follow the person up
    assert (
        only_retention.phone is None
        and only_retention.birth_date is None
        and only_retention.case_numbers == ()
    )
    assert only_retention.job_seeker_number is None and len(only_retention.retention) == 1


def test_projection_ignores_event_order() -> None:
    rec = consent_record(consent(scopes=["share_registration", "disclose_placement", "retention_support"]))
    evs = events()
    expected = project(PK, rec, evs)
    for seed in range(5):
        shuffled = evs[:]
        random.Random(seed).shuffle(shuffled)
        assert project(PK, rec, shuffled) == expected


def test_masked_when_a_sealed_block_cannot_be_opened() -> None:
    evs = [StoredEvent(e.event_id, e.family, e.time, e.data, None) for e in events()]
    view = project(PK, consent_record(consent()), evs)
    assert view is not None and view.masked and view.name is None


def _more_events() -> list[StoredEvent]:
    """``events()`` plus a second referral and placement, a retention that left, and a block that would
    not open: enough for every list of the record to grow and for the record to become masked."""
    evs = events()
    ref, plc, ret = evs[1].data, evs[2].data, evs[3].data
    return [
        *evs,
        StoredEvent(
            "e5",
            "referral",
            T0,
            {**ref, "referral_id": "s" * 32, "authority": "112038", "referred_on": "2025-03-01"},
            {"case_number": "KG-7"},
        ),
        StoredEvent(
            "e6", "placement", T0, {**plc, "placement_id": "q" * 32, "placed_on": "2025-05-01"}, None
        ),
        StoredEvent(
            "e7",
            "retention",
            T0,
            {**ret, "checkpoint_months": 3, "status": "left", "left_on": "2025-08-01"},
            None,
        ),
        StoredEvent("e8", "referral", T0, {**ref, "referral_id": "t" * 32}, {"case_number": "SJ-1"}),
    ]


def test_extending_a_record_equals_projecting_all_its_events() -> None:
    every = _more_events()
    scope_sets = [
        ["share_registration"],
        ["disclose_placement"],
        ["retention_support"],
        ["share_registration", "disclose_placement", "retention_support"],
    ]
    for scopes in scope_sets:
        rec = consent_record(consent(scopes=scopes))
        expected = project(PK, rec, every)
        for seed in range(20):
            shuffled = every[:]
            random.Random(seed).shuffle(shuffled)
            cut = seed % len(every)
            before = project(PK, rec, shuffled[:cut])
            assert before is not None
            assert extend(before, rec, shuffled[cut:]) == expected, (scopes, seed)
            assert extend(before, rec, []) == before


def test_a_block_whose_fields_the_consent_does_not_release_is_not_needed_open() -> None:
    """The rebuild leaves a stored block that is known to open ``UNREAD`` where ``releases`` says the
    consent takes none of its fields: the record is the one its opened block gives, under every set of
    scopes (a shut block still masks the person)."""
    every = _more_events()
    scope_sets = [
        {Scope.SHARE_REGISTRATION},
        {Scope.DISCLOSE_PLACEMENT},
        {Scope.RETENTION_SUPPORT},
        {Scope.SHARE_REGISTRATION, Scope.RETENTION_SUPPORT},
        set(Scope),
    ]
    for scopes in scope_sets:
        rec = consent_record(consent(scopes=sorted(s.value for s in scopes)))
        unread = [
            e._replace(personal=UNREAD)
            if e.personal is not None and not releases(e.family, rec.scopes)
            else e
            for e in every
        ]
        assert project(PK, rec, unread) == project(PK, rec, every), scopes
        assert any(e.personal is UNREAD for e in unread) or scopes == set(Scope)
    assert not releases("placement", frozenset({Scope.SHARE_REGISTRATION}))
    assert releases("registration", frozenset({Scope.RETENTION_SUPPORT}))


def test_extending_cannot_pick_between_registrations_or_change_consent() -> None:
    rec = consent_record(consent())
    evs = events()
    view = project(PK, rec, evs)
    assert view is not None
    again = StoredEvent("e9", "registration", T0, {**evs[0].data, "registered_on": "2025-06-01"}, None)
    assert extend(view, rec, [again]) is None  # the record does not keep what the choice needs
    wider = consent_record(consent(2, scopes=["share_registration", "retention_support"]))
    assert extend(view, wider, []) is None and extend(view, wider, evs[1:2]) is None
    same_terms = consent_record(consent(3))  # a new version with the same terms changes nothing shown
    assert extend(view, same_terms, []) == view


def test_reads_are_scoped_to_own_people_recipients_and_purpose() -> None:
    view = project(PK, consent_record(consent(scopes=["share_registration"])), events())
    assert decide(view, SHINJUKU, Scope.SHARE_REGISTRATION).granted
    assert decide(view, OFFICE, Scope.SHARE_REGISTRATION).granted
    other = decide(view, KAWAGUCHI, Scope.SHARE_REGISTRATION)
    assert not other.granted and "112038" in other.reason
    assert not decide(view, Reader(ReaderKind.OFFICE, "1302"), Scope.SHARE_REGISTRATION).granted
    purpose = decide(view, SHINJUKU, Scope.RETENTION_SUPPORT)
    assert not purpose.granted and "retention_support" in purpose.reason
    assert not decide(None, SHINJUKU, Scope.SHARE_REGISTRATION).granted


def test_an_owner_not_listed_as_recipient_is_refused() -> None:
    rec = consent_record(consent(recipients=[{"kind": "office", "code": "1301"}]))
    view = project(PK, rec, events())
    decision = decide(view, SHINJUKU, Scope.SHARE_REGISTRATION)
    assert not decision.granted and "recipient" in decision.reason


def test_disclosure_carries_the_purposes_fields_only() -> None:
    rec = consent_record(consent(scopes=["share_registration", "disclose_placement", "retention_support"]))
    view = project(PK, rec, events())
    assert view is not None
    for_placement = disclose(view, Scope.DISCLOSE_PLACEMENT)
    assert (
        for_placement["name"] == "髙橋 花子" and for_placement["placements"][0]["employer_name"] == "𠮷野ケア"
    )
    assert "phone" not in for_placement and "case_numbers" not in for_placement
    assert "attributes" not in for_placement  # 要配慮個人情報 only to a purpose that needs it
    for_registration = disclose(view, Scope.SHARE_REGISTRATION)
    assert "employer_name" not in for_registration["placements"][0]
    assert for_registration["case_numbers"] == ["SJ-1"] and for_registration["birth_date"] == "1988-06-01"
    assert decide(view, SHINJUKU, Scope.SHARE_REGISTRATION).fields == (
        "name",
        "birth_date",
        "phone",
        "case_numbers",
        "attributes",
        "referrals.programme",
    )
