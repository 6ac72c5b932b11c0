"""Boundaries of the shared view's rules (domain.shared_view): the active consent on its first and last
day, the registration shown, who owns and who receives a person, what a read discloses, and the
projection's independence from event order (hypothesis)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.consent import ConsentRecord, Recipient, Scope, consent_record
from domain.shared_view import (
    FIELDS_BY_PURPOSE,
    SPECIAL_CARE_FIELDS,
    Decision,
    Reader,
    ReaderKind,
    StoredEvent,
    active_consent,
    decide,
    disclose,
    disclosed_fields,
    extend,
    project,
    same_consent,
)

PK = "0" * 31 + "1"
T0 = datetime(2025, 4, 3, 1, 0, tzinfo=UTC)
FROM, UNTIL = date(2025, 4, 3), date(2025, 9, 30)
SEALED = {"alg": "A256GCM", "kid": "k", "nonce": "n", "ct": "c"}
SHINJUKU = Reader(ReaderKind.AUTHORITY, "131041")
KAWAGUCHI = Reader(ReaderKind.AUTHORITY, "112038")
OFFICE = Reader(ReaderKind.OFFICE, "1301")
OTHER_OFFICE = Reader(ReaderKind.OFFICE, "1302")
NATIONAL = Reader(ReaderKind.NATIONAL, "national")


def consent(
    scopes: frozenset[Scope] = frozenset(Scope),
    recipients: frozenset[Recipient] = frozenset(
        {Recipient("authority", "131041"), Recipient("office", "1301")}
    ),
    **over: Any,
) -> ConsentRecord:
    fields: dict[str, Any] = {
        "consent_id": "c" * 32,
        "version": 1,
        "withdrawn": False,
        "scopes": scopes,
        "recipients": recipients,
        "valid_from": FROM,
        "valid_until": UNTIL,
        "signed_at": T0,
    }
    fields.update(over)
    return ConsentRecord(**fields)


def registration(
    event_id: str = "reg",
    registered_on: str = "2025-04-03",
    office: str = "1301",
    time: datetime = T0,
    **personal: Any,
) -> StoredEvent:
    data = {
        "person_key": PK,
        "registered_on": registered_on,
        "office": office,
        "site": "131041-01",
        "authority": "131041",
        "sex": "female",
        "age_band": "35-39",
        "attributes": ["public_assistance"],
        "desired_occupation": {"group": "06"},
        "team_support": True,
        "personal": SEALED,
    }
    opened = {"name": "髙橋 花子", "name_kana": "タカハシ ハナコ", "birth_date": "1988-06-01", "phone": "03"}
    return StoredEvent(event_id, "registration", time, data, opened | personal)


def referral(n: int, authority: str = "131041", case_number: str | None = "SJ-1") -> StoredEvent:
    data = {
        "referral_id": f"r{n:031d}",
        "person_key": PK,
        "authority": authority,
        "site": f"{authority}-01",
        "programme": "general",
        "referred_on": f"2025-04-{1 + n % 28:02d}",
        "personal": SEALED,
    }
    return StoredEvent(f"ref{n}", "referral", T0, data, {"case_number": case_number} if case_number else None)


def placement(n: int, employer: str | None = "𠮷野ケア") -> StoredEvent:
    data = {
        "placement_id": f"p{n:031d}",
        "person_key": PK,
        "office": "1301",
        "site": "131041-01",
        "placed_on": f"2025-05-{1 + n % 28:02d}",
        "route": "hello_work_referral",
        "occupation": {"group": "08"},
        "employment_type": "part_time",
        "personal": SEALED,
    }
    personal = {"employer_name": employer, "employer_address": "東京都"} if employer else None
    return StoredEvent(f"plc{n}", "placement", T0, data, personal)


def retention(n: int, months: int = 1, left_on: str | None = None) -> StoredEvent:
    data = {
        "person_key": PK,
        "placement_id": f"p{n:031d}",
        "checkpoint_months": months,
        "status": "left" if left_on else "employed",
        "checked_on": f"2025-06-{1 + n % 28:02d}",
        "site": "131041-01",
        "left_on": left_on,
    }
    return StoredEvent(f"ret{n}-{months}", "retention", T0, data, None)


def view(scopes: frozenset[Scope] = frozenset(Scope), **consent_over: Any) -> Any:
    result = project(
        PK, consent(scopes, **consent_over), [registration(), referral(1), placement(1), retention(1)]
    )
    assert result is not None
    return result


# --- the active consent --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "active"),
    [
        (FROM - timedelta(days=1), False),
        (FROM, True),
        (UNTIL, True),  # the valid_until day is still inside the consent
        (UNTIL + timedelta(days=1), False),
    ],
)
def test_a_consent_is_active_from_its_first_to_its_last_day(today: date, active: bool) -> None:
    record = consent()
    assert (active_consent([record], today) is record) is active


def test_an_open_ended_consent_stays_active() -> None:
    record = consent(valid_until=None)
    assert active_consent([record], date(2099, 1, 1)) is record


def test_a_consent_without_scopes_or_withdrawn_is_not_active() -> None:
    assert active_consent([consent(scopes=frozenset())], FROM) is None
    assert active_consent([consent(withdrawn=True)], FROM) is None
    assert active_consent([], FROM) is None


def test_the_active_consent_is_the_one_signed_last() -> None:
    earlier = consent(consent_id="a" * 32, version=5)
    later = consent(consent_id="b" * 32, version=1, signed_at=T0 + timedelta(minutes=1))
    assert active_consent([earlier, later], FROM) is later


def test_consent_events_become_records() -> None:
    data = {
        "consent_id": "c" * 32,
        "version": "2",
        "action": "given",
        "scopes": ["share_registration", "retention_support"],
        "recipients": [{"kind": "authority", "code": "131041"}, {"kind": "office", "code": "1301"}],
        "valid_from": "2025-04-03",
        "valid_until": "2025-09-30",
        "captured": {"signed_at": "2025-04-03T10:00:00+09:00"},
    }
    assert consent_record(data) == ConsentRecord(
        consent_id="c" * 32,
        version=2,
        withdrawn=False,
        scopes=frozenset({Scope.SHARE_REGISTRATION, Scope.RETENTION_SUPPORT}),
        recipients=frozenset({Recipient("authority", "131041"), Recipient("office", "1301")}),
        valid_from=FROM,
        valid_until=UNTIL,
        signed_at=datetime(2025, 4, 3, 1, 0, tzinfo=UTC),
    )
    withdrawal = consent_record({**data, "action": "withdrawn", "scopes": [], "valid_until": None})
    assert withdrawal.withdrawn and withdrawal.valid_until is None and withdrawal.scopes == frozenset()
    open_ended = {k: v for k, v in data.items() if k != "valid_until"}
    assert consent_record(open_ended).valid_until is None


# --- the registration shown ----------------------------------------------------------------------


def test_a_person_who_applied_again_is_shown_as_of_the_latest_application() -> None:
    first = registration("e-first", registered_on="2025-04-03", office="1301")
    again = registration("e-again", registered_on="2025-06-10", office="1302", time=T0 - timedelta(days=1))
    for events in ([first, again], [again, first]):
        shown = project(PK, consent(), events)
        assert shown is not None
        assert (shown.office, shown.registered_on) == ("1302", date(2025, 6, 10))


def test_applications_on_the_same_day_are_ordered_by_arrival_then_event_id() -> None:
    early = registration("e-b", office="1301", time=T0)
    late = registration("e-a", office="1302", time=T0 + timedelta(hours=1))
    assert project(PK, consent(), [late, early]).office == "1302"  # type: ignore[union-attr]
    twin = registration("e-c", office="1303", time=T0)
    assert project(PK, consent(), [twin, early]).office == "1303"  # type: ignore[union-attr]
    assert project(PK, consent(), [early, twin]).office == "1303"  # type: ignore[union-attr]


# --- what the record holds under which scope -----------------------------------------------------


def test_the_name_goes_with_every_scope_the_rest_with_its_own() -> None:
    for scope in Scope:
        shown = view(frozenset({scope}))
        assert shown.name == "髙橋 花子"
        assert (shown.birth_date == date(1988, 6, 1)) is (scope is Scope.SHARE_REGISTRATION)
        assert (shown.name_kana is not None) is (scope is Scope.SHARE_REGISTRATION)
        own_case = ({"authority": "131041", "case_number": "SJ-1"},)
        assert (shown.case_numbers == own_case) is (scope is Scope.SHARE_REGISTRATION)
        assert bool(shown.retention) is (scope is Scope.RETENTION_SUPPORT)
        employer = shown.placements[0].get("employer_name")
        assert (employer == "𠮷野ケア") is (scope is Scope.DISCLOSE_PLACEMENT)
        # The non-identifying core is there under every scope.
        assert (shown.office, shown.sex, shown.desired_occupation) == ("1301", "female", "06")
        assert shown.referring_authorities == ("131041",)


def test_the_record_carries_the_consent_it_was_built_under() -> None:
    shown = view()
    assert shown.consent_id == "c" * 32
    assert shown.scopes == ("disclose_placement", "retention_support", "share_registration")
    assert (shown.recipient_authorities, shown.recipient_offices) == (("131041",), ("1301",))
    assert (shown.valid_from, shown.valid_until) == (FROM, UNTIL)
    assert same_consent(shown, consent())


@pytest.mark.parametrize(
    "change",
    [
        {"consent_id": "d" * 32},
        {"valid_from": FROM + timedelta(days=1)},
        {"valid_until": None},
        {"scopes": frozenset({Scope.SHARE_REGISTRATION})},
        {"recipients": frozenset({Recipient("authority", "131041")})},
        {"recipients": frozenset({Recipient("authority", "131041"), Recipient("office", "1302")})},
    ],
)
def test_any_change_in_what_the_record_keeps_of_a_consent_is_a_different_consent(
    change: dict[str, Any],
) -> None:
    shown = view()
    other = consent(**change)
    assert not same_consent(shown, other)
    assert extend(shown, other, []) is None
    assert extend(shown, other, [referral(9)]) is None


def test_same_consent_ignores_what_the_record_does_not_keep() -> None:
    assert same_consent(view(), consent(version=7, signed_at=T0 + timedelta(days=3)))


def test_a_block_that_will_not_open_marks_the_record_masked() -> None:
    erased = StoredEvent("plc1", "placement", T0, placement(1).data, None)
    assert project(PK, consent(), [registration(), erased]).masked  # type: ignore[union-attr]
    assert not project(PK, consent(), [registration(), placement(1)]).masked  # type: ignore[union-attr]
    no_block = StoredEvent("ret", "retention", T0, retention(1).data, None)  # retention has no personal block
    assert not project(PK, consent(), [registration(), no_block]).masked  # type: ignore[union-attr]
    shown = view()
    assert extend(shown, consent(), [erased]).masked  # type: ignore[union-attr]
    assert not extend(shown, consent(), [placement(2)]).masked  # type: ignore[union-attr]


def test_retention_keeps_the_day_a_person_left() -> None:
    shown = project(PK, consent(), [registration(), retention(1, 3, left_on="2025-08-01"), retention(1, 1)])
    assert shown is not None
    assert [r["checkpoint_months"] for r in shown.retention] == [1, 3]
    assert "left_on" not in shown.retention[0]
    assert shown.retention[1]["left_on"] == "2025-08-01"


# --- reads ------------------------------------------------------------------------------------------


def test_the_national_reader_reads_as_the_registration_office_would() -> None:
    listed = view()  # recipients: authority 131041 and office 1301, where the person registered
    assert decide(listed, NATIONAL, Scope.SHARE_REGISTRATION).granted
    other_office_only = view(
        recipients=frozenset({Recipient("authority", "131041"), Recipient("office", "1302")})
    )
    assert decide(other_office_only, NATIONAL, Scope.SHARE_REGISTRATION) == Decision(
        False, "consent does not list hello_work_national:national as recipient"
    )


def test_the_national_reader_does_not_own_someone_never_registered() -> None:
    unregistered = project(PK, consent(), [referral(1)])
    assert unregistered is not None and unregistered.office is None
    assert decide(unregistered, NATIONAL, Scope.SHARE_REGISTRATION) == Decision(
        False, "person is not among the people of hello_work_national:national"
    )


def test_an_authority_owns_the_people_it_referred_even_if_registered_elsewhere() -> None:
    referred = project(
        PK,
        consent(recipients=frozenset({Recipient("authority", "112038")})),
        [registration(), referral(1, authority="112038")],
    )
    assert referred is not None and referred.authority == "131041"
    assert decide(referred, KAWAGUCHI, Scope.SHARE_REGISTRATION).granted
    assert not decide(referred, SHINJUKU, Scope.SHARE_REGISTRATION).granted  # owner, not a recipient


@pytest.mark.parametrize(
    ("reader", "reason"),
    [
        (KAWAGUCHI, "person is not among the people of authority:112038"),
        (OTHER_OFFICE, "person is not among the people of office:1302"),
    ],
)
def test_a_reader_is_refused_someone_else_s_person(reader: Reader, reason: str) -> None:
    assert decide(view(), reader, Scope.SHARE_REGISTRATION) == Decision(False, reason)


def test_nobody_reads_a_person_outside_the_view() -> None:
    assert decide(None, SHINJUKU, Scope.SHARE_REGISTRATION) == Decision(
        False, "person is not among the people of authority:131041"
    )


def test_an_office_owner_not_listed_is_refused_as_recipient() -> None:
    shown = view(recipients=frozenset({Recipient("authority", "131041")}))
    assert decide(shown, OFFICE, Scope.SHARE_REGISTRATION) == Decision(
        False, "consent does not list office:1301 as recipient"
    )
    assert decide(shown, SHINJUKU, Scope.SHARE_REGISTRATION).granted


def test_a_purpose_the_consent_does_not_grant_is_refused() -> None:
    shown = view(frozenset({Scope.DISCLOSE_PLACEMENT}))
    assert decide(shown, SHINJUKU, Scope.SHARE_REGISTRATION) == Decision(
        False, "consent does not grant purpose 'share_registration'"
    )


def test_a_granted_read_names_the_fields_that_hold_a_value() -> None:
    shown = view()
    assert decide(shown, SHINJUKU, Scope.SHARE_REGISTRATION) == Decision(
        True,
        fields=(
            "name",
            "name_kana",
            "birth_date",
            "phone",
            "case_numbers",
            "attributes",
            "referrals.programme",
        ),
    )
    assert decide(shown, OFFICE, Scope.DISCLOSE_PLACEMENT).fields == (
        "name",
        "placements.employer_name",
        "placements.employer_address",
    )
    assert disclosed_fields(shown, Scope.RETENTION_SUPPORT) == ("name", "retention", *SPECIAL_CARE_FIELDS)
    without_employer = project(PK, consent(), [registration(), placement(1, employer=None)])
    assert disclosed_fields(without_employer, Scope.DISCLOSE_PLACEMENT) == ("name",)  # type: ignore[arg-type]


@pytest.mark.parametrize("purpose", list(Scope))
def test_a_read_discloses_the_core_and_the_fields_of_its_purpose_only(purpose: Scope) -> None:
    body = disclose(view(), purpose)
    personal = {"name", "name_kana", "birth_date", "phone", "email", "address", "job_seeker_number"}
    personal |= {"case_numbers", "retention", "attributes"}
    assert {k for k in body if k in personal} == {f for f in FIELDS_BY_PURPOSE[purpose] if "." not in f}
    # 要配慮個人情報 (attributes, the programme of a referral) only to a purpose that needs them.
    special_care = purpose in (Scope.SHARE_REGISTRATION, Scope.RETENTION_SUPPORT)
    assert ("attributes" in body) is special_care
    assert all(("programme" in r) is special_care for r in body["referrals"]) and body["referrals"]
    employer_shown = any("employer_name" in p for p in body["placements"])
    assert employer_shown is (purpose is Scope.DISCLOSE_PLACEMENT)
    assert body["purpose"] == purpose.value
    assert body["consent"] == {
        "consent_id": "c" * 32,
        "scopes": ["disclose_placement", "retention_support", "share_registration"],
        "valid_from": "2025-04-03",
        "valid_until": "2025-09-30",
    }
    assert (body["office"], body["registered_on"], body["team_support"]) == ("1301", "2025-04-03", True)
    assert body.get("attributes", ["public_assistance"]) == ["public_assistance"] and body["masked"] is False


def test_disclosed_values_are_plain_json() -> None:
    shown = view()
    registration_body = disclose(shown, Scope.SHARE_REGISTRATION)
    assert registration_body["birth_date"] == "1988-06-01"
    assert registration_body["case_numbers"] == ["SJ-1"]
    retention_body = disclose(shown, Scope.RETENTION_SUPPORT)
    assert retention_body["retention"] == [dict(shown.retention[0])]
    assert isinstance(retention_body["retention"][0], dict)
    open_ended = disclose(view(valid_until=None), Scope.RETENTION_SUPPORT)
    assert open_ended["consent"]["valid_until"] is None


# --- order independence and incremental extension (hypothesis) ------------------------------------


_event_pool = [
    referral(1),
    referral(2, authority="112038", case_number=None),
    referral(3, case_number="SJ-9"),
    placement(1),
    placement(2, employer=None),
    retention(1, 1),
    retention(1, 3, left_on="2025-08-01"),
    StoredEvent("plc-erased", "placement", T0, placement(3).data, None),
]
_scopes = st.frozensets(st.sampled_from(list(Scope)), min_size=1)


@given(
    events=st.lists(st.sampled_from(_event_pool), unique_by=lambda e: e.event_id),
    registered=st.booleans(),
    scopes=_scopes,
    data=st.data(),
)
def test_the_record_depends_only_on_the_set_of_events(
    events: list[StoredEvent], registered: bool, scopes: frozenset[Scope], data: st.DataObject
) -> None:
    events = [registration(), *events] if registered else events
    shuffled = data.draw(st.permutations(events))
    assert project(PK, consent(scopes), events) == project(PK, consent(scopes), shuffled)


@given(
    events=st.lists(st.sampled_from(_event_pool), unique_by=lambda e: e.event_id),
    registered_before=st.booleans(),
    cut=st.integers(min_value=0, max_value=len(_event_pool)),
    scopes=_scopes,
)
def test_extending_a_record_equals_projecting_all_its_events(
    events: list[StoredEvent], registered_before: bool, cut: int, scopes: frozenset[Scope]
) -> None:
    before, after = events[:cut], events[cut:]
    if registered_before:
        before = [registration(), *before]
    else:
        after = [registration(), *after]
    record = consent(scopes)
    old = project(PK, record, before)
    assert old is not None
    assert extend(old, record, after) == project(PK, record, before + after)


# --- the read's answer, whole ------------------------------------------------------------------------


def test_the_answer_to_a_placement_read_is_the_core_and_the_employer() -> None:
    # The read API's answer, key by key: what the other side's systems parse. No 要配慮個人情報: the
    # attribute categories and the referral's programme (public assistance…) are not the employer's.
    assert disclose(view(), Scope.DISCLOSE_PLACEMENT) == {
        "person_key": PK,
        "purpose": "disclose_placement",
        "consent": {
            "consent_id": "c" * 32,
            "scopes": ["disclose_placement", "retention_support", "share_registration"],
            "valid_from": "2025-04-03",
            "valid_until": "2025-09-30",
        },
        "authority": "131041",
        "office": "1301",
        "site": "131041-01",
        "registered_on": "2025-04-03",
        "sex": "female",
        "age_band": "35-39",
        "desired_occupation": "06",
        "team_support": True,
        "referrals": [
            {
                "referral_id": f"r{1:031d}",
                "authority": "131041",
                "site": "131041-01",
                "referred_on": "2025-04-02",
            }
        ],
        "placements": [
            {
                "placement_id": f"p{1:031d}",
                "office": "1301",
                "site": "131041-01",
                "placed_on": "2025-05-02",
                "route": "hello_work_referral",
                "occupation": "08",
                "employment_type": "part_time",
                "employer_name": "𠮷野ケア",
                "employer_address": "東京都",
            }
        ],
        "masked": False,
        "name": "髙橋 花子",
    }


def test_the_record_keeps_each_retention_checkpoint() -> None:
    assert view().retention == (
        {
            "placement_id": f"p{1:031d}",
            "checkpoint_months": 1,
            "status": "employed",
            "checked_on": "2025-06-02",
        },
    )
    assert view().person_key == PK


def test_a_person_known_only_from_a_referral_can_be_read_by_the_referring_authority() -> None:
    referred = project(PK, consent(), [referral(1)])
    assert referred is not None and referred.registered_on is None
    assert decide(referred, SHINJUKU, Scope.SHARE_REGISTRATION).granted
    body = disclose(referred, Scope.SHARE_REGISTRATION)
    assert (body["registered_on"], body["office"], body["case_numbers"]) == (None, None, ["SJ-1"])


def test_an_answer_is_a_copy_that_cannot_change_the_record() -> None:
    shown = view()
    body = disclose(shown, Scope.RETENTION_SUPPORT)
    body["retention"][0]["status"] = "left"
    body["referrals"][0]["site"] = "999999-01"
    body["placements"][0]["route"] = "self_found"
    assert shown.retention[0]["status"] == "employed"
    assert shown.referrals[0]["site"] == "131041-01"
    assert shown.placements[0]["route"] == "hello_work_referral"


def test_a_consent_event_may_leave_out_scopes_and_recipients() -> None:
    # A withdrawal carries neither; it still becomes a record that grants nothing.
    bare = {
        "consent_id": "c" * 32,
        "version": 3,
        "action": "withdrawn",
        "valid_from": "2025-04-03",
        "captured": {"signed_at": "2025-05-01T09:00:00+09:00"},
    }
    record = consent_record(bare)
    assert (record.scopes, record.recipients, record.withdrawn) == (frozenset(), frozenset(), True)
