"""A round rebuilding a few feeds counts their rows, not the month's (issue 14: an incremental round's
counting statement cost PostgreSQL nearly what the national one did, because one condition with OR
filtered every placement of the month and of its retention cohorts).

The plan of each counting statement is read with EXPLAIN ANALYZE: every row a scan of a table produced
or filtered out counts as read. Counting one authority of fifty must read a small part of the month's
placements; counting them all reads them all (the measure is sound). That
the rows counted are the same is ``test_feed_counts``' job (national, ``only=``, ``without=``, two
horizons)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from consumers.feed import builder
from domain.calendar import YearMonth, month_bounds
from domain.feed import RETENTION_CHECKPOINTS, shift_month

pytestmark = pytest.mark.asyncio(loop_scope="session")

MONTH = YearMonth(2009, 7)  # a month (and cohorts) no other test writes
AUTHORITIES = [f"97{i:04d}" for i in range(50)]


async def _seed(conn: asyncpg.Connection) -> None:
    """Fifty authorities with two sites each; 40 placements per site in the month and in each cohort
    month, a registration and (one in three) a referral per placed person."""
    months = [MONTH] + [shift_month(MONTH, -k) for k in RETENTION_CHECKPOINTS]
    sites = [f"{a}-0{n}" for a in AUTHORITIES for n in (1, 2)]
    firsts = [month_bounds(m)[0] for m in months]
    await conn.execute(
        "INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, "
        "occupation, classification_version, employment_type, sex, age_band, attributes, personal, arrived_at) "
        "SELECT 'scope-' || m || '-' || s || '-' || g, 'scope-p-' || s || '-' || g, s, left(s, 6), f + g % 28, "
        "'hello_work_referral', '05', 'MHLW-2022', 'part_time', 'female', '40-44', '{}', '{}', f + g % 28 "
        "FROM unnest($1::date[]) WITH ORDINALITY AS x(f, m), unnest($2::text[]) AS s, generate_series(1, 40) AS g",
        firsts,
        sites,
    )
    await conn.execute(
        "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, team_support, "
        "personal, arrived_at) SELECT 'scope-r-' || s || '-' || g, 'scope-p-' || s || '-' || g, left(s, 6), s, "
        "$2::date + g % 28, g % 7 = 0, '{}', $2::date + g % 28 FROM unnest($1::text[]) AS s, "
        "generate_series(1, 40) AS g",
        sites,
        firsts[0],
    )
    await conn.execute(
        "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at) "
        "SELECT 'scope-f-' || s || '-' || g, 'scope-p-' || s || '-' || g, left(s, 6), s, $2::date, $2::date "
        "FROM unnest($1::text[]) AS s, generate_series(1, 40, 3) AS g",
        sites,
        firsts[0],
    )
    await conn.execute("ANALYZE feed_placements, feed_registrations, feed_referrals, feed_retention")


def _read(plan: dict[str, Any], table: str) -> int:
    """Rows the plan's scans of ``table`` produced or filtered out (over all their loops)."""
    rows = 0
    if plan.get("Relation Name") == table:
        loops = plan.get("Actual Loops", 1)
        rows += loops * (
            plan["Actual Rows"]
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
    for sub in plan.get("Plans", ()):
        rows += _read(sub, table)
    return rows


async def _explained(conn: asyncpg.Connection, sql: str, *args: Any) -> dict[str, Any]:
    explained = await conn.fetchval(
        f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args
    )  # decoded by the pool's codec
    plan: dict[str, Any] = explained[0]["Plan"]
    return plan


async def _plans(conn: asyncpg.Connection, only: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    first, last = month_bounds(MONTH)
    cohorts = {k: month_bounds(shift_month(MONTH, -k)) for k in RETENTION_CHECKPOINTS}
    horizon = datetime(2010, 1, 1, tzinfo=UTC)
    facts = await _explained(
        conn, builder._FACTS, first, last, horizon, only, [], horizon, list(cohorts),
        [lo for lo, _ in cohorts.values()], [hi for _, hi in cohorts.values()],
    )  # fmt: skip
    sites = await _explained(conn, builder._SITES, only)
    return facts, sites


async def test_counting_a_few_feeds_reads_their_rows_not_the_months(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        written = conn.transaction()  # rolled back: nothing of this month is kept for other tests
        await written.start()
        try:
            await _check(conn)
        finally:
            await written.rollback()


async def _check(conn: asyncpg.Connection) -> None:
    await _seed(conn)
    # Every cohort placement's checkpoint of its cohort, and of the other two (kept since, or later)
    checkpoints = await conn.fetchval(
        "WITH kept AS (INSERT INTO feed_retention (placement_id, checkpoint_months, person_key, status, "
        "checked_on, arrived_at) SELECT p.placement_id, k, p.person_key, 'employed', p.placed_on, p.arrived_at "
        "FROM feed_placements p, unnest($1::int[]) AS k WHERE p.placement_id LIKE 'scope-%' "
        "AND p.placed_on < $2 RETURNING 1) SELECT count(*) FROM kept",
        list(RETENTION_CHECKPOINTS),
        month_bounds(MONTH)[0],
    )
    # The authority counted below has referred many people over the years (none placed in these months):
    # the planner then expects many of its cohort rows, as in a national month's round.
    await conn.execute(
        "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at) "
        "SELECT 'scope-h-' || g, 'scope-h-p-' || g, $1, $1 || '-01', $2::date - g % 700, $2::date - g % 700 "
        "FROM generate_series(1, 3000) AS g",
        AUTHORITIES[7],
        month_bounds(MONTH)[0],
    )
    await conn.execute("ANALYZE feed_retention, feed_referrals")
    await conn.execute(builder.COUNTING_SETTINGS)
    month_placements = 4 * 100 * 40  # the month's and its three cohorts'
    facts, sites = await _plans(conn, None)
    assert _read(facts, "feed_placements") >= month_placements  # the measure sees a national count
    assert _read(facts, "feed_retention") >= checkpoints // 3
    one_facts, one_sites = await _plans(conn, AUTHORITIES[7:8])
    # One authority's two sites: 4 × 80 placements, read where they are counted (twice for the cohorts),
    # and only their cohorts' checkpoints, each by its key (the checkpoints kept grow with the history).
    assert _read(one_facts, "feed_placements") <= month_placements // 10
    assert _read(one_facts, "feed_retention") <= checkpoints // 10
    # The sites with when each was first sent are kept apart (``feed_sites``, migration 036): the facts
    # are not read for them at all, national or not.
    for table in ("feed_placements", "feed_registrations", "feed_referrals"):
        assert _read(sites, table) == _read(one_sites, table) == 0, table
    assert _read(sites, "feed_sites") >= 100
