"""The monthly placement feed on the real stack: simulated stream → outbox → Kafka → feed consumer →
PostgreSQL → revisions, checked against a recomputation written here from the raw submissions (it
shares no code with the builder), attacked for suppressed cells, and fetched over HTTP."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.optimize import Bounds, LinearConstraint, milp
from structlog.testing import capture_logs

from consumers.catchup import run_until_caught_up
from consumers.feed.api import create_feed_app
from consumers.feed.builder import build_month
from consumers.feed.delivery import deliver
from consumers.feed.projection import FeedProjection
from contracts.envelope import Family
from devtools.demo.adapters import add_demo_agreements, sites_of_stream
from devtools.simulator import SimulationConfig, is_late, simulate
from domain.calendar import JST, YearMonth
from domain.feed import MONOTONE_POPULATIONS
from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from infra.crypto import KeyStore
from producers.adapters.sites import add_sites
from producers.publish import publish_submissions
from producers.submission import Submission
from tests.helpers import read_topic

# Months no other test simulates, so the feed sees only this stream there.
CONFIG = SimulationConfig(
    authorities=3, months=3, seed=505, start_month="2021-10", registrations_per_site_month=40
)
MONTHS = [YearMonth(2021, 10), YearMonth(2021, 11), YearMonth(2021, 12)]
TOTAL = "計"
THRESHOLD = 3

pytestmark = pytest.mark.asyncio(loop_scope="session")


# --- the independent recomputation ---------------------------------------------------------------------


def _d(text: str) -> date:
    return date.fromisoformat(text)


def _month_of(d: date) -> YearMonth:
    return YearMonth(d.year, d.month)


def _last_day(m: YearMonth) -> date:
    nxt = date(m.year + (m.month == 12), m.month % 12 + 1, 1)
    return nxt - timedelta(days=1)


def _add(m: YearMonth, k: int) -> YearMonth:
    y, mm = divmod(m.year * 12 + m.month - 1 + k, 12)
    return YearMonth(y, mm + 1)


def in_revision_1(m: YearMonth) -> Callable[[Submission], bool]:
    """Revision 1 was built at the cutoff from the first round: sent by the cutoff day and not held back."""
    nxt = _add(m, 1)
    cutoff = date(nxt.year, nxt.month, 5)
    return lambda s: s.time.astimezone(JST).date() <= cutoff and not is_late(s)


def everything(_: Submission) -> bool:
    return True


WELFARE = {"public_assistance", "child_rearing_allowance", "housing_benefit", "needy_person_support"}
GROUPS = (
    "welfare",
    "disability",
    "parenting",
    "youth",
    "women",
    "middle_aged",
    "foreign",
    "general",
    "other",
)


def groups_of(d: dict[str, Any]) -> set[str]:
    """The report's target groups (~l.909–919, 871, 983), as docs/feed.md defines them."""
    attrs, out = set(d["attributes"]), set()
    if attrs & WELFARE:
        out.add("welfare")
    if "disability" in attrs:
        out.add("disability")
    if attrs & {"parenting", "child_rearing_allowance"}:
        out.add("parenting")
    if "youth" in attrs or d["age_band"] in ("19以下", "20-24", "25-29", "30-34"):
        out.add("youth")
    if d.get("foreign_national"):
        out.add("foreign")
    if "general" in attrs:
        out.add("general")
    if not out:
        out.add("other")
    if d["sex"] == "female":
        out.add("women")
    if d["age_band"] in ("45-49", "50-54", "55-59", "60-64", "65以上"):
        out.add("middle_aged")
    return out


def _flags(d: dict[str, Any]) -> dict[str, str]:
    g = groups_of(d)
    return {f"group:{x}": "yes" if x in g else "no" for x in GROUPS}


def expected_figures(
    subs: list[Submission], authority: str, m: YearMonth, sent: Callable[[Submission], bool]
) -> tuple[dict[str, int], set[str]]:
    """Raw (unsuppressed) value of every table cell and count indicator, and the counted placements."""
    seen = [s for s in subs if sent(s)]
    first, end = date(m.year, m.month, 1), _last_day(m)
    referred_by: dict[str, set[str]] = defaultdict(set)
    for s in seen:
        if s.family is Family.REFERRAL and _d(s.data["referred_on"]) <= end:
            referred_by[s.data["person_key"]].add(s.data["authority"])
    own_sites = sorted(
        {s.data["site"][7:] for s in seen if "site" in s.data and s.data["site"][:6] == authority}
    )

    def counted(p: dict[str, Any]) -> bool:
        return p["site"][:6] == authority or authority in referred_by[p["person_key"]]

    def site_of(site: str) -> str:
        return site[7:] if site[:6] == authority else "other_sites"

    placements = [s.data for s in seen if s.family is Family.PLACEMENT and counted(s.data)]
    this_month = [p for p in placements if _month_of(_d(p["placed_on"])) == m]
    referral = [
        {"site": site_of(p["site"]), "sex": p["sex"], "age_band": p["age_band"],
         "occupation": p["occupation"]["group"], "employment_type": p["employment_type"], **_flags(p)}
        for p in this_month
        if p["route"] == "hello_work_referral"
    ]  # fmt: skip
    self_found = [
        {"site": site_of(p["site"]), "employment_type": p["employment_type"]}
        for p in this_month
        if p["route"] == "self_found"
    ]
    new = [
        {"site": s.data["site"][7:], "referred": "yes" if authority in referred_by[s.data["person_key"]] else "no",
         **_flags(s.data)}
        for s in seen
        if s.family is Family.REGISTRATION
        and s.data["authority"] == authority
        and _month_of(_d(s.data["registered_on"])) == m
        and not s.data.get("prior_application_office")
    ]  # fmt: skip
    # Team support: each person's first enrolment with the authority, counted in its month.
    enrolments: dict[str, tuple[date, int, str]] = {}
    for s in seen:
        d = s.data
        if s.family is Family.REGISTRATION and d["authority"] == authority and d["team_support"]:
            e = (_d(d["registered_on"]), 0, d["site"])
        elif s.family is Family.REFERRAL and d["authority"] == authority and d.get("team_support_from"):
            e = (_d(d["team_support_from"]), 1, d["site"])
        else:
            continue
        if e[0] <= end and (d["person_key"] not in enrolments or e < enrolments[d["person_key"]]):
            enrolments[d["person_key"]] = e
    team = [
        {"site": site[7:], "enrolment": "at_registration" if later == 0 else "after_registration"}
        for since, later, site in enrolments.values()
        if first <= since <= end
    ]
    status: dict[tuple[str, int], tuple[datetime, str]] = {}
    for s in seen:
        if s.family is Family.RETENTION:
            key = (s.data["placement_id"], s.data["checkpoint_months"])
            if key not in status or s.time > status[key][0]:
                status[key] = (s.time, s.data["status"])
    retention: dict[int, list[dict[str, str]]] = {}
    for k in (1, 3, 6):
        retention[k] = []
        for p in placements:
            if _month_of(_d(p["placed_on"])) == _add(m, -k):
                st = status.get((p["placement_id"], k))
                retention[k].append({"site": site_of(p["site"]), "status": st[1] if st else "not_reported"})
    out: dict[str, int] = {}
    group_dims = [f"group:{g}" for g in GROUPS]
    populations: dict[str, tuple[list[dict[str, str]], list[str], list[tuple[str, str]]]] = {
        "referral_placements": (
            referral,
            ["sex", "age_band", "occupation", "employment_type", *group_dims],
            [("occupation", "sex"), ("age_band", "sex"), ("employment_type", "sex")],
        ),
        "self_found_placements": (self_found, ["employment_type"], []),
        "new_job_seekers": (new, ["referred", *group_dims], []),
        "team_support": (team, ["enrolment"], []),
        **{f"retention_{k}m": (retention[k], ["status"], []) for k in (1, 3, 6)},
    }
    for population, (recs, one_way, cross) in populations.items():
        tables: list[tuple[str, ...]] = [(d,) for d in one_way] + cross + [("site", d) for d in one_way]
        for dims in tables:
            name = f"{population}: {' × '.join(dims)}"
            for cell in _keys(dims, recs, own_sites):
                out[f"{name}[{', '.join(cell)}]"] = sum(
                    all(k == TOTAL or r[d] == k for d, k in zip(dims, cell, strict=True)) for r in recs
                )
    out["indicator: referral_placements"] = len(referral)
    out["indicator: self_found_placements"] = len(self_found)
    out["indicator: confirmed_placements"] = len(referral) + len(
        self_found
    )  # beside 就職件数, never in 就職率
    out["indicator: regular_placements"] = sum(r["employment_type"] == "regular_full_time" for r in referral)
    out["indicator: new_job_seekers"] = len(new)
    out["indicator: referred_by_authority"] = sum(r["referred"] == "yes" for r in new)
    out["indicator: team_support"] = len(team)
    for k in (1, 3, 6):
        out[f"indicator: retention_{k}m_cohort"] = len(retention[k])
        out[f"indicator: retention_{k}m_employed"] = sum(r["status"] == "employed" for r in retention[k])
    for g in GROUPS:
        out[f"indicator: by_group.{g}.referral_placements"] = sum(groups_of_rec(r, g) for r in referral)
        out[f"indicator: by_group.{g}.new_job_seekers"] = sum(groups_of_rec(r, g) for r in new)
    return out, {p["placement_id"] for p in this_month}


def groups_of_rec(r: dict[str, str], g: str) -> bool:
    return r[f"group:{g}"] == "yes"


def _keys(dims: tuple[str, ...], recs: list[dict[str, str]], sites: list[str]) -> Iterable[tuple[str, ...]]:
    cats = {d: [*sorted({r[d] for r in recs} | ({*sites} if d == "site" else set())), TOTAL] for d in dims}
    if len(dims) == 1:
        return [(c,) for c in cats[dims[0]]]
    return [(a, b) for a in cats[dims[0]] for b in cats[dims[1]]]


def published(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tables in body["populations"].values():
        for t in tables:
            for key, value, _ in t["cells"]:
                out[f"{t['name']}[{', '.join(key)}]"] = value

    def flat(prefix: str, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if isinstance(value, dict):
                flat(f"{prefix}{name}.", value)
            else:
                out[f"{prefix}{name}"] = value

    flat("indicator: ", body["indicators"]["authority"])
    return out


# --- the stream, published in two rounds -------------------------------------------------------------


@dataclass
class Fed:
    subs: list[Submission]
    rev1: dict[tuple[str, str], dict[str, Any]]
    latest: dict[tuple[str, str], asyncpg.Record]
    authorities: list[str]


@pytest.fixture(scope="module")
async def fed(pool: asyncpg.Pool, settings: Settings) -> Fed:
    subs = list(simulate(CONFIG))
    async with pool.acquire() as conn:  # the registry and the agreements (A2) the individual list needs
        sites = sites_of_stream(subs)
        await add_sites(conn, [(site, office, "") for site, office in sorted(sites.items())])
        await add_demo_agreements(conn, sites)
    early = [s for s in subs if not is_late(s)]
    late = [s for s in subs if is_late(s)]
    assert late, "the seed must produce placements reported after the cutoff"
    await publish_submissions(settings, pool, early, origin="test-feed")
    await run_until_caught_up(FeedProjection(settings), settings, pool)
    for m in MONTHS:  # as the builder would at each cutoff: revision 1 only
        await build_month(pool, settings, m, now=_cutoff(m))
    # The session's database also holds other modules' feeds (other months): read only this stream's.
    months = [str(m) for m in MONTHS]
    rows = await pool.fetch(
        "SELECT authority, month, body FROM feed_revisions WHERE revision = 1 AND month = ANY($1)", months
    )
    rev1 = {(r["authority"], r["month"]): r["body"] for r in rows}
    await publish_submissions(settings, pool, late, origin="test-feed-late")
    await run_until_caught_up(FeedProjection(settings), settings, pool)
    for m in MONTHS:
        await build_month(pool, settings, m)
    latest = await pool.fetch(
        "SELECT DISTINCT ON (authority, month) * FROM feed_revisions WHERE month = ANY($1) "
        "ORDER BY authority, month, revision DESC",
        months,
    )
    authorities = sorted({s.data["authority"] for s in subs if s.family is Family.REGISTRATION})
    return Fed(subs, rev1, {(r["authority"], r["month"]): r for r in latest}, authorities)


def _cutoff(m: YearMonth) -> datetime:
    nxt = _add(m, 1)
    return datetime(nxt.year, nxt.month, 6, tzinfo=JST).astimezone(UTC)


def _feeds(fed: Fed) -> list[tuple[str, YearMonth]]:
    return [(a, m) for a in fed.authorities for m in MONTHS]


# --- tests -------------------------------------------------------------------------------------------


async def test_feed_numbers_equal_an_independent_recomputation(fed: Fed) -> None:
    checked = hidden = 0
    for a, m in _feeds(fed):
        for body, sent in (
            (fed.rev1[(a, str(m))], in_revision_1(m)),
            (fed.latest[(a, str(m))]["body"], everything),
        ):
            expected, ids = expected_figures(fed.subs, a, m, sent)
            for name, value in published(body).items():
                if name.endswith(("share", "rate")):
                    continue
                if value is None:
                    hidden += 1
                    continue
                # A cell the recomputation never met counts nobody: 0.
                assert value == expected.get(name, 0), (a, str(m), name)
                checked += 1
            # Every cell the recomputation has is in the feed (none missing), zeros included.
            missing = {n for n, v in expected.items() if v and n not in published(body)}
            assert not missing, sorted(missing)[:5]
        assert sorted(fed.latest[(a, str(m))]["placement_ids"]) == sorted(ids)
    assert checked > 1000 and hidden > 0


async def test_late_events_make_revision_2_with_the_right_change_summary(
    fed: Fed, pool: asyncpg.Pool
) -> None:
    late_months = {
        (p.data["site"][:6], str(_month_of(_d(p.data["placed_on"])))) for p in fed.subs if is_late(p)
    }
    assert late_months
    for a, m in _feeds(fed):
        row = fed.latest[(a, str(m))]
        before, ids1 = expected_figures(fed.subs, a, m, in_revision_1(m))
        after, ids2 = expected_figures(fed.subs, a, m, everything)
        if (a, str(m)) in late_months:
            assert row["revision"] == 2, (a, str(m))
        if row["revision"] == 1:
            assert ids1 == ids2
            continue
        assert row["revision"] == 2
        rev1, rev2 = published(fed.rev1[(a, str(m))]), published(row["body"])
        summary = {c["figure"]: c for c in row["changes"]}
        for name in rev2:
            if name.endswith(("share", "rate")):
                continue
            if rev1.get(name) is not None and before.get(name, 0) != after.get(name, 0):
                # A changed count is hidden in revision 2, and the summary says so without values.
                assert rev2[name] is None and summary[name] == {"figure": name, "change": "suppressed"}, name
            else:  # unchanged, or hidden in both: never mentioned, never a value
                assert name not in summary and rev2[name] == rev1.get(name), name
        assert any(c["change"] == "suppressed" for c in row["changes"])
        # Cells hidden in revision 1 stay hidden in revision 2.
        assert all(rev2[n] is None for n, v in rev1.items() if v is None and not n.startswith("indicator"))
    # Revisions are kept and both are on the feed topic; the topic carries aggregates only.
    records = await read_topic(Settings(), Settings().feed_topic)
    on_topic = Counter(r.key for r in records)
    two = [k for k, r in fed.latest.items() if r["revision"] == 2]
    assert two and all(on_topic[f"{a}:{m}".encode()] == 2 for a, m in two)
    names = {s.data["personal"]["name"] for s in fed.subs if s.family is Family.REGISTRATION}
    blob = b"".join(r.value for r in records)
    assert not any(n.encode() in blob for n in list(names)[:200])
    count = await pool.fetchval(
        "SELECT count(*) FROM feed_revisions WHERE revision = 1 AND month = ANY($1)", [str(m) for m in MONTHS]
    )
    assert count == len(_feeds(fed))


# --- disclosure attack ----------------------------------------------------------------------------------


Quantity = tuple[int, frozenset[tuple[str, str]]]  # (revision index, what the cell counts)


def _attack(*revisions: list[dict[str, Any]], monotone: bool = False) -> list[str]:
    """Bound every hidden cell with integer programming from what is published; return the breaches.

    With several revisions of one feed, all of them are used at once, and with ``monotone`` the
    attacker also knows that later revisions only add people (each count can only grow).
    """
    value: dict[Quantity, int | None] = {}
    label: dict[Quantity, str] = {}
    eqs: list[tuple[Quantity, list[Quantity]]] = []
    for n, tables in enumerate(revisions):
        for t in tables:
            dims = t["dims"]
            cells = {tuple(k): v for k, v, _ in t["cells"]}

            def q_of(key: tuple[str, ...], dims: list[str] = dims, n: int = n) -> Quantity:
                return (n, frozenset((d, c) for d, c in zip(dims, key, strict=True) if c != TOTAL))

            for key, v in cells.items():
                q = q_of(key)
                label.setdefault(q, f"r{n + 1} {t['name']}[{', '.join(key)}]")
                if v is not None:
                    assert value.get(q) in (None, v)
                    value[q] = v
                else:
                    value.setdefault(q, None)
            cats = [sorted({k[a] for k in cells if k[a] != TOTAL}) for a in range(len(dims))]
            if len(dims) == 1:
                eqs.append((q_of((TOTAL,)), [q_of((c,)) for c in cats[0]]))
            else:
                for r in [*cats[0], TOTAL]:
                    eqs.append((q_of((r, TOTAL)), [q_of((r, c)) for c in cats[1]]))
                for c in [*cats[1], TOTAL]:
                    eqs.append((q_of((TOTAL, c)), [q_of((r, c)) for r in cats[0]]))
    hidden = [q for q, v in value.items() if v is None]
    if not hidden:
        return []
    col = {q: n for n, q in enumerate(hidden)}
    rows, lower, upper = [], [], []

    def add(terms: list[tuple[Quantity, float]], lo: float, hi: float) -> None:
        row = np.zeros(len(hidden))
        b = 0.0
        for q, sign in terms:
            if q in col:
                row[col[q]] += sign
            else:
                b -= sign * value[q]  # type: ignore[operator]
        if row.any():
            rows.append(row)
            lower.append(lo + b)
            upper.append(hi + b)

    for total, parts in eqs:
        add([(total, 1.0), *((p, -1.0) for p in parts)], 0.0, 0.0)
    if monotone:
        for n in range(1, len(revisions)):
            for m, what in list(value):
                if m == n and (n - 1, what) in value:
                    add([((n, what), 1.0), ((n - 1, what), -1.0)], 0.0, np.inf)
    cap = 10 * max((v or 0) for v in value.values()) + 100
    constraint = LinearConstraint(np.array(rows), lower, upper)
    breaches = []
    for q in hidden:
        c = np.zeros(len(hidden))
        c[col[q]] = 1
        lo = milp(c, constraints=constraint, integrality=np.ones(len(hidden)), bounds=Bounds(0, cap))
        hi = milp(-c, constraints=constraint, integrality=np.ones(len(hidden)), bounds=Bounds(0, cap))
        assert lo.status == 0 and hi.status == 0
        low, high = round(lo.fun), round(-hi.fun)
        if low == high or (low >= 1 and high < THRESHOLD):
            breaches.append(f"{label[q]}: {low}..{high}")
    return breaches


async def test_no_suppressed_cell_can_be_recovered_from_a_feed_and_its_revisions(
    fed: Fed, pool: asyncpg.Pool
) -> None:
    """Each feed's revisions are attacked together (so comparing revisions is covered); for placements
    the attacker also knows that a later revision only adds people. Registrations and retention are
    not monotone (a late referral or checkpoint moves a person between cells)."""
    rows = await pool.fetch(
        "SELECT authority, month, revision, body FROM feed_revisions WHERE month = ANY($1) ORDER BY revision",
        [str(m) for m in MONTHS],
    )
    revisions: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        revisions[(r["authority"], r["month"])].append(r["body"])
    attacked = compared = 0
    for (a, m), bodies in revisions.items():
        compared += len(bodies) > 1
        for group in bodies[0]["populations"]:
            tables = [b["populations"][group] for b in bodies]
            attacked += sum(c[1] is None for ts in tables for t in ts for c in t["cells"])
            assert _attack(*tables, monotone=group in MONOTONE_POPULATIONS) == [], (a, m, group)
    assert attacked > 500 and compared >= 4


async def test_attacker_finds_a_cell_left_recoverable() -> None:
    """The attack can fail the test: hide one cell of a one-way table and nothing else."""
    tables = [
        {
            "name": "t",
            "dims": ["sex"],
            "cells": [[["male"], 5, None], [["female"], None, "primary"], [[TOTAL], 7, None]],
        }
    ]
    assert _attack(tables) == ["r1 t[female]: 2..2"]
    # Several revisions are attacked together.
    rev1 = [
        {
            "name": "t",
            "dims": ["sex"],
            "cells": [[["male"], None, "p"], [["female"], None, "p"], [[TOTAL], 3, None]],
        }
    ]
    rev2 = [
        {
            "name": "t",
            "dims": ["sex"],
            "cells": [[["male"], None, "p"], [["female"], 1, None], [[TOTAL], 4, None]],
        }
    ]
    assert _attack(rev1) == []
    assert _attack(rev1, rev2, monotone=True) == ["r2 t[male]: 3..3"]


# --- individual list and consent ---------------------------------------------------------------------------


def _consents_grant(subs: list[Submission], person: str, authority: str, on: date) -> bool:
    latest: dict[str, dict[str, Any]] = {}
    for s in subs:
        if s.family is Family.CONSENT and s.data["person_key"] == person:
            cid = s.data["consent_id"]
            if cid not in latest or s.data["version"] > latest[cid]["version"]:
                latest[cid] = s.data
    if not latest:
        return False
    eff = max(
        latest.values(), key=lambda d: (datetime.fromisoformat(d["captured"]["signed_at"]), d["version"])
    )
    return (
        eff["action"] != "withdrawn"
        and "disclose_placement" in eff["scopes"]
        and {"kind": "authority", "code": authority} in eff["recipients"]
        and _d(eff["valid_from"]) <= on
        and (eff.get("valid_until") is None or on <= _d(eff["valid_until"]))
    )


async def test_person_without_disclosure_consent_never_in_individual_list(
    fed: Fed, pool: asyncpg.Pool, settings: Settings
) -> None:
    keystore = KeyStore.from_settings(settings)
    name_of = {
        s.data["person_key"]: s.data["personal"]["name"] for s in fed.subs if s.family is Family.REGISTRATION
    }
    placements = {s.data["placement_id"]: s.data for s in fed.subs if s.family is Family.PLACEMENT}
    without_consent = 0
    for a, m in _feeds(fed):
        row = fed.latest[(a, str(m))]
        async with pool.acquire() as conn:
            delivery = await deliver(conn, keystore, a, str(m))
        got = Counter((i.name, i.employer, i.start_date) for i in delivery.individuals)
        expected: Counter[tuple[str, str, date]] = Counter()
        refused: set[tuple[str, str, date]] = set()
        for pid in row["placement_ids"]:
            p = placements[pid]
            entry = (name_of[p["person_key"]], p["personal"]["employer_name"], _d(p["placed_on"]))
            if _consents_grant(fed.subs, p["person_key"], a, _d(p["placed_on"])):
                expected[entry] += 1
            else:
                refused.add(entry)
        without_consent += len(refused)
        assert got == expected, (a, str(m))
        assert not refused & set(got)
    assert without_consent > 0, "the stream must contain placed people without disclosure consent"


# --- HTTP download: scoped and recorded --------------------------------------------------------------------


async def test_an_authority_cannot_fetch_another_authoritys_feed(
    fed: Fed, pool: asyncpg.Pool, settings: Settings
) -> None:
    own, other = fed.authorities[0], fed.authorities[1]
    month = "2021-11"
    async with pool.acquire() as conn:
        own_id, own_token = await add_client(
            conn, name="own", org_kind=OrgKind.AUTHORITY, org_code=own, roles=frozenset({Role.READ})
        )
        other_id, other_token = await add_client(
            conn, name="other", org_kind=OrgKind.AUTHORITY, org_code=other, roles=frozenset({Role.READ})
        )
    with TestClient(create_feed_app(settings)) as client:
        denied = client.get(f"/feeds/{own}/{month}", headers={"Authorization": f"Bearer {other_token}"})
        ok = client.get(f"/feeds/{own}/{month}", headers={"Authorization": f"Bearer {own_token}"})
        csv_resp = client.get(
            f"/feeds/{own}/{month}",
            params={"format": "csv", "part": "individuals", "encoding": "cp932"},
            headers={"Authorization": f"Bearer {own_token}"},
        )
        anonymous = client.get(f"/feeds/{own}/{month}")
    assert denied.status_code == 403 and "own authority" in denied.json()["error"]
    assert anonymous.status_code == 401
    assert ok.status_code == 200
    assert ok.json()["feed"]["authority"] == own and ok.json()["individual_list"]["entries"]
    assert csv_resp.status_code == 200 and b"\r\n" in csv_resp.content
    csv_resp.content.decode("cp932")  # opens as CP932
    log = await pool.fetch(
        "SELECT * FROM feed_access_log WHERE authority = $1 AND month = $2 ORDER BY id", own, month
    )
    by_client = {(r["client_id"], r["outcome"]) for r in log}
    assert (other_id, "denied") in by_client and (own_id, "granted") in by_client
    granted = next(r for r in log if r["client_id"] == own_id)
    assert granted["person_keys"] and "name" in granted["fields"] and granted["purpose"]
    denied_row = next(r for r in log if r["client_id"] == other_id)
    assert denied_row["organisation"] == f"authority:{other}" and denied_row["person_keys"] == []


# --- erasure leaves nothing (issue 10) -------------------------------------------------------------------


async def test_after_erasure_the_person_is_nowhere(
    fed: Fed, pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    """The feed API keeps unwrapped data keys in memory: before, the next download after ``hub erase``
    still showed the person's name and employer. Now, after ``hub erase`` (its own process, as an operator
    runs it) and its ``ittai.erasure.v1`` event consumed by every consumer: nowhere — database dump, every
    topic's raw bytes, the feed downloaded again from the same process, an export made after erasure, the
    logs; and the running API's key cache has let the key go (it followed the event: the erasure ran in
    another process). Before the event, an erasure left the key in the API's memory for good."""
    from consumers.event_log import EventLogHandler
    from consumers.feed.exports import export_feed
    from consumers.shared_view.handler import SharedViewHandler
    from producers.outbox import OutboxRelay
    from tests.helpers import wait_for
    from tests.integration.test_shared_view import pg_dump

    authority, month = fed.authorities[0], "2021-11"
    async with pool.acquire() as conn:
        _, reader = await add_client(
            conn, name="erasure", org_kind=OrgKind.AUTHORITY, org_code=authority, roles=frozenset({Role.READ})
        )
    headers = {"Authorization": f"Bearer {reader}"}
    with capture_logs() as logs, TestClient(create_feed_app(settings)) as client:
        app_state = client.app.state  # type: ignore[attr-defined]
        # Positioned at the erasure topic's end (it empties the caches then), before the key is cached.
        await wait_for(lambda: _value(app_state.erasure_follower.ready.is_set()), until=bool)
        before = client.get(f"/feeds/{authority}/{month}", headers=headers).json()
        entry = before["individual_list"]["entries"][0]
        name, employer = entry["name"], entry["employer"]
        person = next(
            s.data["person_key"]
            for s in fed.subs
            if s.family is Family.REGISTRATION and s.data["personal"]["name"] == name
        )
        assert app_state.keystore.holds(person), "control: the API keeps the person's key in memory"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM feed_consents WHERE person_key = $1", person)
        hub_erase = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli", "erase", person, "--by", "test",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await hub_erase.communicate()
        erased = (out + err).decode()
        assert hub_erase.returncode == 0, erased
        assert person in erased and "erasure event" in erased
        async with pool.acquire() as conn:
            # Nothing of the person's consents is left to decide a later delivery by (issue 10).
            assert not await conn.fetchval("SELECT count(*) FROM feed_consents WHERE person_key = $1", person)
            event_id = await conn.fetchval(
                "SELECT event_id FROM outbox WHERE topic = $1 AND key = $2",
                settings.topic(Family.ERASURE),
                person.encode(),
            )
        assert event_id, "the erasure is an event in the outbox"
        relay = OutboxRelay(settings, pool)
        try:
            await relay.drain()
        finally:
            await relay.close()
        for handler in (EventLogHandler(settings), FeedProjection(settings), SharedViewHandler(settings)):
            await run_until_caught_up(handler, settings, pool)
        # Every service keeping keys forgets this one: the API followed the erasure topic.
        await wait_for(lambda: _value(app_state.keystore.holds(person)), until=lambda held: not held)
        assert app_state.erasure_follower.forgotten >= 1
        after = client.get(f"/feeds/{authority}/{month}", headers=headers)
        csv_after = client.get(
            f"/feeds/{authority}/{month}", params={"format": "csv", "part": "individuals"}, headers=headers
        )
    async with pool.acquire() as conn:
        logged = await conn.fetchrow(
            "SELECT family, source, data FROM event_log WHERE event_id = $1", event_id
        )
        sealed_left = await conn.fetchval(
            "SELECT count(*) FROM (SELECT personal FROM feed_registrations WHERE person_key = $1 UNION ALL "
            "SELECT personal FROM feed_placements WHERE person_key = $1) p WHERE personal <> 'null'::jsonb",
            person,
        )
        statistics_kept = await conn.fetchval(
            "SELECT count(*) FROM feed_placements WHERE person_key = $1", person
        )
    assert logged["family"] == "erasure" and logged["source"] == "/hub/operator"
    assert set(logged["data"]) == {"person_key", "erasure_id", "erased_at", "key_id", "signature"}, (
        "no personal data"
    )
    assert sealed_left == 0, "the feed consumer dropped the individual list's material"
    assert statistics_kept >= 1, "the counted facts stay: erasure does not rewrite published statistics"
    assert after.status_code == 200 and csv_after.status_code == 200
    paths, _ = await export_feed(
        settings, pool, authority, month, tmp_path, format="csv", encoding="utf-8", purpose="t", who="t"
    )
    places: dict[str, bytes] = {
        "feed download": after.content,
        "feed csv": csv_after.content,
        "export": b"".join(p.read_bytes() for p in paths),
        "logs": repr(logs).encode(),
        "hub erase output": erased.encode(),
        "pg_dump": pg_dump(settings),
    }
    for topic in (*settings.event_topics, settings.deadletter_topic, settings.feed_topic):
        records = await read_topic(settings, topic)
        places[topic] = b"".join((r.value or b"") + b"".join(v for _, v in r.headers) for r in records)
    for marker in (name, employer):
        found = [where for where, content in places.items() if marker.encode() in content]
        assert not found, f"marker found after erasure in {found}"
    assert before["individual_list"]["entries"], "control: the person was in the list before erasure"


async def _value(value: Any) -> Any:
    return value


async def test_an_authority_may_opt_out_of_the_individual_list_and_an_agreement_is_needed(
    fed: Fed, pool: asyncpg.Pool, settings: Settings
) -> None:
    keystore = KeyStore.from_settings(settings)
    authority, month = fed.authorities[1], "2021-11"
    async with pool.acquire() as conn:
        assert (await deliver(conn, keystore, authority, month)).individuals, "control"
        await conn.execute(
            "INSERT INTO feed_individual_list_opt_outs (authority, by_whom) VALUES ($1, 'test')", authority
        )
        declined = await deliver(conn, keystore, authority, month)
        await conn.execute("DELETE FROM feed_individual_list_opt_outs WHERE authority = $1", authority)
        # A2: without an agreement in force, names and employers stay home; the aggregates still flow.
        ended = await conn.fetch(
            "UPDATE sharing_agreements SET valid_until = '2015-04-01' WHERE authority = $1 "
            "AND valid_until IS NULL RETURNING agreement_id",
            authority,
        )
        unagreed = await deliver(conn, keystore, authority, month)
        await conn.execute(
            "UPDATE sharing_agreements SET valid_until = NULL WHERE agreement_id = ANY($1::text[])",
            [r[0] for r in ended],
        )
    assert declined.declined and not declined.individuals and declined.body["populations"]
    assert not unagreed.individuals and unagreed.withheld_no_agreement > 0 and unagreed.body["populations"]
