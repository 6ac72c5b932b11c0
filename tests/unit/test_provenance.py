"""The provenance rules (``domain.provenance``, P1–P7) and the final withdrawal (``domain.consent``), pure."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.types import LocalGovernmentCode, OfficeCode, SiteId
from domain.consent import ConsentRecord, Recipient, Scope, effective, permits
from domain.provenance import (
    OPERATOR_SOURCE,
    Org,
    Publisher,
    Refusal,
    Side,
    SiteEntry,
    authorize_event,
    check_erasure_source,
    check_source,
    gained_holders,
)

KAWAGUCHI_SITE = SiteEntry("112038-01", "112038", "1102")
SHINJUKU_SITE = SiteEntry("131041-01", "131041", "1301")
Q_HELD = {Org("authority", "112038"): date(2026, 1, 5), Org("office", "1102"): date(2026, 1, 5)}
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def consent(site: str, side: str, signed_at: str, action: str = "given") -> dict[str, object]:
    return {
        "action": action,
        "valid_from": "2026-01-05",
        "captured": {"side": side, "site": site, "signed_at": signed_at},
    }


def test_p1_codes_are_ascii_digits() -> None:
    for kind, wide in (
        (LocalGovernmentCode, "１３１０４１"),
        (OfficeCode, "１３０１"),
        (SiteId, "１３１０４１-０１"),
    ):
        with pytest.raises(ValidationError, match=r"ASCII|expected 6 digits"):
            TypeAdapter(kind).validate_python(wide)
    assert TypeAdapter(SiteId).validate_python("131041-01") == "131041-01"


def test_p3_a_referral_at_ones_own_site_does_not_make_a_holder_of_someone_held_elsewhere() -> None:
    shinjuku = Publisher(Side.AUTHORITY, "131041")
    referral = {"site": "131041-01", "referred_on": "2026-02-01"}
    with pytest.raises(Refusal, match="P3"):
        authorize_event(shinjuku, "referral", referral, SHINJUKU_SITE, Q_HELD, now=NOW)
    # first contact: nobody holds the key yet, and the site's two parties then hold the person
    assert authorize_event(shinjuku, "referral", referral, SHINJUKU_SITE, {}, now=NOW) == Org(
        "authority", "131041"
    )
    assert gained_holders("referral", SHINJUKU_SITE) == {Org("authority", "131041"), Org("office", "1301")}
    assert gained_holders("placement", SHINJUKU_SITE) == frozenset()
    # identity linking at the joint reception: the site's office already holds the person
    held_by_1301 = {Org("office", "1301"): date(2026, 1, 5)}
    authorize_event(shinjuku, "referral", referral, SHINJUKU_SITE, held_by_1301, now=NOW)


def test_p4_consent_only_by_the_holder_that_captured_it() -> None:
    shinjuku = Publisher(Side.AUTHORITY, "131041")
    with pytest.raises(Refusal, match="P4: authority:131041 holds no registration"):
        authorize_event(
            shinjuku,
            "consent",
            consent("131041-01", "authority", "2026-02-01T10:00:00+09:00"),
            SHINJUKU_SITE,
            Q_HELD,
            now=NOW,
        )
    with pytest.raises(Refusal, match="P4: consent captured on side hello_work"):
        authorize_event(
            shinjuku, "consent", consent("131041-01", "hello_work", "2026-02-01T10:00:00+09:00"),
            SHINJUKU_SITE, Q_HELD, now=NOW,
        )  # fmt: skip
    kawaguchi = Publisher(Side.AUTHORITY, "112038")
    signed = consent("112038-01", "authority", "2026-02-01T10:00:00+09:00")
    assert authorize_event(kawaguchi, "consent", signed, KAWAGUCHI_SITE, Q_HELD, now=NOW).code == "112038"


def test_p6_nothing_from_the_future_nothing_before_the_person() -> None:
    kawaguchi = Publisher(Side.AUTHORITY, "112038")
    for when in ("2999-01-01T10:00:00+09:00", (NOW + timedelta(minutes=6)).isoformat()):
        with pytest.raises(Refusal, match=r"P6: captured\.signed_at is later than now"):
            authorize_event(
                kawaguchi, "consent", consent("112038-01", "authority", when), KAWAGUCHI_SITE, Q_HELD, now=NOW
            )
    within_skew = (NOW + timedelta(minutes=4)).isoformat()
    authorize_event(
        kawaguchi, "consent", consent("112038-01", "authority", within_skew), KAWAGUCHI_SITE, Q_HELD, now=NOW
    )
    with pytest.raises(Refusal, match=r"P6: captured\.signed_at is before the registration"):
        authorize_event(
            kawaguchi, "consent", consent("112038-01", "authority", "2026-01-04T10:00:00+09:00"),
            KAWAGUCHI_SITE, Q_HELD, now=NOW,
        )  # fmt: skip
    office = Publisher(Side.HELLO_WORK, "1102")
    placement = {"site": "112038-01", "office": "1102", "placed_on": "2026-03-05"}
    with pytest.raises(Refusal, match="P6: placed_on is later than today"):
        authorize_event(office, "placement", placement, KAWAGUCHI_SITE, Q_HELD, now=NOW)


def test_p7_a_withdrawal_is_final_against_everything_signed_before_it() -> None:
    kawaguchi = Publisher(Side.AUTHORITY, "112038")
    fence = datetime(2026, 2, 10, 10, 0, tzinfo=UTC)
    before = consent("112038-01", "authority", "2026-02-09T10:00:00+09:00")
    with pytest.raises(Refusal, match="P7"):
        authorize_event(kawaguchi, "consent", before, KAWAGUCHI_SITE, Q_HELD, fenced_at=fence, now=NOW)
    after = consent("112038-01", "authority", "2026-02-11T10:00:00+09:00")
    authorize_event(kawaguchi, "consent", after, KAWAGUCHI_SITE, Q_HELD, fenced_at=fence, now=NOW)


def test_p7_a_consent_signed_at_the_withdrawals_instant_is_refused() -> None:
    # "At or before" (P7, rule 6): a form signed the same instant as the withdrawal — a batch file's
    # date-only signed_at is its day's midnight, so two forms of one day tie — never grants, and the
    # shared view's reads refuse it (``decide_disclosure``): accepted, it answered 202 for nothing.
    kawaguchi = Publisher(Side.AUTHORITY, "112038")
    fence = datetime(2026, 2, 10, 1, 0, tzinfo=UTC)
    at = consent("112038-01", "authority", "2026-02-10T10:00:00+09:00")  # the same instant
    with pytest.raises(Refusal, match="P7"):
        authorize_event(kawaguchi, "consent", at, KAWAGUCHI_SITE, Q_HELD, fenced_at=fence, now=NOW)
    # the withdrawal itself, signed at its own fence, is accepted (a redelivery, a second withdrawal)
    withdrawn = {**at, "action": "withdrawn"}
    authorize_event(kawaguchi, "consent", withdrawn, KAWAGUCHI_SITE, Q_HELD, fenced_at=fence, now=NOW)


def _record(cid: str, version: int, signed: datetime, withdrawn: bool = False) -> ConsentRecord:
    return ConsentRecord(
        consent_id=cid,
        version=version,
        withdrawn=withdrawn,
        scopes=frozenset() if withdrawn else frozenset({Scope.SHARE_REGISTRATION}),
        recipients=frozenset({Recipient("authority", "112038")}),
        valid_from=date(2026, 1, 1),
        valid_until=None,
        signed_at=signed,
    )


def test_consent_rule_6_the_fence_outlives_the_withdrawn_version() -> None:
    t = datetime(2026, 2, 1, tzinfo=UTC)
    reader, day = Recipient("authority", "112038"), date(2026, 2, 20)
    # v3 of the withdrawn record, signed before the withdrawal, replaced the withdrawn v2 in the store:
    later_version = [_record("a", 3, t - timedelta(days=1))]
    assert permits(later_version, Scope.SHARE_REGISTRATION, reader, day)  # what old main did
    assert not permits(later_version, Scope.SHARE_REGISTRATION, reader, day, fenced_at=t)
    # a consent signed after the withdrawal re-consents
    tie = [_record("a", 1, t - timedelta(days=2)), _record("b", 1, t, withdrawn=True)]
    assert effective(tie) is not None and effective(tie).withdrawn  # type: ignore[union-attr]
    again = [*tie, _record("c", 1, t + timedelta(days=1))]
    assert permits(again, Scope.SHARE_REGISTRATION, reader, day, fenced_at=t)


def test_consent_rule_6_nothing_signed_at_the_withdrawals_instant_grants() -> None:
    """The feed's individual list (``permits``) and the view's records (``effective``) decide as the
    shared view's reads do (``decide_disclosure``: signed at or before the fence, nothing is disclosed)."""
    t = datetime(2026, 2, 1, tzinfo=UTC)
    reader, day = Recipient("authority", "112038"), date(2026, 2, 20)
    # another record signed at the withdrawal's instant, whatever its version
    tie = [_record("a", 2, t, withdrawn=True), _record("b", 3, t)]
    assert effective(tie) is None
    assert not permits(tie, Scope.SHARE_REGISTRATION, reader, day)
    # a higher version of the withdrawn record signed at that instant: the fence kept apart stands
    replaced = [_record("a", 3, t)]
    assert effective(replaced, fenced_at=t) is None
    assert not permits(replaced, Scope.SHARE_REGISTRATION, reader, day, fenced_at=t)
    # control: a microsecond later is a fresh consent
    later = [_record("a", 3, t + timedelta(microseconds=1))]
    assert permits(later, Scope.SHARE_REGISTRATION, reader, day, fenced_at=t)


@pytest.mark.parametrize(
    ("source", "family", "fields", "named"),
    [
        ("/authorities/131041", "referral", {"site": "112038-01", "authority": "112038"}, "authority:"),
        ("/authorities/131041", "retention", {"site": "112038-01"}, "site:"),
        ("/authorities/131041", "consent", {"site": "112038-01", "capture_side": "authority"}, "captured.site:"),
        ("/authorities/131041", "consent", {"site": "131041-01", "capture_side": "hello_work"}, "captured.side:"),
        ("/authorities/131041", "placement", {"site": "131041-01", "office": "1301"}, "ce_type:"),
        ("/hellowork/offices/1301", "referral", {"site": "131041-01", "authority": "131041"}, "ce_type:"),
        ("/hellowork/offices/1301", "registration",
         {"site": "112038-01", "authority": "112038", "office": "1102"}, "office:"),
        ("/hellowork/offices/1301", "registration",
         {"site": "112038-01", "authority": "131041", "office": "1301"}, "site:"),
        ("/hellowork/offices/1301", "consent", {"site": "131041-01", "capture_side": "authority"}, "captured.side:"),
        ("/somewhere/else", "consent", {"site": "131041-01", "capture_side": "authority"}, "ce_source:"),
    ],
)  # fmt: skip
def test_consumers_recheck_the_source_against_the_data(
    source: str, family: str, fields: dict[str, str], named: str
) -> None:
    with pytest.raises(Refusal) as refused:
        check_source(source, family, **fields)
    assert named in refused.value.reason and refused.value.rule in ("P2", "P4")
    for code in ("131041", "112038", "1301", "1102"):
        assert code not in refused.value.reason  # the rule and the field, never the rogue's values


def test_consumers_pass_what_the_source_owns() -> None:
    check_source("/authorities/131041", "referral", site="131041-02", authority="131041")
    check_source("/authorities/131041", "consent", site="131041-01", capture_side="authority")
    check_source("/authorities/131041", "retention", site="131041-01")
    check_source(
        "/hellowork/offices/1301", "registration", site="131041-01", authority="131041", office="1301"
    )
    check_source("/hellowork/offices/1301", "consent", site="112038-01", capture_side="hello_work")
    check_source("/hellowork/national", "placement", site="112038-01", office="1102")


@pytest.mark.parametrize(
    "source", ["/authorities/131041", "/hellowork/offices/1301", "/hellowork/national", "/hub/operators", ""]
)
def test_p9_only_the_hubs_operator_side_publishes_erasures(source: str) -> None:
    """An erasure makes every consumer drop a person: no client, and no other shape, may send one."""
    with pytest.raises(Refusal) as refused:
        check_erasure_source(source)
    assert refused.value.rule == "P9" and "ce_source" in refused.value.reason
    assert "131041" not in refused.value.reason and "1301" not in refused.value.reason
    check_erasure_source(OPERATOR_SOURCE)


def test_the_operator_side_publishes_nothing_but_erasures() -> None:
    with pytest.raises(Refusal) as refused:
        check_source(OPERATOR_SOURCE, "consent", site="131041-01", capture_side="authority")
    assert "ce_source" in refused.value.reason
