"""``feed_registrations.referred_at`` (migration 049) when a person's registration and their referral are
written by two transactions at once (review10 F1).

The feed consumer is not person-affine (round robin over every topic: ``consumers.runtime``), so with two
feed processes in the group a person's registration (one topic) and referral (another) can be in two
members' batches at the same time. Each trigger reads the other fact table under its own snapshot: the
registration's does not see the referral not yet committed, the referral's does not see the registration;
both commit, and the registration keeps no referral time while the referrals say it was referred — the
month counts the person as not referred (送り込み), unlike a recount or the counting's join before 049.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import asyncpg
import pytest

from consumers.feed import store
from domain.feed_projection import FeedPlan, ReferralRow, RegistrationRow

pytestmark = pytest.mark.asyncio(loop_scope="session")

AUTHORITY = "960053"  # sites no other test writes
SITE = f"{AUTHORITY}-01"
PERSON = "referred-concurrent-p"
AT = datetime(2008, 5, 2, tzinfo=UTC)


async def _waiting(pool: asyncpg.Pool, task: asyncio.Task[None]) -> None:
    """Until ``task`` is done or its connection waits on a lock (no time bound: a state, polled)."""
    async with pool.acquire() as probe:
        while not task.done():
            if await probe.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            ):
                return
            await asyncio.sleep(0.01)


async def test_a_registration_and_its_referral_written_at_once_keep_the_referral_time(
    pool: asyncpg.Pool,
) -> None:
    registration = RegistrationRow(
        "referred-concurrent-r", PERSON, AUTHORITY, SITE, date(2008, 5, 1), False, {"sealed": "x"}, AT, [],
        "female", "40-44", False, None,
    )  # fmt: skip
    referral = ReferralRow("referred-concurrent-f", PERSON, AUTHORITY, SITE, date(2008, 5, 10), AT, None)
    try:
        async with pool.acquire() as one, pool.acquire() as two:
            first = one.transaction()
            await first.start()
            await store.write(one, FeedPlan(registrations=(registration,)))
            second = two.transaction()
            await second.start()
            writing = asyncio.ensure_future(store.write(two, FeedPlan(referrals=(referral,))))
            await _waiting(pool, writing)  # a fix may make it wait for the first transaction
            await first.commit()
            await writing
            await second.commit()
        async with pool.acquire() as conn:
            kept = await conn.fetchval(
                "SELECT referred_at FROM feed_registrations WHERE event_id = 'referred-concurrent-r'"
            )
            recounted = await conn.fetchval(
                "SELECT feed_referred_at(person_key, authority, registered_on) FROM feed_registrations "
                "WHERE event_id = 'referred-concurrent-r'"
            )
        assert recounted == AT
        assert kept == recounted
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM feed_referrals WHERE person_key = $1", PERSON)
            await conn.execute("DELETE FROM feed_registrations WHERE person_key = $1", PERSON)
