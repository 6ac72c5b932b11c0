"""The consented shared view (共有ビュー): what both sides may see about one person, and only while their
consent allows it. Pure rules; the consumer and the HTTP API are thin edges around them.

Consent semantics (the README repeats them):

* **Scopes are purposes.** ``share_registration`` — registration data (name, kana, birth date, contacts,
  address) and the link between the Hello Work job seeker number (求職番号) and the authority case number
  (ケース番号); ``disclose_placement`` — the placement with the person's name and employer;
  ``retention_support`` — retention checkpoints for 定着支援 (post-placement follow-up).
* **Recipients.** A consent lists which authorities (local government code) and which Hello Work
  offices (office code) may receive data. The national Hello Work system reads as the registration
  office would.
* **Validity.** A consent grants nothing before ``valid_from`` or after ``valid_until`` (JST dates).
* **Newest version wins** within one consent record; across records the one signed last is effective
  (``domain.consent``). A withdrawal grants nothing; signing a new form later re-consents.
* **In the view** is a person whose effective consent is active today with at least one scope. Their
  personal fields are stored in clear only for the scopes granted; everything else stays sealed (the
  events as they travelled) and is *held*: it becomes visible when a consent that covers it arrives, and
  never before. Withdrawal deletes the person's row (and with it every clear field) in the batch that
  reads the withdrawal.
* **Reads.** An authority sees a person registered at one of its sites or referred by it, an office a
  person registered at that office — and either only if the consent lists it as recipient and grants
  the read's purpose. A read returns the non-identifying core plus the fields of its purpose only.
  An authority sees its own referrals and case numbers only (another authority's are that authority's
  welfare data, and no agreement runs between authorities); Hello Work, to which referrals are
  addressed, sees all (``as_disclosed``).
* **Erasure** deletes the person's data key and rows; the register of erasures makes replays skip them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

from domain.agreements import Registers, covered
from domain.agreements import refusal as agreement_refusal
from domain.batch import CONSENT, Incoming, consent_of, once_each
from domain.consent import ConsentRecord, PersonConsent, Recipient, Scope, effective, newest_versions

AUTHORITY = "authority"
OFFICE = "office"

# Which personal fields each purpose discloses. ``name`` goes with every purpose: a case worker cannot
# follow up someone they cannot name. Everything not listed here is the non-identifying core.
REGISTRATION_FIELDS = ("name", "name_kana", "birth_date", "phone", "email", "address")
LINK_FIELDS = ("job_seeker_number", "case_numbers")
# 要配慮個人情報 (special-care personal information, 個人情報保護法 art. 2(3)): the attribute categories
# (public assistance, disability, …) and the programme a referral was made under, which says the same.
# They go out only to the purposes that need them — planning joint support (share_registration) and
# support in the job (retention_support) — never with a placement disclosure.
SPECIAL_CARE_FIELDS = ("attributes", "referrals.programme")
FIELDS_BY_PURPOSE: dict[Scope, tuple[str, ...]] = {
    Scope.SHARE_REGISTRATION: (*REGISTRATION_FIELDS, *LINK_FIELDS, *SPECIAL_CARE_FIELDS),
    Scope.DISCLOSE_PLACEMENT: ("name", "placements.employer_name", "placements.employer_address"),
    Scope.RETENTION_SUPPORT: ("name", "retention", *SPECIAL_CARE_FIELDS),
}


class ReaderKind(StrEnum):
    AUTHORITY = "authority"
    OFFICE = "office"
    NATIONAL = "hello_work_national"


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads: an authority (local government code), an office (office code) or Hello Work national."""

    kind: ReaderKind
    code: str


class StoredEvent(NamedTuple):
    """One of a person's events as the view keeps it: the contract's JSON form (personal block still
    sealed) plus the opened personal block, or ``None`` when there is none or the key is gone. (A named
    tuple, as ``PersonView``: one is built per event.)"""

    event_id: str
    family: str
    time: datetime
    data: Mapping[str, Any]
    personal: Mapping[str, Any] | None


class PersonView(NamedTuple):
    """One person's shared record. Personal fields are ``None`` unless a granted scope covers them.

    A named tuple, not a frozen dataclass: a batch reads, extends and writes one per person, and a frozen
    dataclass sets each of its 29 fields through ``object.__setattr__`` (measured: 6-10 times the cost of
    building the tuple, ~11% of the projection's Python time). Immutable all the same, and built from its
    stored row positionally (``from_values``)."""

    person_key: str
    consent_id: str
    scopes: tuple[str, ...]
    recipient_authorities: tuple[str, ...]
    recipient_offices: tuple[str, ...]
    valid_from: date
    valid_until: date | None
    authority: str | None = None
    office: str | None = None
    site: str | None = None
    registered_on: date | None = None
    sex: str | None = None
    age_band: str | None = None
    attributes: tuple[str, ...] = ()
    desired_occupation: str | None = None
    team_support: bool | None = None
    referring_authorities: tuple[str, ...] = ()
    referrals: tuple[dict[str, Any], ...] = ()
    placements: tuple[dict[str, Any], ...] = ()
    retention: tuple[dict[str, Any], ...] = ()
    name: str | None = None
    name_kana: str | None = None
    birth_date: date | None = None
    phone: str | None = None
    email: str | None = None
    address: str | None = None
    job_seeker_number: str | None = None
    # each {"authority", "case_number"}: the authority whose case it is (its referral's), as only that
    # authority is shown it (``as_disclosed``); sorted, once each (``_case_items``)
    case_numbers: tuple[dict[str, Any], ...] = ()
    masked: bool = False  # a sealed block would not open: the person's key was erased

    def grants(self, scope: Scope) -> bool:
        return scope.value in self.scopes


VIEW_FIELDS: tuple[str, ...] = PersonView._fields
_VIEW_INDEX = {name: i for i, name in enumerate(VIEW_FIELDS)}
_DEFAULTS = tuple(PersonView._field_defaults.get(name) for name in VIEW_FIELDS)
_REFERRING, _REFERRALS = _VIEW_INDEX["referring_authorities"], _VIEW_INDEX["referrals"]
_PLACEMENTS, _RETENTION = _VIEW_INDEX["placements"], _VIEW_INDEX["retention"]
_CASE_NUMBERS, _MASKED = _VIEW_INDEX["case_numbers"], _VIEW_INDEX["masked"]
# What a registration gives a record (``_registration_fields``): its core, authority … team_support, and its
# personal fields, name … job_seeker_number.
_CORE = slice(_VIEW_INDEX["authority"], _VIEW_INDEX["team_support"] + 1)
_PERSONAL = slice(_VIEW_INDEX["name"], _VIEW_INDEX["job_seeker_number"] + 1)
_new_tuple = tuple.__new__


def view_from_values(values: Iterable[Any]) -> PersonView:
    """A record from its field values in ``VIEW_FIELDS`` order (no Python frame: ``tuple.__new__``)."""
    view: PersonView = _new_tuple(PersonView, values)
    return view


# --- consent -----------------------------------------------------------------------------------


def active_consent(
    records: Iterable[ConsentRecord], today: date, fenced_at: datetime | None = None
) -> ConsentRecord | None:
    """The effective consent if it grants anything today, else ``None`` (withdrawn — also behind the
    person's withdrawal fence ``fenced_at`` —, expired, not yet valid)."""
    current = effective(records, fenced_at)
    if current is None or current.withdrawn or not current.scopes:
        return None
    if today < current.valid_from or (current.valid_until is not None and today > current.valid_until):
        return None
    return current


# --- projection --------------------------------------------------------------------------------

# The scopes as module constants: an enum member read (``Scope.X``) costs ~75 ns on 3.11 against a few for
# a global, and ``releases`` is asked per stored event of a rebuild, ``project`` and ``extend`` per record.
_SHARE, _DISCLOSE, _RETAIN = Scope.SHARE_REGISTRATION, Scope.DISCLOSE_PLACEMENT, Scope.RETENTION_SUPPORT


# A personal block known to open (it opened when its event arrived, under the key the person still has:
# migration 047) whose fields the record does not take (``releases``): not opened again. ``project`` then
# needs only that it opens, for ``masked``.
UNREAD: Mapping[str, Any] = MappingProxyType({})


def releases(family: str, scopes: frozenset[Scope]) -> bool:
    """Does a record under a consent of these scopes take any field of a ``family`` event's personal
    block? (``project`` reads a registration's under every purpose — ``name`` goes with each —, a
    referral's case number under ``share_registration``, a placement's employer under
    ``disclose_placement``, and nothing of any other.)"""
    if family == "registration":
        return bool(scopes)
    if family == "referral":
        return _SHARE in scopes
    if family == "placement":
        return _DISCLOSE in scopes
    return False


def project(
    person_key: str, consent: ConsentRecord | None, events: Sequence[StoredEvent]
) -> PersonView | None:
    """The person's shared record from their events under ``consent`` (the active one, see
    ``active_consent``); ``None`` means they are not in the view at all.

    The result depends only on the set of events, not on their order, so a replay, a redelivery or an
    out-of-order arrival gives the same record.
    """
    if consent is None:
        return None
    scopes = consent.scopes
    share = _SHARE in scopes
    disclose = _DISCLOSE in scopes
    retain = _RETAIN in scopes
    masked = False
    by_family: dict[str, list[StoredEvent]] = {}
    for ev in events:  # no sort needed: every choice below is by content, and every list is sorted
        by_family.setdefault(ev.family, []).append(ev)
        if ev.data.get("personal") is not None and ev.personal is None:
            masked = True

    referrals = [_referral_item(ev.data) for ev in by_family.get("referral", ())]
    case_numbers = (
        [(ev.data["authority"], _case_number(ev)) for ev in by_family.get("referral", ())] if share else []
    )
    placements = [_placement_item(ev, disclose) for ev in by_family.get("placement", ())]
    retention = [_retention_item(ev.data) for ev in by_family.get("retention", ())] if retain else []

    authorities, offices = _recipient_codes(consent.recipients)
    # Positionally, in ``VIEW_FIELDS`` order, from the fields' defaults: ``PersonView(**…)`` bound its 29
    # fields by name (the generated ``__new__``), a record per person with a consent rebuilt.
    values = list(_DEFAULTS)
    values[:7] = (
        person_key,
        consent.consent_id,
        _scope_names(scopes),
        authorities,
        offices,
        consent.valid_from,
        consent.valid_until,
    )
    values[_REFERRING : _RETENTION + 1] = (
        tuple(sorted({r["authority"] for r in referrals})),
        tuple(sorted(referrals, key=_referral_order)),
        tuple(sorted(placements, key=_placement_order)),
        tuple(sorted(retention, key=_retention_order)),
    )
    values[_CASE_NUMBERS] = _case_items(c for c in case_numbers if c[1])
    values[_MASKED] = masked
    registrations = by_family.get("registration")
    if registrations:
        core, personal = _registration_fields(_latest_registration(registrations), share, disclose, retain)
        values[_CORE] = core
        values[_PERSONAL] = personal
    return view_from_values(values)


def same_consent(view: PersonView, consent: ConsentRecord) -> bool:
    """Would ``project`` under ``consent`` give ``view`` its consent part? (Everything ``project`` reads of
    a consent is stored in the record, so then the record's other fields stand as they are.)"""
    return (
        view.consent_id == consent.consent_id
        and view.valid_from == consent.valid_from
        and view.valid_until == consent.valid_until
        and view.scopes == _scope_names(consent.scopes)
        and (view.recipient_authorities, view.recipient_offices) == _recipient_codes(consent.recipients)
    )


@lru_cache(maxsize=4096)
def _scope_names(scopes: frozenset[Scope]) -> tuple[str, ...]:
    return tuple(sorted(s.value for s in scopes))


@lru_cache(maxsize=4096)
def _recipient_codes(recipients: frozenset[Recipient]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (
        tuple(sorted(r.code for r in recipients if r.kind == AUTHORITY)),
        tuple(sorted(r.code for r in recipients if r.kind == OFFICE)),
    )


def extend(view: PersonView, consent: ConsentRecord, events: Sequence[StoredEvent]) -> PersonView | None:
    """``project(person, consent, E + events)`` from ``view == project(person, consent, E)``, for
    ``events`` none of which is in ``E`` — without ``E``. ``None`` when the record alone cannot tell:
    a different consent, or a registration for someone whose record shows one already (the latest
    application wins, and the record does not keep what the choice needs).
    """
    if not events:
        return view if same_consent(view, consent) else None
    if not same_consent(view, consent):
        return None
    scopes = consent.scopes
    share = _SHARE in scopes
    disclose = _DISCLOSE in scopes
    retain = _RETAIN in scopes
    masked = view.masked
    registrations: list[StoredEvent] = []
    referrals: list[dict[str, Any]] = []
    case_numbers: list[tuple[str, str | None]] = []
    placements: list[dict[str, Any]] = []
    retention: list[dict[str, Any]] = []
    for ev in events:
        if ev.personal is None and ev.data.get("personal") is not None:
            masked = True
        family = ev.family
        if family == "registration":
            registrations.append(ev)
        elif family == "referral":
            referrals.append(_referral_item(ev.data))
            if share:
                case_numbers.append((ev.data["authority"], _case_number(ev)))
        elif family == "placement":
            placements.append(_placement_item(ev, disclose))
        elif family == "retention" and retain:
            retention.append(_retention_item(ev.data))
    # Positionally (``view._replace`` looked each of the 29 fields up by name): a record is extended per
    # person per batch.
    values = list(view)
    values[_MASKED] = masked
    if registrations:
        if view.registered_on is not None:
            return None
        # The record shows no registration, so its registration fields are all unset (only a registration
        # sets them): the registration's own, set or not, are the record's.
        values[_CORE], values[_PERSONAL] = _registration_fields(
            _latest_registration(registrations), share, disclose, retain
        )
    if referrals:
        values[_REFERRALS] = tuple(sorted((*view.referrals, *referrals), key=_referral_order))
        values[_REFERRING] = tuple(
            sorted({*view.referring_authorities, *(r["authority"] for r in referrals)})
        )
    if case_numbers:
        kept = ((c["authority"], c["case_number"]) for c in view.case_numbers)
        values[_CASE_NUMBERS] = _case_items((*kept, *(c for c in case_numbers if c[1])))
    if placements:
        values[_PLACEMENTS] = tuple(sorted((*view.placements, *placements), key=_placement_order))
    if retention:
        values[_RETENTION] = tuple(sorted((*view.retention, *retention), key=_retention_order))
    return view_from_values(values)


def _latest_registration(registrations: Sequence[StoredEvent]) -> StoredEvent:
    # A person who applied again (another office) is shown as of their latest application. Most applied
    # once: no key to build.
    if len(registrations) == 1:
        return registrations[0]
    return max(registrations, key=lambda e: (e.data["registered_on"], e.time, e.event_id))


def _registration_fields(
    reg: StoredEvent, share: bool, disclose: bool, retain: bool
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The record's fields from its registration: the core (``_CORE``: authority … team_support) and the
    personal fields (``_PERSONAL``: name … job_seeker_number; ``None`` where no scope discloses one)."""
    d = reg.data
    core = (
        d["authority"],
        d["office"],
        d["site"],
        _date(d["registered_on"]),
        d["sex"],
        d["age_band"],
        tuple(d["attributes"]),
        d["desired_occupation"]["group"],
        bool(d["team_support"]),
    )
    opened = reg.personal or {}
    name = opened.get("name") if share or disclose or retain else None
    if not share:
        return core, (name, None, None, None, None, None, None)
    born = opened.get("birth_date")
    personal = (
        name,
        opened.get("name_kana"),
        _date(born) if born else None,
        opened.get("phone"),
        opened.get("email"),
        opened.get("address"),
        opened.get("job_seeker_number"),
    )
    return core, personal


def _referral_item(d: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "referral_id": d["referral_id"],
        "authority": d["authority"],
        "site": d["site"],
        "programme": d["programme"],
        "referred_on": d["referred_on"],
    }


def _case_number(ev: StoredEvent) -> str | None:
    return ev.personal.get("case_number") if ev.personal else None


def _case_items(cases: Iterable[tuple[str | None, Any]]) -> tuple[dict[str, Any], ...]:
    """The record's case numbers from (authority, case number) pairs: sorted, once each. The authority is
    ``None`` only for a number kept before migration 071 of a person several authorities referred (whose
    it is, the sealed referrals tell a replay): shown to Hello Work only."""
    unique = set(cases)
    if len(unique) == 1:  # most people: one referral with its number
        ((a, n),) = unique
        return ({"authority": a, "case_number": n},)
    return tuple({"authority": a, "case_number": n} for a, n in sorted(unique, key=_case_order))


def _case_order(case: tuple[str | None, Any]) -> tuple[str, Any]:
    return (case[0] or "", case[1])


def _placement_item(ev: StoredEvent, disclose: bool) -> dict[str, Any]:
    d = ev.data
    item = {
        "placement_id": d["placement_id"],
        "office": d["office"],
        "site": d["site"],
        "placed_on": d["placed_on"],
        "route": d["route"],
        "occupation": d["occupation"]["group"],
        "employment_type": d["employment_type"],
    }
    if disclose and ev.personal:
        item["employer_name"] = ev.personal.get("employer_name")
        if ev.personal.get("employer_address"):
            item["employer_address"] = ev.personal["employer_address"]
    return item


def _retention_item(d: Mapping[str, Any]) -> dict[str, Any]:
    item = {
        "placement_id": d["placement_id"],
        "checkpoint_months": d["checkpoint_months"],
        "status": d["status"],
        "checked_on": d["checked_on"],
    }
    if d.get("left_on"):
        item["left_on"] = d["left_on"]
    return item


def _referral_order(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return (r["referred_on"], r["referral_id"])


def _placement_order(p: Mapping[str, Any]) -> tuple[Any, ...]:
    return (p["placed_on"], p["placement_id"])


def _retention_order(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return (r["placement_id"], r["checkpoint_months"], r["checked_on"])


# --- planning a batch ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewState:
    """What the handler loads for a batch's people before planning it."""

    today: date
    erased: frozenset[str]  # on the erasure register: their events are skipped
    known: frozenset[str]  # ids of the batch's events already stored (re-sent by the outbox)
    consents: Mapping[str, Sequence[ConsentRecord]]  # each person's kept (latest-version) records
    views: Mapping[str, PersonView]  # the records in the view now
    opened: Mapping[str, Mapping[str, Any] | None]  # event id → opened personal block (people in ``views``)
    # person → withdrawal fence on record (P7, written with the withdrawal's acceptance): no consent signed
    # at or before it puts the person in the view, even where a higher version replaced the withdrawal
    fences: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ViewPlan:
    """What one batch changes. The store writes it in this order, then the handler rebuilds ``rebuild``
    from each person's stored events (``project``), which the record alone cannot tell."""

    consents: tuple[PersonConsent, ...] = ()  # versions to keep (rule 1)
    events: tuple[tuple[Incoming, bool], ...] = ()  # non-consent events to store; visible at once?
    reveal: frozenset[str] = frozenset()  # people new to the view: their held events become visible
    write: tuple[PersonView, ...] = ()  # records extended in place by the batch's new events
    rebuild: Mapping[str, ConsentRecord] = field(default_factory=dict)  # person → active consent
    remove: frozenset[str] = frozenset()  # people whose consent no longer grants anything
    withdrawals: tuple[PersonConsent, ...] = ()  # withdrawals that removed someone (latency log)
    masked_events: int = 0  # events of erased people skipped


def persons_in(batch: Iterable[Incoming]) -> set[str]:
    return {e.person_key for e in batch}


def plan_batch(batch: Sequence[Incoming], state: ViewState) -> ViewPlan:
    """Batch + the people's current state → what to store and which records to write or remove.

    A person in the view under unchanged consent terms takes only the batch's new events (``extend``);
    newcomers, changed terms and a second registration are rebuilt from all their stored events.
    """
    masked = sum(1 for e in batch if e.person_key in state.erased) if state.erased else 0
    consents: list[PersonConsent] = []
    others: list[Incoming] = []
    for e in once_each(batch):
        if e.person_key not in state.erased:
            if e.family == CONSENT:
                consents.append(consent_of(e))
            else:
                others.append(e)
    persons = persons_in(batch) - state.erased
    if not persons:
        return ViewPlan(masked_events=masked)
    # Only people with a consent record, kept or in the batch, can be active (``active_consent`` of none is
    # ``None``): a batch's people mostly have none yet (a replay's events come before every consent).
    records: dict[str, dict[str, ConsentRecord]] = {}
    for p, kept_records in state.consents.items():
        if p in persons:
            records[p] = {r.consent_id: r for r in kept_records}
    kept = {(p, cid): r.version for p, rs in records.items() for cid, r in rs.items()}
    newer = newest_versions(consents, kept)
    for c in newer:
        records.setdefault(c.person_key, {})[c.record.consent_id] = c.record
    active = {
        p: rc
        for p, rs in records.items()
        if (rc := active_consent(rs.values(), state.today, state.fences.get(p))) is not None
    }
    fresh: dict[str, list[StoredEvent]] = {}
    for e in others:
        p = e.person_key
        if p in state.views and p in active and e.event_id not in state.known:
            personal = state.opened.get(e.event_id)
            fresh.setdefault(p, []).append(StoredEvent(e.event_id, e.family, e.time, e.data, personal))
    rebuild: dict[str, ConsentRecord] = {}
    write: list[PersonView] = []
    for p, consent in active.items():
        view = state.views.get(p)
        if view is None or not same_consent(view, consent):
            rebuild[p] = consent
        elif p in fresh:
            merged = extend(view, consent, fresh[p])
            if merged is None:
                rebuild[p] = consent
            elif merged != view:  # e.g. retention checkpoints without the scope that shows them
                write.append(merged)
    remove = frozenset(p for p in state.views if p not in active)
    return ViewPlan(
        consents=tuple(newer),
        events=tuple((e, e.person_key in active) for e in others),
        reveal=frozenset(p for p in active if p not in state.views),
        write=tuple(write),
        rebuild=rebuild,
        remove=remove,
        withdrawals=tuple(c for c in consents if c.person_key in remove and c.record.withdrawn),
        masked_events=masked,
    )


# --- reads -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """A read decision. ``reason`` names the rule that refused, never a personal value."""

    granted: bool
    reason: str = ""
    fields: tuple[str, ...] = field(default=())


def owns(view: PersonView, reader: Reader) -> bool:
    """Is this one of the reader's own people (before consent is even asked)?"""
    if reader.kind is ReaderKind.AUTHORITY:
        return view.authority == reader.code or reader.code in view.referring_authorities
    if reader.kind is ReaderKind.OFFICE:
        return view.office == reader.code
    return view.office is not None


def is_recipient(view: PersonView, reader: Reader) -> bool:
    if reader.kind is ReaderKind.AUTHORITY:
        return reader.code in view.recipient_authorities
    if reader.kind is ReaderKind.OFFICE:
        return reader.code in view.recipient_offices
    return view.office in view.recipient_offices


def decide(view: PersonView | None, reader: Reader, purpose: Scope, *, holds: bool | None = None) -> Decision:
    """May ``reader`` read this person for ``purpose``, and which personal fields does it get?

    ``holds`` is the holder register's answer (P3 in ``domain.provenance``: holding comes from the
    joint reception, never from an event); without it the view's own registration and referrals decide."""
    mine = owns(view, reader) if view is not None and holds is None else bool(holds)
    if view is None or not mine:
        return Decision(False, f"person is not among the people of {reader.kind.value}:{reader.code}")
    if not is_recipient(view, reader):
        return Decision(False, f"consent does not list {reader.kind.value}:{reader.code} as recipient")
    if not view.grants(purpose):
        return Decision(False, f"consent does not grant purpose '{purpose.value}'")
    return Decision(True, fields=disclosed_fields(view, purpose))


def decide_disclosure(
    view: PersonView | None,
    reader: Reader,
    purpose: Scope,
    registers: Registers,
    consents: Iterable[ConsentRecord] = (),
) -> Decision:
    """``decide`` with the registers (``domain.agreements.Registers``): the withdrawal fence (P7: nothing
    rests on a consent signed at or before the person's latest withdrawal on record — the fence is written
    with the withdrawal's acceptance, so this holds from its 202 on, whatever the projection's lag),
    holding (P3), consent validity on the day of the read, and an agreement in force covering the purpose
    between the two sides (A2). ``consents``: the person's kept consent records."""
    if view is None:
        return decide(None, reader, purpose)
    fence = registers.fences.get(view.person_key)
    if fence is not None:
        signed = next((c.signed_at for c in consents if c.consent_id == view.consent_id), None)
        if signed is None or signed <= fence:
            return Decision(False, "P7: the person withdrew consent; nothing is disclosed")
    decision = decide(view, reader, purpose, holds=view.person_key in registers.held)
    if not decision.granted:
        return decision
    today = registers.today
    if today < view.valid_from or (view.valid_until is not None and today > view.valid_until):
        return Decision(False, "consent is not valid today (valid_from / valid_until)")
    authority = reader.code if reader.kind is ReaderKind.AUTHORITY else view.authority
    office = reader.code if reader.kind is ReaderKind.OFFICE else view.office
    if not covered(
        registers.agreements, purpose, authority=authority, office=office, site=view.site, day=today
    ):
        return Decision(False, agreement_refusal(purpose, authority, office))
    return decision


def as_disclosed(view: PersonView, reader: Reader, purpose: Scope, registers: Registers) -> PersonView:
    """``view`` as a read for ``purpose`` may show it to ``reader``; Hello Work readers see it whole.

    An authority sees its own referrals and case numbers only: another authority's referral (its case
    worker sent this person) and case number are that authority's welfare data, and agreements run
    between an authority and an office (A2), never between authorities.

    Placement data is the placing office's (A2–A3 as the feed's individual list decides them,
    ``domain.agreements.withheld``): an authority sees a placement's employer (disclose_placement), and a
    retention checkpoint of it (retention_support), only under an agreement in force today that covers
    the purpose with the office that placed the person, for the placement's site — never under the
    registration office's agreement alone, which ``decide_disclosure`` asks for the read as a whole (the
    name). A checkpoint whose placement the record does not hold has no placing office: not shown, as
    the feed lists checkpoints of its placements only."""
    if reader.kind is not ReaderKind.AUTHORITY:
        return view
    own = reader.code
    referrals = tuple(r for r in view.referrals if r["authority"] == own)
    case_numbers = tuple(c for c in view.case_numbers if c["authority"] == own)
    placements, retention = view.placements, view.retention

    def placing_office_covers(p: Mapping[str, Any]) -> bool:
        return covered(registers.agreements, purpose, authority=own, office=p.get("office"),
                       site=p.get("site"), day=registers.today)  # fmt: skip

    if purpose is Scope.DISCLOSE_PLACEMENT:
        placements = tuple(
            p if placing_office_covers(p) else {k: v for k, v in p.items() if not k.startswith("employer")}
            for p in view.placements
        )
    elif purpose is Scope.RETENTION_SUPPORT and view.retention:
        placed: dict[str, list[Mapping[str, Any]]] = {}
        for p in view.placements:
            placed.setdefault(p["placement_id"], []).append(p)
        shown = {pid for pid, ps in placed.items() if all(placing_office_covers(p) for p in ps)}
        retention = tuple(c for c in view.retention if c["placement_id"] in shown)
    if (referrals, case_numbers, placements, retention) == (
        view.referrals,
        view.case_numbers,
        view.placements,
        view.retention,
    ):
        return view
    return view._replace(
        referrals=referrals, case_numbers=case_numbers, placements=placements, retention=retention
    )


def disclosed_fields(view: PersonView, purpose: Scope) -> tuple[str, ...]:
    """The personal fields a read for ``purpose`` actually returns (those that hold a value)."""
    present = []
    for name in FIELDS_BY_PURPOSE[purpose]:
        if "." in name:  # a key of each item of a list: placements.employer_name, referrals.programme
            items, key = name.split(".", 1)
            if any(item.get(key) for item in getattr(view, items)):
                present.append(name)
        elif getattr(view, name):
            present.append(name)
    return tuple(present)


def disclose(view: PersonView, purpose: Scope) -> dict[str, Any]:
    """The read's answer: the non-identifying core plus the fields of ``purpose`` only."""
    allowed = set(FIELDS_BY_PURPOSE[purpose])
    body: dict[str, Any] = {
        "person_key": view.person_key,
        "purpose": purpose.value,
        "consent": {
            "consent_id": view.consent_id,
            "scopes": list(view.scopes),
            "valid_from": view.valid_from.isoformat(),
            "valid_until": view.valid_until.isoformat() if view.valid_until else None,
        },
        "authority": view.authority,
        "office": view.office,
        "site": view.site,
        "registered_on": view.registered_on.isoformat() if view.registered_on else None,
        "sex": view.sex,
        "age_band": view.age_band,
        "desired_occupation": view.desired_occupation,
        "team_support": view.team_support,
        "referrals": [
            {k: v for k, v in r.items() if k != "programme" or "referrals.programme" in allowed}
            for r in view.referrals
        ],
        "placements": [
            {k: v for k, v in p.items() if not k.startswith("employer") or f"placements.{k}" in allowed}
            for p in view.placements
        ],
        "masked": view.masked,
    }
    for name in (*REGISTRATION_FIELDS, *LINK_FIELDS, "retention", "attributes"):
        if name in allowed:
            value = getattr(view, name)
            if name == "case_numbers":  # the numbers (the reader's own, ``as_disclosed``), as before 071
                value = sorted({c["case_number"] for c in value})
            elif isinstance(value, date):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = [dict(v) if isinstance(v, dict) else v for v in value]
            body[name] = value
    return body


# --- helpers -----------------------------------------------------------------------------------


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
