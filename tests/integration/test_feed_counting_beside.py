"""Counting a month with a second session beside the build's (``count_month(beside=pool)``): the largest
counting statement is read by another session of the pool at the same time as the others, on the build's
snapshot (``builder._reading_beside``: ``pg_export_snapshot``, ``SET TRANSACTION SNAPSHOT``).

It must count exactly what one session counts: the same feeds, cells and placement ids, one horizon or
two, national or for a few authorities; nothing committed after the build's snapshot was taken (read
in a session of its own, such a fact would be counted in one part of a feed and not in another); and it
must not wait for a connection the pool cannot give (the build holds the only one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from consumers.feed.builder import COUNTING_SETTINGS, Counted, count_month, count_month_twice
from domain.calendar import YearMonth, month_bounds
from domain.feed import RETENTION_CHECKPOINTS, shift_month
from infra.config import Settings
from infra.db import create_pool

pytestmark = pytest.mark.asyncio(loop_scope="session")

MONTH = YearMonth(2012, 2)  # a month (and cohorts) no other test writes
AUTHORITIES = [f"98{i:04d}" for i in range(6)]
CUTOFF = datetime(2012, 3, 5, 15, tzinfo=UTC)
NOW = datetime(2012, 6, 1, tzinfo=UTC)


async def _seed(conn: asyncpg.Connection) -> None:
    """Six authorities with two sites each: placements in the month and in each cohort month (some sent
    after the cutoff), their checkpoints (some sent after it), registrations (every seventh in team
    support) and referrals (one in three, some by another authority)."""
    months = [MONTH] + [shift_month(MONTH, -k) for k in RETENTION_CHECKPOINTS]
    sites = [f"{a}-0{n}" for a in AUTHORITIES for n in (1, 2)]
    firsts = [month_bounds(m)[0] for m in months]
    await conn.execute(
        "INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, "
        "occupation, classification_version, employment_type, sex, age_band, attributes, personal, arrived_at) "
        "SELECT 'beside-' || m || '-' || s || '-' || g, 'beside-p-' || s || '-' || g, s, left(s, 6), f + g % 28, "
        "CASE WHEN g % 4 = 0 THEN 'self_found' ELSE 'hello_work_referral' END, lpad((1 + g % 15)::text, 2, '0'), "
        "'MHLW-2022', 'part_time', CASE WHEN g % 2 = 0 THEN 'female' ELSE 'male' END, '40-44', "
        "CASE WHEN g % 3 = 0 THEN '{youth}'::text[] ELSE '{}' END, '{}', "
        "CASE WHEN g % 9 = 0 THEN $3::timestamptz + interval '2 days' ELSE (f + g % 28)::timestamptz END "
        "FROM unnest($1::date[]) WITH ORDINALITY AS x(f, m), unnest($2::text[]) AS s, generate_series(1, 30) AS g",
        firsts,
        sites,
        CUTOFF,
    )
    await conn.execute(
        "INSERT INTO feed_retention (placement_id, checkpoint_months, person_key, status, checked_on, arrived_at) "
        "SELECT p.placement_id, c.k, p.person_key, CASE WHEN g % 5 = 0 THEN 'left' ELSE 'employed' END, "
        "$1::date, CASE WHEN g % 6 = 0 THEN $2::timestamptz + interval '1 day' ELSE $1::timestamptz END "
        "FROM unnest($3::int[], $4::date[]) AS c(k, f) JOIN feed_placements p ON p.placed_on BETWEEN c.f AND c.f + 27 "
        "AND p.placement_id LIKE 'beside-%', LATERAL (SELECT length(p.placement_id) + ascii(right(p.placement_id, 1)) AS g) x "
        "WHERE g % 4 <> 0",
        firsts[0],
        CUTOFF,
        list(RETENTION_CHECKPOINTS),
        firsts[1:],
    )
    await conn.execute(
        "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, team_support, "
        "personal, arrived_at, sex, age_band, attributes) SELECT 'beside-r-' || s || '-' || g, "
        "'beside-p-' || s || '-' || g, left(s, 6), s, $2::date + g % 28, g % 7 = 0, '{}', "
        "CASE WHEN g % 8 = 0 THEN $3::timestamptz + interval '1 day' ELSE ($2::date + g % 28)::timestamptz END, "
        "'female', '25-29', '{}' FROM unnest($1::text[]) AS s, generate_series(1, 30) AS g",
        sites,
        firsts[0],
        CUTOFF,
    )
    await conn.execute(
        "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at) "
        "SELECT 'beside-f-' || s || '-' || g, 'beside-p-' || s || '-' || g, "
        "CASE WHEN g % 2 = 0 THEN $3 ELSE left(s, 6) END, s, $2::date, $2::date "
        "FROM unnest($1::text[]) AS s, generate_series(1, 30, 3) AS g",
        sites,
        firsts[0],
        AUTHORITIES[0],
    )


@pytest_asyncio.fixture(loop_scope="session")
async def seeded(pool: asyncpg.Pool) -> AsyncIterator[None]:
    async with pool.acquire() as conn, conn.transaction():
        await _seed(conn)
    try:
        yield
    finally:
        async with pool.acquire() as conn, conn.transaction():
            for table, key in (
                ("feed_retention", "placement_id"),
                ("feed_referrals", "referral_id"),
                ("feed_registrations", "event_id"),
                ("feed_placements", "placement_id"),
            ):
                await conn.execute(f"DELETE FROM {table} WHERE {key} LIKE 'beside-%'")


def _plain(counted: Counted) -> Any:
    return (
        {
            a: (
                f.sites,
                dict(f.referral),
                dict(f.self_found),
                dict(f.new),
                dict(f.team),
                {k: dict(v) for k, v in f.retention.items()},
            )
            for a, f in sorted(counted.feeds.items())
        },
        counted.placement_ids,
    )


async def test_counting_beside_counts_what_one_session_counts(pool: asyncpg.Pool, seeded: None) -> None:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await conn.execute(COUNTING_SETTINGS)
        for only in (None, AUTHORITIES[:2]):
            alone = await count_month_twice(conn, MONTH, CUTOFF, NOW, only=only)
            beside = await count_month_twice(conn, MONTH, CUTOFF, NOW, only=only, beside=pool)
            for one, two in zip(alone, beside, strict=True):
                assert _plain(two) == _plain(one), only
            once = await count_month(conn, MONTH, CUTOFF, only=only, without=AUTHORITIES[1:2], beside=pool)
            assert _plain(once) == _plain(
                await count_month(conn, MONTH, CUTOFF, only=only, without=AUTHORITIES[1:2])
            )
        # the month reaches every part of the counting, or the comparison proves little
        later = alone[1].feeds[AUTHORITIES[0]]
        assert later.referral and later.self_found and later.new and later.team
        assert all(later.retention[k] for k in RETENTION_CHECKPOINTS)
        assert _plain(alone[0]) != _plain(alone[1])  # the late facts count only up to now


async def test_counting_beside_counts_nothing_committed_after_the_builds_snapshot(
    pool: asyncpg.Pool, seeded: None
) -> None:
    first, _ = month_bounds(MONTH)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await conn.execute(COUNTING_SETTINGS)
        before = await count_month(conn, MONTH, NOW)  # the snapshot is taken
        # A new job seeker and a checkpoint committed meanwhile (the consumer writing while the build runs)
        async with pool.acquire() as writer, writer.transaction():
            await writer.execute(
                "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, "
                "team_support, personal, arrived_at, sex, age_band, attributes) VALUES ('beside-r-new', "
                "'beside-p-new', $1, $2, $3, true, '{}', $4, 'male', '30-34', '{}')",
                AUTHORITIES[0],
                f"{AUTHORITIES[0]}-01",
                first,
                CUTOFF,
            )
            await writer.execute(
                "UPDATE feed_retention SET status = 'left', arrived_at = $1 "
                "WHERE placement_id LIKE 'beside-%' AND status = 'employed'",
                CUTOFF,
            )
        assert _plain(await count_month(conn, MONTH, NOW, beside=pool)) == _plain(before)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await conn.execute(COUNTING_SETTINGS)
        assert _plain(await count_month(conn, MONTH, NOW, beside=pool)) != _plain(
            before
        )  # the test sees them


async def test_counting_beside_with_no_connection_to_spare_counts_in_the_builds_session(
    settings: Settings, pool: asyncpg.Pool, seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = await create_pool(settings, min_size=1, max_size=1)
    try:
        async with alone.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            await conn.execute(COUNTING_SETTINGS)

            def waiting(*args: object, **kwargs: object) -> None:  # would wait for ``conn`` for good
                raise AssertionError("asked the pool for a connection it cannot give")

            monkeypatch.setattr(asyncpg.Pool, "acquire", waiting)  # every pool's, while the count runs
            assert _plain(await count_month(conn, MONTH, NOW, beside=alone)) == _plain(
                await count_month(conn, MONTH, NOW)
            )
            monkeypatch.undo()
    finally:
        await alone.close()
