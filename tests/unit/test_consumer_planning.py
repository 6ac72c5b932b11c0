"""Both consumers' planning functions, without a database: one set of cases run against each consumer
(as ``pyeventsourcing/eventsourcing`` runs one recorder test case against every backend), then what only
one of them does.

A consumer's planning function takes a batch and the state its store holds; here the state is what
planning the earlier events left (``kept``), built by the same pure functions, so nothing but plain data
is involved.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from domain import feed_projection as feed
from domain import shared_view as sv
from domain.batch import Incoming
from domain.consent import consent_record, effective

T0 = datetime(2025, 5, 20, 1, 0, tzinfo=UTC)
TODAY = date(2025, 7, 1)
SEALED = {"alg": "A256GCM", "kid": "pdk-x-1", "nonce": "n", "ct": "c"}


def pk(n: int) -> str:
    return f"{n:032x}"


def event(event_id: str, family: str, data: Mapping[str, Any], *, at: int = 0) -> Incoming:
    return Incoming(event_id, family, data["person_key"], T0 + timedelta(minutes=at), data)


def registration(
    eid: str, person: str, *, on: str = "2025-05-01", authority: str = "131041", **extra: Any
) -> Incoming:
    return event(eid, "registration", {
        "person_key": person, "registered_on": on, "office": "1301", "site": f"{authority}-01",
        "authority": authority, "sex": "female", "age_band": "35-39", "attributes": ["public_assistance"],
        "desired_occupation": {"group": "06", "classification_version": "MHLW-2022"}, "team_support": True,
        "personal": SEALED, **extra,
    })  # fmt: skip


def referral(
    eid: str, person: str, *, authority: str = "131041", referral_id: str | None = None, **extra: Any
) -> Incoming:
    return event(eid, "referral", {
        "referral_id": referral_id or f"r-{eid}", "person_key": person, "authority": authority,
        "site": f"{authority}-01", "programme": "general", "referred_on": "2025-04-28", "personal": SEALED,
        **extra,
    })  # fmt: skip


def placement(eid: str, person: str, *, placement_id: str | None = None, on: str = "2025-05-12") -> Incoming:
    return event(eid, "placement", {
        "placement_id": placement_id or f"p-{eid}", "person_key": person, "office": "1301", "site": "131041-01",
        "placed_on": on, "route": "hello_work_referral",
        "occupation": {"group": "08", "classification_version": "MHLW-2022"}, "employment_type": "part_time",
        "sex": "female", "age_band": "35-39", "attributes": ["public_assistance"], "personal": SEALED,
    })  # fmt: skip


def retention(eid: str, person: str, placement_id: str, *, months: int = 1, at: int = 0) -> Incoming:
    return event(eid, "retention", {
        "person_key": person, "placement_id": placement_id, "checkpoint_months": months,
        "status": "employed", "checked_on": "2025-06-12", "site": "131041-01",
    }, at=at)  # fmt: skip


def consent(
    eid: str, person: str, version: int = 1, *, action: str = "given", consent_id: str = "c1"
) -> Incoming:
    return event(eid, "consent", {
        "consent_id": consent_id, "version": version, "action": action, "person_key": person,
        "scopes": [] if action == "withdrawn" else ["share_registration", "disclose_placement"],
        "recipients": [{"kind": "authority", "code": "131041"}, {"kind": "office", "code": "1301"}],
        "valid_from": "2025-04-01", "captured": {"signed_at": f"2025-04-{version:02d}T10:00:00+09:00"},
    })  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What a plan writes, in terms every consumer shares."""

    applied: tuple[str, ...]  # ids of the (non-consent) events whose facts the plan writes, in batch order
    consents: Mapping[str, int]  # consent id → version the plan keeps


class PlanningCases(ABC):
    """What every consumer's planning function does, whatever its store holds."""

    @abstractmethod
    def outcome(self, batch: Sequence[Incoming], kept: Sequence[Incoming] = ()) -> Outcome:
        """Plan ``batch`` against the state that planning ``kept`` (one earlier batch) left."""

    def test_an_empty_batch_writes_nothing(self) -> None:
        assert self.outcome([]) == Outcome((), {})

    def test_an_event_repeated_within_a_batch_applies_once(self) -> None:
        reg, ref = registration("e1", pk(1)), referral("e2", pk(1))
        assert self.outcome([reg, ref, reg, ref]).applied == ("e1", "e2")

    def test_an_event_kept_already_is_not_applied_again(self) -> None:
        reg, ref, plc = registration("e1", pk(1)), referral("e2", pk(1)), placement("e3", pk(1))
        assert self.outcome([reg, ref, plc], kept=[reg, ref]).applied == ("e3",)

    def test_newest_consent_version_wins_within_a_batch(self) -> None:
        batch = [consent("k2", pk(1), 2), consent("k3", pk(1), 3), consent("k1", pk(1), 1)]
        assert self.outcome(batch).consents == {"c1": 3}

    def test_a_consent_version_not_newer_than_the_kept_one_is_not_written(self) -> None:
        kept = [consent("k3", pk(1), 3)]
        assert self.outcome([consent("k2", pk(1), 2), consent("k3", pk(1), 3)], kept).consents == {}
        assert self.outcome([consent("k4", pk(1), 4)], kept).consents == {"c1": 4}

    def test_consent_records_are_kept_apart(self) -> None:
        batch = [consent("a", pk(1), 2, consent_id="c1"), consent("b", pk(2), 1, consent_id="c2")]
        assert self.outcome(batch).consents == {"c1": 2, "c2": 1}

    def test_a_consent_id_never_crosses_from_one_person_to_another(self) -> None:
        # P8: records are kept per (person, consent id); another person's record under the same id is a
        # record of its own, whatever the versions
        kept = [consent("k5", pk(1), 5)]
        assert self.outcome([consent("k3", pk(2), 3)], kept).consents == {"c1": 3}  # pk(2)'s own record
        assert self.outcome([consent("k4", pk(1), 4)], kept).consents == {}  # pk(1)'s older version

    def test_the_order_of_a_batch_does_not_change_what_is_written(self) -> None:
        batch = [
            registration("e1", pk(1)), referral("e2", pk(1)), placement("e3", pk(1)),
            consent("k1", pk(1), 1), consent("k2", pk(1), 2), registration("e4", pk(2)),
        ]  # fmt: skip
        outcomes = {
            (frozenset(o.applied), tuple(sorted(o.consents.items())))
            for o in (self.outcome(list(order)) for order in itertools.permutations(batch, len(batch)))
        }
        assert outcomes == {(frozenset({"e1", "e2", "e3", "e4"}), (("c1", 2),))}

    # Event ids are the producers' (random); only a forger repeats one. A consent is a versioned record,
    # applied by (person, consent id, version) (``newest_versions``), never by event id: so planned across
    # batches, and so within one — a consent's id repeating another event's must take nothing from either
    # (a withdrawal was dropped from a batch whose earlier record, anyone's, carried its id).

    def test_a_consent_and_another_persons_event_sharing_an_id_are_both_applied(self) -> None:
        kept = [consent("k1", pk(2)), registration("e2", pk(2))]
        withdrawal, reg = consent("x", pk(2), 2, action="withdrawn"), registration("x", pk(1))
        for batch in ([reg, withdrawal], [withdrawal, reg]):
            assert self.outcome(batch, kept) == Outcome(("x",), {"c1": 2}), batch[0].family

    def test_a_batch_plans_as_its_parts_do_when_a_consent_repeats_an_id(self) -> None:
        kept = [consent("k1", pk(2)), registration("e2", pk(2))]
        withdrawal, reg = consent("x", pk(2), 2, action="withdrawn"), registration("x", pk(1))
        for batch in ([reg, withdrawal], [withdrawal, reg]):
            first = self.outcome(batch[:1], kept)
            second = self.outcome(batch[1:], [*kept, *batch[:1]])
            parts = Outcome(first.applied + second.applied, {**first.consents, **second.consents})
            assert self.outcome(batch, kept) == parts, batch[0].family

    def test_consents_sharing_an_event_id_are_each_applied_by_their_own_record(self) -> None:
        batch = [consent("x", pk(1), 2, consent_id="c1"), consent("x", pk(2), 1, consent_id="c2")]
        assert self.outcome(batch).consents == {"c1": 2, "c2": 1}
        # the same consent twice (a redelivery) is one version of one record
        assert self.outcome([consent("x", pk(1), 2), consent("x", pk(1), 2)]).consents == {"c1": 2}


# --- the shared view ---------------------------------------------------------------------------------


def view_state(kept: Sequence[Incoming], *, today: date = TODAY) -> sv.ViewState:
    """The shared view's state after ``kept`` was applied: kept events, newest consents, records."""
    records: dict[str, dict[str, Any]] = {}
    for e in kept:
        if e.family == "consent":
            rec = consent_record(e.data)
            held = records.setdefault(e.person_key, {}).get(rec.consent_id)
            if held is None or rec.version > held.version:
                records[e.person_key][rec.consent_id] = rec
    consents = {p: list(r.values()) for p, r in records.items()}
    views = {}
    for p, recs in consents.items():
        active = sv.active_consent(recs, today)
        stored = [_stored(e) for e in kept if e.person_key == p and e.family != "consent"]
        if (view := sv.project(p, active, stored)) is not None:
            views[p] = view
    # The ids of the stored events (``sv_events``), as the handler asks them: consents are kept by record
    known = frozenset(e.event_id for e in kept if e.family != "consent")
    return sv.ViewState(today, frozenset(), known, consents, views, {})


def _stored(e: Incoming, personal: Mapping[str, Any] | None = None) -> sv.StoredEvent:
    return sv.StoredEvent(e.event_id, e.family, e.time, e.data, personal or {"name": "髙橋 花子"})


def opened_for(batch: Sequence[Incoming]) -> dict[str, Mapping[str, Any] | None]:
    return {e.event_id: {"name": "髙橋 花子"} for e in batch if e.family != "consent"}


class TestSharedViewPlanning(PlanningCases):
    def outcome(self, batch: Sequence[Incoming], kept: Sequence[Incoming] = ()) -> Outcome:
        state = view_state(kept)
        plan = sv.plan_batch(batch, state)
        new = tuple(e.event_id for e, _ in plan.events if e.event_id not in state.known)
        return Outcome(new, {c.record.consent_id: c.record.version for c in plan.consents})

    def test_events_before_their_consent_are_stored_held(self) -> None:
        plan = sv.plan_batch([registration("e1", pk(1))], view_state([]))
        assert [(e.event_id, visible) for e, visible in plan.events] == [("e1", False)]
        assert not plan.rebuild and not plan.write

    def test_consent_arriving_brings_the_person_in_by_a_rebuild(self) -> None:
        plan = sv.plan_batch([consent("k1", pk(1))], view_state([registration("e1", pk(1))]))
        assert set(plan.rebuild) == {pk(1)} and plan.reveal == {pk(1)}

    def test_a_person_in_the_view_takes_new_events_in_place(self) -> None:
        kept = [consent("k1", pk(1)), registration("e1", pk(1))]
        batch = [referral("e2", pk(1))]
        state = view_state(kept)
        plan = sv.plan_batch(batch, sv.ViewState(TODAY, frozenset(), state.known, state.consents, state.views,
                                                 opened_for(batch)))  # fmt: skip
        assert not plan.rebuild
        [record] = plan.write
        assert [r["referral_id"] for r in record.referrals] == ["r-e2"]
        assert [(e.event_id, visible) for e, visible in plan.events] == [("e2", True)]

    def test_a_second_registration_rebuilds(self) -> None:
        kept = [consent("k1", pk(1)), registration("e1", pk(1))]
        batch = [registration("e2", pk(1), on="2025-06-01")]
        state = view_state(kept)
        plan = sv.plan_batch(batch, sv.ViewState(TODAY, frozenset(), state.known, state.consents, state.views,
                                                 opened_for(batch)))  # fmt: skip
        assert set(plan.rebuild) == {pk(1)} and not plan.write

    def test_withdrawal_removes_the_person_and_is_logged(self) -> None:
        kept = [consent("k1", pk(1)), registration("e1", pk(1))]
        plan = sv.plan_batch([consent("k2", pk(1), 2, action="withdrawn")], view_state(kept))
        assert plan.remove == {pk(1)}
        assert [c.event_id for c in plan.withdrawals] == ["k2"]
        assert not plan.rebuild and not plan.write

    def test_a_withdrawal_sharing_its_id_with_another_persons_event_removes_the_person(self) -> None:
        kept = [consent("k1", pk(2)), registration("e2", pk(2))]
        withdrawal, reg = consent("x", pk(2), 2, action="withdrawn"), registration("x", pk(1))
        for batch in ([reg, withdrawal], [withdrawal, reg]):
            plan = sv.plan_batch(batch, view_state(kept))
            assert plan.remove == {pk(2)} and [c.event_id for c in plan.withdrawals] == ["x"]
            assert [(e.person_key, visible) for e, visible in plan.events] == [(pk(1), False)]

    def test_events_of_erased_people_are_skipped_and_counted(self) -> None:
        state = view_state([])
        erased = sv.ViewState(TODAY, frozenset({pk(1)}), state.known, {}, {}, {})
        plan = sv.plan_batch(
            [registration("e1", pk(1)), consent("k1", pk(1)), registration("e2", pk(2))], erased
        )
        assert [e.event_id for e, _ in plan.events] == ["e2"] and not plan.consents
        assert plan.masked_events == 2

    def test_a_consent_signed_behind_the_withdrawal_fence_brings_nobody_in(self) -> None:
        # The withdrawal (signed 04-02) was accepted, so its fence is on record; a version 3 signed before
        # it (04-01 here, say a late correction of the old form) replaces the withdrawn version.
        kept = [registration("e1", pk(1))]
        late = event(
            "k3",
            "consent",
            {**consent("k3", pk(1), 3).data, "captured": {"signed_at": "2025-04-01T12:00:00+09:00"}},
        )
        state = view_state(kept)
        fenced = sv.ViewState(TODAY, frozenset(), state.known, state.consents, state.views, {},
                              {pk(1): datetime(2025, 4, 2, 1, 0, tzinfo=UTC)})  # fmt: skip
        assert set(sv.plan_batch([late], state).rebuild) == {pk(1)}  # without the fence: in the view
        plan = sv.plan_batch([late], fenced)
        assert not plan.rebuild and not plan.reveal and not plan.write
        assert [
            (e.event_id, visible)
            for e, visible in sv.plan_batch([late, referral("e2", pk(1))], fenced).events
        ] == [("e2", False)]

    def test_a_consent_signed_after_the_fence_brings_the_person_in(self) -> None:
        kept = [registration("e1", pk(1))]
        state = view_state(kept)
        fenced = sv.ViewState(TODAY, frozenset(), state.known, state.consents, state.views, {},
                              {pk(1): datetime(2025, 4, 2, 1, 0, tzinfo=UTC)})  # fmt: skip
        assert set(sv.plan_batch([consent("k3", pk(1), 3)], fenced).rebuild) == {pk(1)}

    def test_a_consent_not_valid_yet_holds_events(self) -> None:
        kept = [consent("k1", pk(1)), registration("e1", pk(1))]
        plan = sv.plan_batch([referral("e2", pk(1))], view_state(kept, today=date(2025, 3, 31)))
        assert [(e.event_id, visible) for e, visible in plan.events] == [("e2", False)]

    def test_who_is_active_is_decided_over_kept_and_new_consent_records_alike(self) -> None:
        """``plan_batch`` looks only at people with a consent record, kept or in the batch (the others
        cannot be active): against the rule written out over every person of the batch — the newest
        version of each record, kept or new, then ``active_consent`` — for people with no record at all,
        kept records only, new ones only, both (a newer and an older version), a withdrawal, a record in
        the view whose consent record is gone, someone erased, and kept records of people not in the
        batch."""
        kept = [
            consent("k2", pk(2)), registration("e2", pk(2)),  # kept only: takes the batch's referral
            consent("k4", pk(4)), registration("e4", pk(4)),  # kept v1, the batch brings v2 and an old v1
            consent("k5", pk(5)), registration("e5", pk(5)),  # withdrawn in the batch
            consent("k7", pk(7)), registration("e7", pk(7)),  # not in the batch at all
            consent("k8", pk(8)),  # erased since
        ]  # fmt: skip
        state = view_state(kept)
        # The records of the batch's people (as the handler loads them), one whose consent record is gone
        views = {p: v for p, v in state.views.items() if p in {pk(2), pk(4), pk(5)}}
        views[pk(6)] = state.views[pk(2)]._replace(person_key=pk(6))
        consents = {p: rs for p, rs in state.consents.items()}
        batch = [
            registration("n1", pk(1)), referral("n1r", pk(1)),  # no record at all: held
            referral("n2", pk(2)),
            consent("b3", pk(3)), registration("n3", pk(3)),  # a new record only
            consent("b4", pk(4), 2, consent_id="c1"), consent("b4old", pk(4), 1), referral("n4", pk(4)),
            consent("b5", pk(5), 2, action="withdrawn"), referral("n5", pk(5)),
            referral("n6", pk(6)),
            registration("n8", pk(8)), consent("b8", pk(8)),
        ]  # fmt: skip
        planned = sv.ViewState(TODAY, frozenset({pk(8)}), state.known, consents, views, opened_for(batch))
        plan = sv.plan_batch(batch, planned)

        def rule(person: str) -> Any:
            records = {r.consent_id: r for r in consents.get(person, ())}
            for e in batch:
                if e.family == "consent" and e.person_key == person:
                    rec = consent_record(e.data)
                    if rec.consent_id not in records or rec.version > records[rec.consent_id].version:
                        records[rec.consent_id] = rec
            return sv.active_consent(records.values(), TODAY)

        in_batch = {e.person_key for e in batch} - {pk(8)}
        active = {p: rule(p) for p in in_batch if rule(p) is not None}
        assert set(active) == {pk(2), pk(3), pk(4)}  # the cases are what they say
        assert {e.event_id: visible for e, visible in plan.events} == {
            e.event_id: e.person_key in active
            for e in batch
            if e.family != "consent" and e.person_key != pk(8)
        }
        assert plan.remove == {pk(5), pk(6)}
        assert dict(plan.rebuild) == {p: c for p, c in active.items() if p not in views}
        assert {v.person_key for v in plan.write} == {pk(2), pk(4)}
        assert all(v.consent_id == active[v.person_key].consent_id for v in plan.write)
        assert plan.reveal == {pk(3)}


# --- the placement feed ------------------------------------------------------------------------------


def feed_state(kept: Sequence[Incoming]) -> feed.FeedState:
    """The feed's state after ``kept`` was applied (as one batch)."""
    plan = feed.plan_batch(kept, feed.FeedState({}, {}, {}, {}, {}))
    regs: dict[str, list[tuple[str, str, date]]] = {}
    for r in plan.registrations:
        regs.setdefault(r.person_key, []).append((r.event_id, r.authority, r.registered_on))
    refs: dict[str, list[tuple[str, str]]] = {}
    for f in plan.referrals:
        refs.setdefault(f.person_key, []).append((f.referral_id, f.authority))
    places: dict[str, list[feed.Placed]] = {}
    for p in plan.placements:
        places.setdefault(p.person_key, []).append(feed.Placed(p.placement_id, p.placed_on, p.site_authority))
    retention = {(t.placement_id, t.checkpoint_months, t.person_key): t.arrived_at for t in plan.retention}
    return feed.FeedState(
        regs,
        refs,
        places,
        retention,
        {(c.person_key, c.record.consent_id): c.record.version for c in plan.consents},
    )


class TestFeedPlanning(PlanningCases):
    def outcome(self, batch: Sequence[Incoming], kept: Sequence[Incoming] = ()) -> Outcome:
        plan = feed.plan_batch(batch, feed_state(kept))
        ids = {r.event_id for r in plan.registrations}
        keys = {*(r.referral_id for r in plan.referrals), *(p.placement_id for p in plan.placements)}
        keys |= {(t.placement_id, t.checkpoint_months, t.person_key) for t in plan.retention}  # type: ignore[arg-type]
        applied = []
        for e in batch:
            key = e.data.get("referral_id") if e.family == "referral" else e.data.get("placement_id")
            if e.family == "retention":
                key = (e.data["placement_id"], e.data["checkpoint_months"], e.person_key)
            if (e.event_id in ids or key in keys) and e.event_id not in applied:
                applied.append(e.event_id)
                keys.discard(key)
        return Outcome(tuple(applied), {c.record.consent_id: c.record.version for c in plan.consents})

    def test_the_first_report_of_a_placement_wins(self) -> None:
        plan = feed.plan_batch(
            [
                placement("e1", pk(1), placement_id="P"),
                placement("e2", pk(1), placement_id="P", on="2025-06-01"),
            ],
            feed_state([]),
        )
        assert [(p.placement_id, p.placed_on) for p in plan.placements] == [("P", date(2025, 5, 12))]

    def test_the_retention_checkpoint_sent_last_wins(self) -> None:
        kept = [placement("e1", pk(1), placement_id="P"), retention("t1", pk(1), "P", at=5)]
        older, newer = retention("t0", pk(1), "P", at=1), retention("t2", pk(1), "P", at=9)
        assert feed.plan_batch([older], feed_state(kept)).retention == ()
        assert [t.arrived_at for t in feed.plan_batch([newer], feed_state(kept)).retention] == [newer.time]

    def test_a_placement_marks_its_month_and_cohorts_for_every_authority_holding_the_person(self) -> None:
        kept = [referral("e1", pk(1), authority="112038")]
        plan = feed.plan_batch([placement("e2", pk(1), on="2025-11-12")], feed_state(kept))
        assert sorted(plan.marks) == sorted(
            feed.Mark(a, m)
            for a in ("112038", "131041")
            for m in ("2025-11", "2025-12", "2026-02", "2026-05")
        )

    def test_a_late_referral_marks_the_feeds_of_the_person_it_now_holds(self) -> None:
        kept = [registration("e1", pk(1), authority="112038"), placement("e2", pk(1))]
        plan = feed.plan_batch([referral("e3", pk(1), authority="112038")], feed_state(kept))
        months = ["2025-05", "2025-06", "2025-08", "2025-11"]
        assert sorted(plan.marks) == sorted(
            [feed.Mark("112038", m) for m in months] + [feed.Mark("112038", "2025-05")]
        )

    def test_a_registration_marks_its_month_and_retention_its_cohort(self) -> None:
        kept = [placement("e1", pk(1), placement_id="P", on="2025-12-31")]
        plan = feed.plan_batch([registration("e2", pk(2), on="2025-04-30"), retention("t", pk(1), "P", months=3)],
                               feed_state(kept))  # fmt: skip
        assert sorted(plan.marks) == [feed.Mark("131041", "2025-04"), feed.Mark("131041", "2026-03")]

    def test_team_support_enrolled_later_marks_the_month_of_the_enrolment(self) -> None:
        plan = feed.plan_batch([referral("e1", pk(1), team_support_from="2025-09-10")], feed_state([]))
        assert plan.marks == (feed.Mark("131041", "2025-09"),)
        assert plan.referrals[0].team_support_from == date(2025, 9, 10)

    def test_programme_fields_are_kept_and_optional_ones_default(self) -> None:
        plan = feed.plan_batch(
            [
                registration("e1", pk(1)),
                registration("e2", pk(2), foreign_national=True, prior_application_office="1302"),
            ],
            feed_state([]),
        )
        first, second = plan.registrations
        assert (first.foreign_national, first.prior_application_office) == (False, None)
        assert (second.foreign_national, second.prior_application_office) == (True, "1302")
        assert (first.attributes, first.sex, first.age_band) == (["public_assistance"], "female", "35-39")

    # Each fact is kept by its own key (the registration's event id, the referral's and placement's ids with
    # their person, the checkpoint), the first report winning, across batches: so within one as well. Event
    # ids are the hub's; a record of another family repeating one (a forger's, on the topic) used to hide
    # the fact from its batch alone (``once_each`` de-duplicated every family together), so a batch planned
    # otherwise than its records one batch after the other, and replay could differ from live.

    @pytest.mark.parametrize(
        ("first", "second"),
        [(a, b) for a in ("registration", "referral", "placement", "retention")
         for b in ("registration", "referral", "placement", "retention") if a != b],
    )  # fmt: skip
    def test_facts_of_other_families_sharing_an_event_id_are_planned_as_apart(
        self, first: str, second: str
    ) -> None:
        made = {
            "registration": lambda p: registration("x", p),
            "referral": lambda p: referral("x", p, referral_id=f"r-{p}"),
            "placement": lambda p: placement("x", p, placement_id=f"p-{p}"),
            "retention": lambda p: retention("x", p, "P"),
        }
        kept = [placement("e1", pk(1), placement_id="P"), placement("e2", pk(2), placement_id="P")]
        forged, real = made[first](pk(2)), made[second](pk(1))

        def facts(plan: feed.FeedPlan) -> set[tuple[Any, ...]]:
            return {
                *(("registration", r.event_id, r.person_key) for r in plan.registrations),
                *(("referral", r.referral_id, r.person_key) for r in plan.referrals),
                *(("placement", r.placement_id, r.person_key) for r in plan.placements),
                *(("retention", r.placement_id, r.person_key) for r in plan.retention),
            }

        apart = facts(feed.plan_batch([forged], feed_state(kept)))
        apart |= facts(feed.plan_batch([real], feed_state([*kept, forged])))
        assert {(first, pk(2)), (second, pk(1))} == {(f[0], f[2]) for f in apart}  # both kept, apart
        assert facts(feed.plan_batch([forged, real], feed_state(kept))) == apart

    def test_the_first_registration_of_an_event_id_wins_within_a_batch_as_across_batches(self) -> None:
        # kept by event id alone (``feed_registrations``' key): the second is dropped by the store then
        first, second = registration("x", pk(2), authority="112038"), registration("x", pk(1))
        assert feed.plan_batch([second], feed_state([first])).registrations == ()
        assert [r.person_key for r in feed.plan_batch([first, second], feed_state([])).registrations] == [
            pk(2)
        ]

    def test_facts_of_one_batch_see_each_other(self) -> None:
        # registration, referral, placement and retention of one person in one batch, nothing kept before
        batch = [
            registration("e1", pk(1), authority="112038"), referral("e2", pk(1), authority="112038"),
            placement("e3", pk(1), placement_id="P"), retention("t", pk(1), "P", months=1),
        ]  # fmt: skip
        cohorts = ["2025-05", "2025-06", "2025-08", "2025-11"]
        expected = [feed.Mark(a, m) for m in cohorts for a in ("112038", "131041")]  # placement, both owners
        expected += [feed.Mark("112038", "2025-05")]  # registration
        expected += [feed.Mark("112038", m) for m in cohorts] + [feed.Mark("112038", "2025-05")]  # referral
        expected += [feed.Mark("112038", "2025-06"), feed.Mark("131041", "2025-06")]  # retention, 1 month on
        assert sorted(feed.plan_batch(batch, feed_state([])).marks) == sorted(expected)

    def test_rows_carry_each_fact_as_it_arrived(self) -> None:
        batch = [
            registration("e1", pk(1)), referral("e2", pk(1), authority="112038"),
            placement("e3", pk(1), placement_id="P"), retention("t", pk(1), "P", months=3, at=2),
        ]  # fmt: skip
        plan = feed.plan_batch(batch, feed_state([]))
        assert plan.registrations == (feed.RegistrationRow(
            "e1", pk(1), "131041", "131041-01", date(2025, 5, 1), True, SEALED, T0, ["public_assistance"],
            "female", "35-39", False, None,
        ),)  # fmt: skip
        assert plan.referrals == (
            feed.ReferralRow("r-e2", pk(1), "112038", "112038-01", date(2025, 4, 28), T0, None),
        )
        assert plan.placements == (feed.PlacementRow(
            "P", pk(1), "131041-01", "131041", date(2025, 5, 12), "hello_work_referral", "08", "MHLW-2022",
            "part_time", "female", "35-39", ["public_assistance"], SEALED, T0, False, "1301",
        ),)  # fmt: skip
        assert plan.retention == (
            feed.RetentionRow("P", 3, pk(1), "employed", date(2025, 6, 12), T0 + timedelta(minutes=2)),
        )

    def test_every_placement_of_a_batch_marks_its_feeds(self) -> None:
        batch = [placement("e1", pk(1), on="2025-05-12"), placement("e2", pk(2), on="2025-09-30")]
        months = {m.month for m in feed.plan_batch(batch, feed_state([])).marks}
        assert months == {
            "2025-05",
            "2025-06",
            "2025-08",
            "2025-11",
            "2025-09",
            "2025-10",
            "2025-12",
            "2026-03",
        }

    def test_a_placement_in_the_foreign_national_group_says_so(self) -> None:
        e = placement("e1", pk(1))
        marked = event("e1", "placement", {**e.data, "foreign_national": True})
        assert [p.foreign_national for p in feed.plan_batch([e, marked], feed_state([])).placements] == [
            False
        ]
        assert [p.foreign_national for p in feed.plan_batch([marked], feed_state([])).placements] == [True]

    def test_a_retention_checkpoint_sent_at_the_same_instant_does_not_replace(self) -> None:
        kept = [placement("e1", pk(1), placement_id="P"), retention("t1", pk(1), "P", at=5)]
        assert feed.plan_batch([retention("t2", pk(1), "P", at=5)], feed_state(kept)).retention == ()
        # within one batch, the later of two checkpoints wins whatever their order
        first, later = retention("t3", pk(1), "P", at=7), retention("t4", pk(1), "P", at=9)
        for batch in ([first, later], [later, first]):
            assert [t.arrived_at for t in feed.plan_batch(batch, feed_state(kept)).retention] == [later.time]

    def test_a_retention_naming_another_persons_placement_is_its_own_persons_and_marks_nothing(self) -> None:
        kept = [placement("e1", pk(1), placement_id="P"), retention("t1", pk(1), "P", at=5)]
        forged = retention(
            "t2", pk(2), "P", at=1
        )  # older than pk(1)'s: kept by placement alone, it was dropped
        plan = feed.plan_batch([forged], feed_state(kept))
        assert [(t.placement_id, t.person_key) for t in plan.retention] == [("P", pk(2))]
        assert plan.marks == ()  # it counts for no placement, so no feed changes with it
        # pk(1)'s own later checkpoint replaces pk(1)'s, not pk(2)'s
        own = retention("t3", pk(1), "P", at=9)
        state = feed_state([*kept, forged])
        assert [t.person_key for t in feed.plan_batch([own], state).retention] == [pk(1)]

    def test_a_placement_reusing_another_persons_id_is_kept_beside_it_in_either_order(self) -> None:
        squat, own = placement("e1", pk(2), placement_id="P"), placement("e2", pk(1), placement_id="P")
        for first, then in ((squat, own), (own, squat)):
            plan = feed.plan_batch([then], feed_state([first]))
            assert [(p.placement_id, p.person_key) for p in plan.placements] == [("P", then.person_key)]
            assert plan.marks  # it counts, for its own person
        # pk(1)'s checkpoint of P marks pk(1)'s placement's cohort, whoever reported P first
        plan = feed.plan_batch([retention("t1", pk(1), "P")], feed_state([squat, own]))
        assert plan.marks

    def test_a_referral_reusing_another_authoritys_id_is_kept_beside_it_in_either_order(self) -> None:
        squat = referral("e1", pk(2), authority="112038", referral_id="R")
        own = referral("e2", pk(1), referral_id="R")
        for first, then in ((squat, own), (own, squat)):
            plan = feed.plan_batch([then], feed_state([first]))
            assert [(r.referral_id, r.person_key) for r in plan.referrals] == [("R", then.person_key)]
            together = feed.plan_batch([first, then], feed_state([]))
            assert {(r.person_key, r.authority) for r in together.referrals} == {
                (pk(1), "131041"),
                (pk(2), "112038"),
            }

    def test_a_repeated_fact_marks_nothing(self) -> None:
        kept = [registration("e1", pk(1)), placement("e2", pk(1))]
        assert feed.plan_batch(kept, feed_state(kept)).marks == ()


@pytest.mark.parametrize(("day", "months", "expected"), [
    (date(2025, 1, 31), 0, "2025-01"), (date(2025, 1, 31), 1, "2025-02"), (date(2025, 12, 1), 1, "2026-01"),
    (date(2025, 7, 15), 6, "2026-01"), (date(2025, 6, 30), 6, "2025-12"),
])  # fmt: skip
def test_month_of(day: date, months: int, expected: str) -> None:
    assert feed.month_of(day, months) == expected


def test_effective_consent_is_the_one_signed_last() -> None:
    older = consent_record(consent("a", pk(1), 2, consent_id="c1").data)
    newer = consent_record(consent("b", pk(1), 3, consent_id="c2").data)
    assert effective([newer, older]) == newer
