"""A small feed with two revisions per month for the portal's tests (integration and browser).

Simulated stream → outbox → Kafka → feed consumer → revisions, in a topic namespace and months of its
own: revision 1 of each month at its cutoff, then the late events and revision 2 — so every month has a
history with a change summary. Also returns who may and who may never be named to each authority.

The months span two fiscal years (January to March 2023 close FY2022, April 2023 opens FY2023), and the
ministry's roll-ups are built from them (``hub feed rollup``): FY2022 through February (mid-year) and
through March (the year end, with achievement classes), FY2023 through April.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from consumers.catchup import run_until_caught_up
from consumers.feed.builder import build_month
from consumers.feed.projection import FeedProjection
from consumers.feed.rollup import build_rollup
from contracts.envelope import Family
from devtools.demo.adapters import add_demo_agreements, sites_of_stream
from devtools.simulator import SimulationConfig, is_late, simulate
from domain.calendar import JST, YearMonth
from domain.feed import shift_month
from infra.config import Settings
from infra.topics import ensure_topics
from producers.adapters.sites import add_sites
from producers.publish import publish_submissions
from producers.submission import Submission

CONFIG = SimulationConfig(
    authorities=2, months=4, seed=2301, start_month="2023-01", registrations_per_site_month=30
)
MONTHS = [YearMonth(2023, 1), YearMonth(2023, 2), YearMonth(2023, 3), YearMonth(2023, 4)]
# Roll-ups built: (fiscal year, through).
ROLLUPS = ((2022, YearMonth(2023, 2)), (2022, YearMonth(2023, 3)), (2023, YearMonth(2023, 4)))
# Yearly targets as steering councils set them, chosen so that at the year end some sites meet all, some
# one, some none: (referral placements, referral share, team support) by site, in turn.
TARGET_SETS = ((1, 0.01, 1), (1, 0.95, 60), (60, 0.95, 60))


@dataclass
class PortalFeed:
    subs: list[Submission]
    authorities: list[str]
    months: list[str]
    # Names of people placed in an authority's feed months whose consent records never name that
    # authority for disclose_placement (not even withdrawn later): no portal page may ever show them.
    never_consented: dict[str, set[str]]
    # (authority, month) whose latest revision is 2 or later and changed a published figure
    revised: list[tuple[str, str]]
    # Everybody's name, employer and case number in the stream (no roll-up page may show any of them)
    personal: set[str]


def _cutoff(m: YearMonth) -> datetime:
    nxt = shift_month(m, 1)
    return datetime(nxt.year, nxt.month, 6, tzinfo=JST).astimezone(UTC)


def _never_consented(subs: list[Submission], authority: str) -> set[str]:
    names = {
        s.data["person_key"]: s.data["personal"]["name"] for s in subs if s.family is Family.REGISTRATION
    }
    grants: set[str] = set()
    for s in subs:
        d: dict[str, Any] = s.data
        if (
            s.family is Family.CONSENT
            and "disclose_placement" in d["scopes"]
            and {"kind": "authority", "code": authority} in d["recipients"]
        ):
            grants.add(d["person_key"])
    placed = {
        s.data["person_key"] for s in subs if s.family is Family.PLACEMENT and s.data["site"][:6] == authority
    }
    return {names[p] for p in placed - grants if p in names}


async def build_portal_feed(pool: asyncpg.Pool, settings: Settings) -> PortalFeed:
    await ensure_topics(settings)
    subs = list(simulate(CONFIG))
    async with pool.acquire() as conn:  # the registry and the agreements (A2) the individual list needs
        sites = sites_of_stream(subs)
        await add_sites(conn, [(site, office, "") for site, office in sorted(sites.items())])
        await add_demo_agreements(conn, sites)
    early = [s for s in subs if not is_late(s)]
    late = [s for s in subs if is_late(s)]
    sites = sorted({s.data["site"] for s in subs if s.family is Family.REGISTRATION})
    authorities = sorted({s.data["authority"] for s in subs if s.family is Family.REGISTRATION})
    # Yearly targets for FY2022 (April 2022 to March 2023) and FY2023, per site and for each authority.
    await pool.executemany(
        "INSERT INTO feed_target_values (scope, fiscal_year, kind, value) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING",
        [
            (scope, fy, kind, value)
            for fy in (2022, 2023)
            for i, scope in enumerate([*sites, *authorities])
            for kind, value in zip(
                ("referral_placements", "referral_share", "team_support"), TARGET_SETS[i % 3], strict=True
            )
        ],
    )
    # A site new in FY2023 is left out of that year's evaluation, as the report does.
    await pool.execute(
        "INSERT INTO feed_evaluation_exclusions (scope, fiscal_year, reason) VALUES ($1, 2023, 'new site') "
        "ON CONFLICT DO NOTHING",
        sites[-1],
    )
    await publish_submissions(settings, pool, early, origin="test-portal")
    await run_until_caught_up(FeedProjection(settings), settings, pool)
    for m in MONTHS:
        await build_month(pool, settings, m, now=_cutoff(m))
    await publish_submissions(settings, pool, late, origin="test-portal-late")
    await run_until_caught_up(FeedProjection(settings), settings, pool)
    for m in MONTHS:
        await build_month(pool, settings, m)
    for fy, through in ROLLUPS:
        await build_rollup(pool, settings, fy, through)
    months = [str(m) for m in MONTHS]
    revised = await pool.fetch(
        "SELECT authority, month FROM feed_revisions WHERE month = ANY($1::text[]) AND revision >= 2 "
        "AND json_array_length(changes) > 0 ORDER BY authority, month",
        months,
    )
    return PortalFeed(
        subs,
        authorities,
        months,
        {a: _never_consented(subs, a) for a in authorities},
        [(r["authority"], r["month"]) for r in revised],
        {
            str(v)
            for s in subs
            for k, v in s.data.get("personal", {}).items()
            if k in ("name", "employer_name", "case_number")
        },
    )
