"""Review10 O1: ``builder._first_facts`` (which authorities a month's facts could give a feed, read on a
round after the month's first build) reads no retention-cohort placements, so an authority whose month
has only its own sites' cohort placements is not among them. That misses nothing: a month's feed is made
for the authorities with placements, new job seekers or team support in it (``domain.feed.assemble``,
``count_month``), never for cohort placements alone, so such an authority gets no revision, whether its
history is loaded before the month's first build or later (the round that reads ``_first_facts``). If
feeds of cohort placements alone are ever made, ``_first_facts`` must read them too: this test says so."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import pytest

from consumers.feed.builder import _first_facts, build_month, count_month_twice
from domain.calendar import YearMonth
from infra.config import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

MONTH = YearMonth(2013, 9)  # a month (and cohorts) no other test writes
PLACED = "982000"  # a placement in the month, sent before its cutoff
COHORT_ONLY = "982001"  # loaded later: only a placement of the month before (cohort 1) and its checkpoint
CUTOFF_PASSED = datetime(2013, 10, 10, tzinfo=UTC)
LOADED = datetime(2013, 10, 20, tzinfo=UTC)
NOW = datetime(2013, 11, 1, tzinfo=UTC)


async def _placement(conn: asyncpg.Connection, authority: str, placed_on: date, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, "
        "occupation, classification_version, employment_type, sex, age_band, attributes, personal, arrived_at) "
        "VALUES ('first-facts-' || $1, 'first-facts-p-' || $1, $1 || '-01', $1, $2, 'hello_work_referral', "
        "'05', 'MHLW-2022', 'part_time', 'female', '40-44', '{}', '{}', $3)",
        authority,
        placed_on,
        at,
    )


async def test_an_authority_with_only_cohort_placements_gets_no_feed_on_either_path(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    wanted = [PLACED, COHORT_ONLY]
    try:
        async with pool.acquire() as conn:
            await _placement(conn, PLACED, date(2013, 9, 10), datetime(2013, 9, 11, tzinfo=UTC))
        first = await build_month(pool, settings, MONTH, now=CUTOFF_PASSED, authorities=wanted, publish=False)
        assert [(b.authority, b.revision) for b in first] == [(PLACED, 1)]
        async with pool.acquire() as conn:
            await _placement(conn, COHORT_ONLY, date(2013, 8, 20), LOADED)
            await conn.execute(
                "INSERT INTO feed_retention (placement_id, checkpoint_months, person_key, status, checked_on, "
                "arrived_at) VALUES ('first-facts-' || $1, 1, 'first-facts-p-' || $1, 'employed', '2013-09-20', $2)",
                COHORT_ONLY,
                LOADED,
            )
            await conn.execute(
                "INSERT INTO feed_dirty (authority, month) VALUES ($1, $2)", COHORT_ONLY, str(MONTH)
            )
            assert COHORT_ONLY not in await _first_facts(conn, MONTH)  # what O1 saw
            # Counted from nothing, as a first build would: no feed for it either.
            async with conn.transaction(isolation="repeatable_read"):
                at_cutoff, up_to_now = await count_month_twice(conn, MONTH, CUTOFF_PASSED, NOW, only=wanted)
            assert set(at_cutoff.feeds) == set(up_to_now.feeds) == {PLACED}
        later = await build_month(pool, settings, MONTH, now=NOW, authorities=wanted, publish=False)
        assert [b.authority for b in later] == []
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM feed_revisions WHERE month = $1", str(MONTH))
            await conn.execute("DELETE FROM feed_dirty WHERE month = $1", str(MONTH))
            await conn.execute("DELETE FROM feed_retention WHERE placement_id LIKE 'first-facts-%'")
            await conn.execute("DELETE FROM feed_placements WHERE placement_id LIKE 'first-facts-%'")
