"""``project`` and ``extend`` build records positionally (issue 14): the same records as the by-name
construction they replaced, kept here verbatim as the reference (``PersonView(**…)`` and ``_replace``), over
any events — registrations with any personal block (fields present, absent or null; shut; not read),
referrals with and without a case number, placements with and without an employer, retention checkpoints —
under any set of scopes, whole and split at any point."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.consent import ConsentRecord, Recipient, Scope
from domain.shared_view import (
    UNREAD,
    PersonView,
    StoredEvent,
    _case_number,
    _date,
    _latest_registration,
    _placement_item,
    _placement_order,
    _recipient_codes,
    _referral_item,
    _referral_order,
    _retention_item,
    _retention_order,
    _scope_names,
    extend,
    project,
    same_consent,
)

PK = "0" * 31 + "1"
T0 = datetime(2025, 4, 3, 1, 0, tzinfo=UTC)
SEALED = {"alg": "A256GCM", "kid": "x", "nonce": "n", "ct": "c"}


# --- the reference: main's construction by name (before positional records) -------------------------


def _old_registration_fields(reg: StoredEvent, share: bool, disclose: bool, retain: bool) -> dict[str, Any]:
    d = reg.data
    fields: dict[str, Any] = {
        "authority": d["authority"],
        "office": d["office"],
        "site": d["site"],
        "registered_on": _date(d["registered_on"]),
        "sex": d["sex"],
        "age_band": d["age_band"],
        "attributes": tuple(d["attributes"]),
        "desired_occupation": d["desired_occupation"]["group"],
        "team_support": bool(d["team_support"]),
    }
    opened = reg.personal or {}
    if opened.get("name") is not None and (share or disclose or retain):
        fields["name"] = opened["name"]
    if share:
        for key in ("name_kana", "phone", "email", "address", "job_seeker_number"):
            fields[key] = opened.get(key)
        if opened.get("birth_date"):
            fields["birth_date"] = _date(opened["birth_date"])
    return fields


def _cases(pairs: set[tuple[str, Any]]) -> tuple[dict[str, Any], ...]:
    # each case number with its referral's authority (migration 071), sorted, once each
    return tuple({"authority": a, "case_number": n} for a, n in sorted(pairs))


def old_project(person_key: str, consent: ConsentRecord, events: Sequence[StoredEvent]) -> PersonView:
    scopes = consent.scopes
    share = Scope.SHARE_REGISTRATION in scopes
    disclose = Scope.DISCLOSE_PLACEMENT in scopes
    retain = Scope.RETENTION_SUPPORT in scopes
    masked = False
    by_family: dict[str, list[StoredEvent]] = {}
    for ev in events:
        by_family.setdefault(ev.family, []).append(ev)
        if ev.data.get("personal") is not None and ev.personal is None:
            masked = True
    fields: dict[str, Any] = {}
    registrations = by_family.get("registration", [])
    if registrations:
        fields = _old_registration_fields(_latest_registration(registrations), share, disclose, retain)
    referrals = [_referral_item(ev.data) for ev in by_family.get("referral", ())]
    case_numbers = (
        [(ev.data["authority"], _case_number(ev)) for ev in by_family.get("referral", ())] if share else []
    )
    placements = [_placement_item(ev, disclose) for ev in by_family.get("placement", ())]
    retention = [_retention_item(ev.data) for ev in by_family.get("retention", ())] if retain else []
    authorities, offices = _recipient_codes(consent.recipients)
    return PersonView(
        person_key=person_key,
        consent_id=consent.consent_id,
        scopes=_scope_names(scopes),
        recipient_authorities=authorities,
        recipient_offices=offices,
        valid_from=consent.valid_from,
        valid_until=consent.valid_until,
        referring_authorities=tuple(sorted({r["authority"] for r in referrals})),
        referrals=tuple(sorted(referrals, key=_referral_order)),
        placements=tuple(sorted(placements, key=_placement_order)),
        retention=tuple(sorted(retention, key=_retention_order)),
        case_numbers=_cases({c for c in case_numbers if c[1]}),
        masked=masked,
        **fields,
    )


def old_extend(view: PersonView, consent: ConsentRecord, events: Sequence[StoredEvent]) -> PersonView | None:
    if not events:
        return view if same_consent(view, consent) else None
    if not same_consent(view, consent):
        return None
    scopes = consent.scopes
    share = Scope.SHARE_REGISTRATION in scopes
    disclose = Scope.DISCLOSE_PLACEMENT in scopes
    retain = Scope.RETENTION_SUPPORT in scopes
    masked = view.masked
    registrations: list[StoredEvent] = []
    referrals: list[dict[str, Any]] = []
    case_numbers: list[tuple[str, str | None]] = []
    placements: list[dict[str, Any]] = []
    retention: list[dict[str, Any]] = []
    for ev in events:
        if ev.personal is None and ev.data.get("personal") is not None:
            masked = True
        if ev.family == "registration":
            registrations.append(ev)
        elif ev.family == "referral":
            referrals.append(_referral_item(ev.data))
            if share:
                case_numbers.append((ev.data["authority"], _case_number(ev)))
        elif ev.family == "placement":
            placements.append(_placement_item(ev, disclose))
        elif ev.family == "retention" and retain:
            retention.append(_retention_item(ev.data))
    changes: dict[str, Any] = {"masked": masked}
    if registrations:
        if view.registered_on is not None:
            return None
        changes.update(_old_registration_fields(_latest_registration(registrations), share, disclose, retain))
    if referrals:
        changes["referrals"] = tuple(sorted((*view.referrals, *referrals), key=_referral_order))
        changes["referring_authorities"] = tuple(
            sorted({*view.referring_authorities, *(r["authority"] for r in referrals)})
        )
    if case_numbers:
        kept = {(c["authority"], c["case_number"]) for c in view.case_numbers}
        changes["case_numbers"] = _cases(kept | {c for c in case_numbers if c[1]})
    if placements:
        changes["placements"] = tuple(sorted((*view.placements, *placements), key=_placement_order))
    if retention:
        changes["retention"] = tuple(sorted((*view.retention, *retention), key=_retention_order))
    return view._replace(**changes)


# --- any events ---------------------------------------------------------------------------------------

_VALUE = st.one_of(st.none(), st.just(""), st.text(max_size=6))
_DAY = st.dates(date(2024, 1, 1), date(2026, 12, 31)).map(date.isoformat)


def _block(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """An opened block with any of ``fields`` left out, or a shut (``None``) or unread one."""
    opened = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(opened, st.none(), st.just(UNREAD))


@st.composite
def _event(draw: st.DrawFn, n: int) -> StoredEvent:
    family = draw(st.sampled_from(["registration", "referral", "placement", "retention"]))
    time = T0 + timedelta(minutes=draw(st.integers(0, 5)))
    sealed: dict[str, Any] = {"personal": SEALED}
    if family == "registration":
        data = {
            "registered_on": draw(_DAY),
            "office": draw(st.sampled_from(["1301", "1302"])),
            "site": "131041-01",
            "authority": draw(st.sampled_from(["131041", "112038"])),
            "sex": "female",
            "age_band": "35-39",
            "attributes": draw(st.lists(st.sampled_from(["public_assistance", "disability"]), max_size=2)),
            "desired_occupation": {"group": "06"},
            "team_support": draw(st.booleans()),
            **sealed,
        }
        personal = draw(
            _block(
                {k: _VALUE for k in ("name", "name_kana", "phone", "email", "address", "job_seeker_number")}
                | {"birth_date": st.one_of(st.none(), st.just(""), _DAY)}
            )
        )
    elif family == "referral":
        data = {
            "referral_id": f"r{n}",
            "authority": draw(st.sampled_from(["131041", "112038"])),
            "site": "131041-01",
            "programme": "general",
            "referred_on": draw(_DAY),
            **sealed,
        }
        personal = draw(_block({"case_number": _VALUE}))
    elif family == "placement":
        data = {
            "placement_id": f"p{n}",
            "office": "1301",
            "site": "131041-01",
            "placed_on": draw(_DAY),
            "route": "self_found",
            "occupation": {"group": "08"},
            "employment_type": "part_time",
            **sealed,
        }
        personal = draw(_block({"employer_name": _VALUE, "employer_address": _VALUE}))
    else:
        data = {
            "placement_id": f"p{n}",
            "checkpoint_months": draw(st.sampled_from([1, 3, 6])),
            "status": "employed",
            "checked_on": draw(_DAY),
            **({"left_on": draw(_DAY)} if draw(st.booleans()) else {}),
        }
        personal = None
    return StoredEvent(f"e{n}", family, time, data, personal)


@st.composite
def _events(draw: st.DrawFn) -> list[StoredEvent]:
    return [draw(_event(n)) for n in range(draw(st.integers(0, 8)))]


_SCOPES = st.sets(st.sampled_from(list(Scope)), min_size=1)


def _consent(scopes: set[Scope]) -> ConsentRecord:
    return ConsentRecord(
        "c" * 32,
        1,
        False,
        frozenset(scopes),
        frozenset({Recipient("authority", "131041"), Recipient("office", "1301")}),
        date(2025, 4, 3),
        None,
        T0,
    )


@settings(max_examples=400, deadline=None)
@given(events=_events(), scopes=_SCOPES, cut=st.integers(0, 8))
def test_records_are_the_ones_built_by_name(events: list[StoredEvent], scopes: set[Scope], cut: int) -> None:
    consent = _consent(scopes)
    whole = project(PK, consent, events)
    assert whole == old_project(PK, consent, events)
    assert whole is not None and type(whole) is PersonView
    before = old_project(PK, consent, events[:cut])
    assert extend(before, consent, events[cut:]) == old_extend(before, consent, events[cut:])
