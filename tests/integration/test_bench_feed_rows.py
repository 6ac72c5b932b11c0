"""bench_feed's month (``bench.feed_month.generate``) is the same rows whatever plan PostgreSQL makes for
its statements. Its golden digest is only a proof if every database generated from it holds the same
rows: the generation drew random() after a setseed, and random() hands out one sequence in the order
the executor produces rows, so another plan (statistics analyzed or not yet, another machine's
settings) gave other rows from the same seed. Here the month is generated small, three times in one
database, each in a transaction rolled back, under hash, merge and nested-loop joins: every table must
hold the same rows each time. On the random() generation the three differ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from bench.feed_month import generate
from devtools.stack import namespaces
from infra.config import Settings
from infra.db import drop_database, recreate_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

TABLES = ("feed_registrations", "feed_referrals", "feed_placements", "feed_retention")
PLANS = {
    "hash joins": ("enable_mergejoin", "enable_nestloop"),
    "merge joins": ("enable_hashjoin", "enable_nestloop"),
    "nested loops": ("enable_hashjoin", "enable_mergejoin"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scratch(live_stack: None, settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    # A database of its own: the month's retention cohorts read every placement of their months.
    # A namespace of its own too: a lease is per topic namespace, and claiming the session's would hand
    # back the session's own lease (its database, its topics), which the release below would then drop
    # under every test still to run (it did: 137 failures and 145 errors after this module).
    tag = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={"pg_database": f"ittai_test_bfr{tag}", "topic_namespace": f"bfr{tag}"})
    lease = namespaces.claim(own, database=own.pg_database)
    assert lease is not None and lease.database == own.pg_database, "a lease of the scratch database alone"
    await recreate_database(own)
    conn = await asyncpg.connect(own.pg_dsn)
    yield conn
    await conn.close()
    await drop_database(own, missing_ok_if_busy=True)
    await namespaces.release(own, [lease] if lease else [])


async def _generated(conn: asyncpg.Connection, off: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    transaction = conn.transaction()
    await transaction.start()
    try:
        for setting in off:
            await conn.execute(f"SET LOCAL {setting} = off")
        await generate(conn, registrations=3000, placements=900)
        return {
            table: tuple(
                await conn.fetchrow(
                    f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"
                )
            )
            for table in TABLES
        }
    finally:
        await transaction.rollback()


async def test_the_same_rows_under_every_plan(scratch: asyncpg.Connection) -> None:
    generated = {plan: await _generated(scratch, off) for plan, off in PLANS.items()}
    first = generated["hash joins"]
    assert all(count > 0 for count, _ in first.values()), first
    for plan, tables in generated.items():
        assert tables == first, f"{plan}: {tables} != hash joins: {first}"
