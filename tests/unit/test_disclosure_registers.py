"""The disclosure rules over the registers, without a database: ``domain.agreements.withheld`` (the feed's
individual list) and ``domain.shared_view.decide_disclosure`` (shared-view reads) decide from plain data
what the stores loaded — holders (P3), withdrawal fences (P7), consent (A1) and agreements (A2–A3)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from domain.agreements import Agreement, Registers, Withheld, covered, refusal, withheld
from domain.consent import ConsentRecord, Recipient, Scope
from domain.shared_view import PersonView, Reader, ReaderKind, as_disclosed, decide_disclosure

PERSON = "a" * 32
AUTHORITY, OFFICE, SITE = "131041", "1301", "131041-01"
TODAY = date(2025, 7, 1)
SIGNED = datetime(2025, 4, 1, 1, 0, tzinfo=UTC)
RECIPIENT = Recipient("authority", AUTHORITY)
AGREEMENT = Agreement(
    "agr-1", AUTHORITY, frozenset({OFFICE}), frozenset(), frozenset(Scope), date(2025, 4, 1), None
)


def consent(*, signed_at: datetime = SIGNED, valid_until: date | None = None) -> ConsentRecord:
    return ConsentRecord(
        "c1", 1, False, frozenset(Scope), frozenset({RECIPIENT, Recipient("office", OFFICE)}),
        date(2025, 4, 1), valid_until, signed_at,
    )  # fmt: skip


def registers(
    *, held: bool = True, fence: datetime | None = None, agreements: tuple[Agreement, ...] = (AGREEMENT,)
) -> Registers:
    return Registers(
        frozenset({PERSON}) if held else frozenset(), {PERSON: fence} if fence else {}, agreements, TODAY
    )


def why(regs: Registers, records: tuple[ConsentRecord, ...] = (consent(),), **kw: object) -> Withheld | None:
    args: dict = {"authority": AUTHORITY, "office": OFFICE, "site": SITE, "on": date(2025, 5, 12)} | kw
    return withheld(PERSON, records, regs, Scope.DISCLOSE_PLACEMENT, recipient=RECIPIENT, **args)


def test_held_consented_and_agreed_is_disclosed() -> None:
    assert why(registers()) is None


def test_a_person_the_authority_does_not_hold_is_withheld() -> None:
    assert why(registers(held=False)) is Withheld.NO_CONSENT


def test_a_consent_signed_behind_the_fence_is_dead() -> None:
    assert why(registers(fence=datetime(2025, 4, 1, 1, 1, tzinfo=UTC))) is Withheld.NO_CONSENT
    assert why(registers(fence=datetime(2025, 3, 31, tzinfo=UTC))) is None  # a fence before the signing


def test_consent_must_hold_on_the_day_of_the_fact_and_today() -> None:
    assert why(registers(), (consent(valid_until=date(2025, 6, 30)),)) is Withheld.NO_CONSENT  # expired
    assert why(registers(), on=date(2025, 3, 31)) is Withheld.NO_CONSENT  # placed before it was valid
    assert why(registers(), ()) is Withheld.NO_CONSENT


def test_without_an_agreement_in_force_covering_the_office_it_is_withheld() -> None:
    assert why(registers(agreements=())) is Withheld.NO_AGREEMENT
    assert why(registers(), office="1302") is Withheld.NO_AGREEMENT
    ended = Agreement("agr-2", AUTHORITY, frozenset({OFFICE}), frozenset(), frozenset(Scope), date(2025, 4, 1),
                      date(2025, 6, 30))  # fmt: skip
    assert why(registers(agreements=(ended,))) is Withheld.NO_AGREEMENT


VIEW = PersonView(
    person_key=PERSON, consent_id="c1", scopes=tuple(s.value for s in Scope),
    recipient_authorities=(AUTHORITY,), recipient_offices=(OFFICE,), valid_from=date(2025, 4, 1),
    valid_until=None, authority=AUTHORITY, office=OFFICE, site=SITE,
)  # fmt: skip
READER = Reader(ReaderKind.AUTHORITY, AUTHORITY)


def test_a_read_of_a_held_consented_agreed_person_is_granted() -> None:
    assert decide_disclosure(VIEW, READER, Scope.SHARE_REGISTRATION, registers(), [consent()]).granted


def test_a_read_resting_on_a_consent_at_or_behind_the_fence_is_refused_p7() -> None:
    decision = decide_disclosure(VIEW, READER, Scope.SHARE_REGISTRATION, registers(fence=SIGNED), [consent()])
    assert not decision.granted and decision.reason.startswith("P7")
    # the view's consent unknown to the store: the fence wins
    assert not decide_disclosure(VIEW, READER, Scope.SHARE_REGISTRATION, registers(fence=SIGNED)).granted
    later = consent(signed_at=datetime(2025, 4, 3, tzinfo=UTC))
    assert decide_disclosure(VIEW, READER, Scope.SHARE_REGISTRATION, registers(fence=SIGNED), [later]).granted


def test_a_read_of_a_person_not_held_or_without_agreement_is_refused() -> None:
    assert not decide_disclosure(
        VIEW, READER, Scope.SHARE_REGISTRATION, registers(held=False), [consent()]
    ).granted
    refused = decide_disclosure(VIEW, READER, Scope.SHARE_REGISTRATION, registers(agreements=()), [consent()])
    assert not refused.granted and refused.reason.startswith("A2")


def test_a_read_outside_the_consents_validity_today_is_refused() -> None:
    expired = _view(valid_until=date(2025, 6, 30))
    assert not decide_disclosure(expired, READER, Scope.SHARE_REGISTRATION, registers(), [consent()]).granted


def test_an_agreement_is_in_force_on_its_first_and_last_day() -> None:
    ends = Agreement("agr-3", AUTHORITY, frozenset({OFFICE}), frozenset(), frozenset(Scope), date(2025, 7, 1),
                     date(2025, 7, 1))  # fmt: skip
    assert ends.in_force(date(2025, 7, 1))
    assert not ends.in_force(date(2025, 6, 30)) and not ends.in_force(date(2025, 7, 2))
    assert why(registers(agreements=(ends,))) is None  # today is its one day


def test_an_agreement_listing_sites_covers_only_those_a3() -> None:
    listed = Agreement("agr-4", AUTHORITY, frozenset({OFFICE}), frozenset({SITE}), frozenset(Scope),
                       date(2025, 4, 1), None)  # fmt: skip
    assert why(registers(agreements=(listed,))) is None
    assert why(registers(agreements=(listed,)), site="131041-02") is Withheld.NO_AGREEMENT


def test_without_both_parties_known_no_agreement_covers() -> None:
    assert not covered(
        (AGREEMENT,), Scope.DISCLOSE_PLACEMENT, authority=AUTHORITY, office=None, site=SITE, day=TODAY
    )
    assert not covered(
        (AGREEMENT,), Scope.DISCLOSE_PLACEMENT, authority=None, office=OFFICE, site=SITE, day=TODAY
    )


def test_the_fence_applies_on_the_day_of_the_fact_and_today() -> None:
    # a version replacing the withdrawn one is all the records show: only the fence stops it
    fence = datetime(2025, 4, 2, tzinfo=UTC)
    assert why(registers(fence=fence), (consent(signed_at=SIGNED),)) is Withheld.NO_CONSENT
    assert why(registers(fence=fence), (consent(signed_at=datetime(2025, 4, 3, tzinfo=UTC)),)) is None


def test_the_refusal_names_purpose_and_parties_and_marks_the_unknown() -> None:
    assert refusal(Scope.DISCLOSE_PLACEMENT, AUTHORITY, OFFICE).endswith(
        f"'disclose_placement' between authority {AUTHORITY} and office {OFFICE}"
    )
    assert refusal(Scope.DISCLOSE_PLACEMENT, None, None).endswith("between authority ? and office ?")


def _view(**changes: object) -> PersonView:
    return VIEW._replace(**changes)


def test_read_refusals_say_which_rule_refused() -> None:
    fenced = decide_disclosure(VIEW, READER, Scope.SHARE_REGISTRATION, registers(fence=SIGNED), [consent()])
    assert (
        fenced.granted is False and fenced.reason == "P7: the person withdrew consent; nothing is disclosed"
    )
    stale = decide_disclosure(_view(valid_until=date(2025, 6, 30)), READER, Scope.SHARE_REGISTRATION,
                              registers(), [consent()])  # fmt: skip
    assert stale.granted is False and stale.reason == "consent is not valid today (valid_from / valid_until)"
    unagreed = decide_disclosure(
        VIEW, READER, Scope.SHARE_REGISTRATION, registers(agreements=()), [consent()]
    )
    assert unagreed.granted is False
    assert unagreed.reason == refusal(Scope.SHARE_REGISTRATION, AUTHORITY, OFFICE)
    nobody = decide_disclosure(None, READER, Scope.SHARE_REGISTRATION, registers())
    assert (
        nobody.granted is False
        and nobody.reason == f"person is not among the people of authority:{AUTHORITY}"
    )


def test_consent_validity_includes_its_first_and_last_day() -> None:
    for view in (_view(valid_from=TODAY), _view(valid_until=TODAY)):
        assert decide_disclosure(view, READER, Scope.SHARE_REGISTRATION, registers(), [consent()]).granted


def test_an_office_reader_needs_an_agreement_naming_its_own_office() -> None:
    # the office holds the person (the register says so) though the view's registration office differs
    reader = Reader(ReaderKind.OFFICE, OFFICE)
    view = _view(office="1302")
    assert decide_disclosure(view, reader, Scope.SHARE_REGISTRATION, registers(), [consent()]).granted
    other = Agreement(
        "agr-5", AUTHORITY, frozenset({"1302"}), frozenset(), frozenset(Scope), date(2025, 4, 1), None
    )
    refused = decide_disclosure(
        view, reader, Scope.SHARE_REGISTRATION, registers(agreements=(other,)), [consent()]
    )
    assert refused.reason == refusal(Scope.SHARE_REGISTRATION, AUTHORITY, OFFICE)


def test_a_read_needs_an_agreement_covering_the_persons_site() -> None:
    listed = Agreement("agr-6", AUTHORITY, frozenset({OFFICE}), frozenset({SITE}), frozenset(Scope),
                       date(2025, 4, 1), None)  # fmt: skip
    assert decide_disclosure(
        VIEW, READER, Scope.SHARE_REGISTRATION, registers(agreements=(listed,)), [consent()]
    ).granted
    elsewhere = _view(site="131041-02")
    regs = registers(agreements=(listed,))
    assert not decide_disclosure(elsewhere, READER, Scope.SHARE_REGISTRATION, regs, [consent()]).granted


def test_a_placements_employer_is_shown_only_under_the_placing_offices_agreement() -> None:
    """``as_disclosed``: A2–A3 for placement data by the office that placed the person and the placement's
    site, as ``withheld`` decides the feed's individual list — not by the registration's office."""
    here = {"placement_id": "p1", "office": OFFICE, "site": SITE, "employer_name": "株式会社ここ"}
    there = {"placement_id": "p2", "office": "1102", "site": "112038-01", "employer_name": "株式会社そこ",
             "employer_address": "埼玉県"}  # fmt: skip
    view = VIEW._replace(placements=(here, there))
    shown = as_disclosed(view, READER, Scope.DISCLOSE_PLACEMENT, registers())
    assert shown.placements == (here, {"placement_id": "p2", "office": "1102", "site": "112038-01"})
    decision = decide_disclosure(shown, READER, Scope.DISCLOSE_PLACEMENT, registers(), [consent()])
    assert decision.granted and "placements.employer_name" in decision.fields
    assert "placements.employer_address" not in decision.fields  # only the withheld one had an address
    # an agreement with 1102 covering disclose_placement shows it; one listing other sites (A3) does not
    with_1102 = Agreement("agr-3", AUTHORITY, frozenset({"1102"}), frozenset(), frozenset(Scope), date(2025, 4, 1),
                          None)  # fmt: skip
    assert (
        as_disclosed(view, READER, Scope.DISCLOSE_PLACEMENT, registers(agreements=(AGREEMENT, with_1102)))
        == view
    )
    narrow = Agreement("agr-4", AUTHORITY, frozenset({"1102"}), frozenset({"112038-02"}), frozenset(Scope),
                       date(2025, 4, 1), None)  # fmt: skip
    assert (
        as_disclosed(view, READER, Scope.DISCLOSE_PLACEMENT, registers(agreements=(AGREEMENT, narrow)))
        == shown
    )
    # other purposes and other readers as before (an office's or national read is Hello Work's own data)
    assert as_disclosed(view, READER, Scope.SHARE_REGISTRATION, registers()) == view
    assert (
        as_disclosed(view, Reader(ReaderKind.OFFICE, OFFICE), Scope.DISCLOSE_PLACEMENT, registers()) == view
    )


def test_an_authority_is_shown_its_own_referrals_and_case_numbers_only() -> None:
    """``as_disclosed``: another authority's referral and case number are that authority's welfare data;
    Hello Work, to which referrals are addressed, sees them all. A number whose authority is not known
    (kept before migration 071 for a person several authorities referred) goes to no authority."""
    ours = {
        "referral_id": "r1",
        "authority": AUTHORITY,
        "site": SITE,
        "programme": "p",
        "referred_on": "2025-04-01",
    }
    theirs = {"referral_id": "r2", "authority": "131059", "site": "131059-01", "programme": "p",
              "referred_on": "2025-04-02"}  # fmt: skip
    cases = (
        {"authority": None, "case_number": "OLD-1"},
        {"authority": AUTHORITY, "case_number": "SJ-1"},
        {"authority": "131059", "case_number": "BK-1"},
    )
    view = VIEW._replace(
        referrals=(ours, theirs), referring_authorities=(AUTHORITY, "131059"), case_numbers=cases
    )
    for purpose in Scope:
        shown = as_disclosed(view, READER, purpose, registers())
        assert shown.referrals == (ours,) and shown.referring_authorities == view.referring_authorities
        assert shown.case_numbers == ({"authority": AUTHORITY, "case_number": "SJ-1"},)
    for reader in (Reader(ReaderKind.OFFICE, OFFICE), Reader(ReaderKind.NATIONAL, "*")):
        assert as_disclosed(view, reader, Scope.SHARE_REGISTRATION, registers()) == view
    bunkyo = as_disclosed(view, Reader(ReaderKind.AUTHORITY, "131059"), Scope.SHARE_REGISTRATION, registers())
    assert bunkyo.case_numbers == (cases[2],) and bunkyo.referrals == (theirs,)


def test_a_retention_checkpoint_is_shown_only_under_the_placing_offices_agreement() -> None:
    """``as_disclosed`` for retention_support: a checkpoint as the feed's individual list decides it, under
    the agreement with the office that placed the person for that placement's site; a checkpoint of a
    placement the record does not hold has no placing office and is not shown."""
    here = {"placement_id": "p1", "office": OFFICE, "site": SITE}
    there = {"placement_id": "p2", "office": "1102", "site": "112038-01"}
    checkpoints = tuple(
        {"placement_id": p, "checkpoint_months": 1, "status": "employed", "checked_on": "2025-06-12"}
        for p in ("p1", "p2", "p3")
    )
    view = VIEW._replace(placements=(here, there), retention=checkpoints)
    shown = as_disclosed(view, READER, Scope.RETENTION_SUPPORT, registers())
    assert shown.retention == checkpoints[:1]
    with_1102 = Agreement("agr-5", AUTHORITY, frozenset({"1102"}), frozenset(), frozenset({Scope.RETENTION_SUPPORT}),
                          date(2025, 4, 1), None)  # fmt: skip
    regs = registers(agreements=(AGREEMENT, with_1102))
    assert as_disclosed(view, READER, Scope.RETENTION_SUPPORT, regs).retention == checkpoints[:2]
    assert as_disclosed(view, Reader(ReaderKind.OFFICE, OFFICE), Scope.RETENTION_SUPPORT, registers()) == view
