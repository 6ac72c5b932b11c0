"""The placement feed's projection, planned: a batch of events + what the feed keeps about its people →
the rows to write and the feeds (authority, month) to look at again.

The feed keeps the facts it counts (registrations, referrals, placements, retention checkpoints, consents)
with their sealed personal blocks as they arrived; the builder composes revisions from them later. Each
fact has a key — the registration's event id, the referral (id, person, authority), the placement (id,
person), the retention checkpoint (placement, checkpoint, person) — and the first report of a key wins,
except retention, where the checkpoint sent last wins. A referral, a placement and a retention checkpoint
are their own person's: another person's referral or placement reusing the id (a squatter, whichever
arrives first) is kept beside it and counts only for its own person (a referral, for its own authority),
and a checkpoint counts only for a placement of its own person.

Which feeds a fact may change (``Mark``): a placement its month and the retention cohorts that include it
(1, 3, 6 months on), for the site's authority and every authority that referred the person; a
registration its month; a referral every feed holding the person and, with team support, the month of
the enrolment; a retention checkpoint its cohort.
One mark per fact and feed, so the console can show how many late events wait for a feed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from domain.batch import CONSENT, Incoming, consent_of
from domain.consent import PersonConsent, newest_versions
from domain.occupation import CLASSIFICATION_VERSION

COHORTS = (0, 1, 3, 6)  # a placement counts in its month and in the retention cohorts 1, 3, 6 months on


class RegistrationRow(NamedTuple):
    event_id: str
    person_key: str
    authority: str
    site: str
    registered_on: date
    team_support: bool
    personal: Mapping[str, Any]  # sealed
    arrived_at: datetime  # the event's CloudEvents time: when the source system sent it
    attributes: list[str]
    sex: str
    age_band: str
    foreign_national: bool
    prior_application_office: str | None


class ReferralRow(NamedTuple):
    referral_id: str
    person_key: str
    authority: str
    site: str
    referred_on: date
    arrived_at: datetime
    team_support_from: date | None  # チーム支援 enrolled later, at a case conference


class PlacementRow(NamedTuple):
    placement_id: str
    person_key: str
    site: str
    site_authority: str
    placed_on: date
    route: str
    occupation: str
    classification_version: str
    employment_type: str
    sex: str
    age_band: str
    attributes: list[str]
    personal: Mapping[str, Any]  # sealed
    arrived_at: datetime
    foreign_national: bool
    office: str  # the office that placed the person: its agreement decides disclosure (A2), not the site's


class RetentionRow(NamedTuple):
    placement_id: str
    checkpoint_months: int
    person_key: str
    status: str
    checked_on: date
    arrived_at: datetime


class Placed(NamedTuple):
    """A placement the feed keeps, as far as marking needs it."""

    placement_id: str
    placed_on: date
    site_authority: str


class Mark(NamedTuple):
    authority: str
    month: str  # YYYY-MM


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the feed keeps about the batch's people, loaded before planning."""

    registrations: Mapping[str, Sequence[tuple[str, str, date]]]  # person → (event id, authority, day)
    referrals: Mapping[str, Sequence[tuple[str, str]]]  # person → (referral id, authority)
    placements: Mapping[str, Sequence[Placed]]  # person → placements
    retention: Mapping[tuple[str, int, str], datetime]  # (placement id, checkpoint, person) → arrived_at kept
    consents: Mapping[tuple[str, str], int]  # (person, consent id) → version kept (P8)


@dataclass(frozen=True, slots=True)
class FeedPlan:
    registrations: tuple[RegistrationRow, ...] = ()
    referrals: tuple[ReferralRow, ...] = ()
    placements: tuple[PlacementRow, ...] = ()
    retention: tuple[RetentionRow, ...] = ()  # upserts: the checkpoint sent last wins
    consents: tuple[PersonConsent, ...] = ()  # versions to keep (rule 1)
    marks: tuple[Mark, ...] = field(default=())


def plan_batch(batch: Sequence[Incoming], state: FeedState) -> FeedPlan:
    """Batch + kept facts → the new facts and the feeds they may change. Facts already kept are skipped."""
    regs: dict[str, RegistrationRow] = {}
    refs: dict[tuple[str, str, str], ReferralRow] = {}
    places: dict[tuple[str, str], PlacementRow] = {}
    rets: dict[tuple[str, int, str], RetentionRow] = {}
    consents: list[PersonConsent] = []
    kept_regs = {r[0] for rows in state.registrations.values() for r in rows}
    kept_refs = {(r[0], person, r[1]) for person, rows in state.referrals.items() for r in rows}
    kept_places = {(p.placement_id, person) for person, rows in state.placements.items() for p in rows}
    # Each fact by its own key, within the batch as across batches (the first report wins): not by event id
    # across families (``once_each``), which dropped, say, a registration that a placement (a forger's:
    # ids are the hub's) carrying its id came before in the same batch, and kept it one batch later.
    for e in batch:
        d = e.data
        if e.family == "registration":
            if e.event_id not in kept_regs and e.event_id not in regs:
                regs[e.event_id] = _registration(e)
        elif e.family == "referral":
            # A referral is its own person's and its authority's (migration 064): another authority's
            # referral reusing the id, for its own person, is kept beside it, in whichever order they come.
            referred = (d["referral_id"], e.person_key, d["authority"])
            if referred not in kept_refs and referred not in refs:
                refs[referred] = _referral(e)
        elif e.family == "placement":
            # First report of a (placement, person) wins: corrections are not part of the contract yet.
            placed = (d["placement_id"], e.person_key)
            if placed not in kept_places and placed not in places:
                places[placed] = _placement(e)
        elif e.family == "retention":
            row = _retention(e)
            key = (row.placement_id, row.checkpoint_months, row.person_key)
            held = rets[key].arrived_at if key in rets else state.retention.get(key)
            if held is None or row.arrived_at > held:
                rets[key] = row
        elif e.family == CONSENT:
            consents.append(consent_of(e))
    return FeedPlan(
        registrations=tuple(regs.values()),
        referrals=tuple(refs.values()),
        placements=tuple(places.values()),
        retention=tuple(rets.values()),
        consents=tuple(newest_versions(consents, state.consents)),
        marks=tuple(_marks(state, regs.values(), refs.values(), places.values(), rets.values())),
    )


def _marks(
    state: FeedState,
    regs: Iterable[RegistrationRow],
    refs: Iterable[ReferralRow],
    places: Iterable[PlacementRow],
    rets: Iterable[RetentionRow],
) -> list[Mark]:
    refs, places = list(refs), list(places)
    # Everything the feed holds about a person once the batch is written.
    placed: dict[str, list[Placed]] = {p: list(rows) for p, rows in state.placements.items()}
    for pl in places:
        placed.setdefault(pl.person_key, []).append(Placed(pl.placement_id, pl.placed_on, pl.site_authority))
    registered: dict[str, list[tuple[str, date]]] = {
        p: [(a, day) for _, a, day in rows] for p, rows in state.registrations.items()
    }
    regs = list(regs)
    for r in regs:
        registered.setdefault(r.person_key, []).append((r.authority, r.registered_on))
    referrers: dict[str, set[str]] = {p: {a for _, a in rows} for p, rows in state.referrals.items()}
    for ref in refs:
        referrers.setdefault(ref.person_key, set()).add(ref.authority)

    def owners(person: str, site_authority: str) -> set[str]:
        return {site_authority} | referrers.get(person, set())

    marks: list[Mark] = []
    for pl in places:
        marks += [
            Mark(o, month_of(pl.placed_on, k))
            for k in COHORTS
            for o in sorted(owners(pl.person_key, pl.site_authority))
        ]
    marks += [Mark(r.authority, month_of(r.registered_on, 0)) for r in regs]
    for ref in refs:
        marks += [
            Mark(ref.authority, month_of(p.placed_on, k))
            for p in placed.get(ref.person_key, ())
            for k in COHORTS
        ]
        marks += [
            Mark(ref.authority, month_of(day, 0))
            for authority, day in registered.get(ref.person_key, ())
            if authority == ref.authority
        ]
        if ref.team_support_from is not None:
            marks.append(Mark(ref.authority, month_of(ref.team_support_from, 0)))
    by_id = {(p.placement_id, person): p for person, rows in placed.items() for p in rows}
    for t in rets:
        if (t.placement_id, t.person_key) in by_id:  # another person's placement: it counts for nothing
            p = by_id[t.placement_id, t.person_key]
            months = month_of(p.placed_on, t.checkpoint_months)
            marks += [Mark(o, months) for o in sorted(owners(t.person_key, p.site_authority))]
    return marks


def month_of(day: date, months_on: int) -> str:
    """``YYYY-MM`` of the month ``months_on`` months after ``day``'s."""
    index = day.year * 12 + day.month - 1 + months_on
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _day(value: str) -> date:
    """A date of the event's data, in the contract's JSON form (ISO text)."""
    return date.fromisoformat(value)


def _registration(e: Incoming) -> RegistrationRow:
    d = e.data
    return RegistrationRow(
        e.event_id, d["person_key"], d["authority"], d["site"], _day(d["registered_on"]), bool(d["team_support"]),
        d["personal"], e.time, list(d["attributes"]), d["sex"], d["age_band"], bool(d.get("foreign_national")),
        d.get("prior_application_office"),
    )  # fmt: skip


def _referral(e: Incoming) -> ReferralRow:
    d = e.data
    later = d.get("team_support_from")
    return ReferralRow(
        d["referral_id"], d["person_key"], d["authority"], d["site"], _day(d["referred_on"]), e.time,
        _day(later) if later is not None else None,
    )  # fmt: skip


def _placement(e: Incoming) -> PlacementRow:
    d = e.data
    occupation = d["occupation"]
    # The data is the value as parsed, not as validated: a field the contract defaults may be left out
    # (only the adapters always write it), and is then the contract's default, never a missing key.
    version = occupation.get("classification_version", CLASSIFICATION_VERSION)
    return PlacementRow(
        d["placement_id"], d["person_key"], d["site"], d["site"][:6], _day(d["placed_on"]), d["route"],
        occupation["group"], version, d["employment_type"], d["sex"],
        d["age_band"], list(d["attributes"]), d["personal"], e.time, bool(d.get("foreign_national")), d["office"],
    )  # fmt: skip


def _retention(e: Incoming) -> RetentionRow:
    d = e.data
    return RetentionRow(
        d["placement_id"],
        int(d["checkpoint_months"]),
        d["person_key"],
        d["status"],
        _day(d["checked_on"]),
        e.time,
    )
