"""A referral id is its own person's and its own authority's: another authority's referral, for its own person
X, reusing authority Y's referral id for person P, changes nothing about Y's referral of P, in whichever
order the feed consumer reads them (X's and P's records are on different partitions: a consumer catching up,
or the feed read again from the topics, may read X's first). The feed kept a referral by its id alone, the
first report winning: X's read first made the feed drop Y's, and P's registration then counted as not sent
by Y (送り込み), in Y's feed. X can learn the id from the shared view (a referral's id is shown to every
recipient of P's consent), or guess a client's ids. A referral is now kept by (id, person, authority)
(migration 064), as a placement by (id, person) (046)."""

from __future__ import annotations

import asyncpg

from infra.config import Settings
from tests import factories
from tests.browser.flows import publish
from tests.helpers import catch_up_view_and_feed


async def _kept(pool: asyncpg.Pool, isolated: Settings, *, squat_first: bool) -> tuple[object, ...]:
    """Y's referral of P and X's squatting its id for X's own person, consumed in this order: the referrals
    kept under the id, and whether P's registration counts as referred by Y."""
    p, x = factories.person_key(), factories.person_key()
    real = factories.referral(p)
    referral_id = real.data["referral_id"]
    squat = factories.referral(
        x,
        referral_id=referral_id,
        authority=factories.OTHER_AUTHORITY,
        site=f"{factories.OTHER_AUTHORITY}-01",
    )
    steps = [[factories.registration(p), real], [squat]]
    if squat_first:
        steps.reverse()
    for events in steps:
        await publish(isolated, pool, events, origin="test")
        await catch_up_view_and_feed(pool, isolated)
    async with pool.acquire() as conn:
        kept = await conn.fetch(
            "SELECT person_key = $2 AS real, authority FROM feed_referrals WHERE referral_id = $1 "
            "ORDER BY 1 DESC",
            referral_id,
            p,
        )
        referred = await conn.fetchval(
            "SELECT referred_at IS NOT NULL FROM feed_registrations WHERE person_key = $1", p
        )
    return tuple((r["real"], r["authority"]) for r in kept), referred


async def test_a_referral_squatting_another_authoritys_id_first_leaves_that_referral_kept_and_counted(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    expected = ((True, factories.AUTHORITY), (False, factories.OTHER_AUTHORITY))
    assert await _kept(pool, isolated, squat_first=True) == (expected, True)


async def test_the_feed_keeps_the_same_referrals_whichever_of_the_id_is_consumed_first(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    assert await _kept(pool, isolated, squat_first=False) == await _kept(pool, isolated, squat_first=True)
