"""Each site with when its first fact was sent (``feed_sites``): the feed lists an authority's sites seen
by the horizon, and the month's counting read them from every registration, placement and referral
ever kept (1.2M rows for bench_feed's national month). Triggers keep the table as the facts are written,
by whatever writes them, so it is always what the facts say: the earliest sent fact at each site."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from consumers.feed import store
from consumers.feed.builder import count_month
from consumers.feed.erasure import drop_erased
from domain.calendar import YearMonth
from domain.feed_projection import FeedPlan, PlacementRow, ReferralRow, RegistrationRow

pytestmark = pytest.mark.asyncio(loop_scope="session")

AUTHORITY = "960001"  # sites no other test writes
SITES = [f"{AUTHORITY}-0{n}" for n in (1, 2, 3)]
T0 = datetime(2008, 3, 2, tzinfo=UTC)


def _registration(key: str, site: str, at: datetime) -> RegistrationRow:
    return RegistrationRow(
        f"sites-r-{key}", f"sites-p-{key}", site[:6], site, date(2008, 3, 1), False, {"sealed": "x"}, at, [],
        "female", "40-44", False, None,
    )  # fmt: skip


def _referral(key: str, site: str, at: datetime) -> ReferralRow:
    return ReferralRow(f"sites-f-{key}", f"sites-p-{key}", site[:6], site, date(2008, 3, 1), at, None)


def _placement(key: str, site: str, at: datetime) -> PlacementRow:
    return PlacementRow(
        f"sites-pl-{key}", f"sites-p-{key}", site, site[:6], date(2008, 3, 5), "hello_work_referral", "05",
        "MHLW-2022", "part_time", "female", "40-44", [], {"sealed": "x"}, at, False, "1301",
    )  # fmt: skip


def _at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


# Batches as the consumer writes them, in the order they arrive: a later batch brings facts sent earlier
# (a late event lowers its site's first sent), a fact again under the same key with an earlier time (the
# first report wins: it must not lower anything), a site first seen through a referral.
BATCHES = [
    FeedPlan(registrations=(_registration("a", SITES[0], _at(10)), _registration("b", SITES[1], _at(12)))),
    FeedPlan(
        placements=(_placement("a", SITES[0], _at(11)),), referrals=(_referral("c", SITES[2], _at(30)),)
    ),
    FeedPlan(
        registrations=(_registration("a", SITES[0], _at(1)), _registration("d", SITES[1], _at(5))),
        placements=(_placement("e", SITES[2], _at(20)),),
    ),
    FeedPlan(referrals=(_referral("f", SITES[0], _at(7)),)),
]


async def _kept(conn: asyncpg.Connection) -> list[tuple[str, datetime]]:
    rows = await conn.fetch(
        "SELECT site, arrived_at FROM feed_sites WHERE left(site, 6) = $1 ORDER BY site", AUTHORITY
    )
    return [(r["site"], r["arrived_at"]) for r in rows]


async def _from_the_facts(conn: asyncpg.Connection) -> list[tuple[str, datetime]]:
    rows = await conn.fetch(
        "SELECT site, min(arrived_at) AS arrived_at FROM (SELECT site, arrived_at FROM feed_registrations "
        "UNION ALL SELECT site, arrived_at FROM feed_placements UNION ALL SELECT site, arrived_at FROM feed_referrals"
        ") x WHERE left(site, 6) = $1 GROUP BY site ORDER BY site",
        AUTHORITY,
    )
    return [(r["site"], r["arrived_at"]) for r in rows]


async def test_each_sites_first_sent_fact_is_kept_incrementally_as_a_replay_keeps_it(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        written = conn.transaction()  # rolled back: nothing of this authority is kept for other tests
        await written.start()
        try:
            for plan in BATCHES:
                async with conn.transaction():  # each batch in its own (sub)transaction, as the consumer's
                    await store.write(conn, plan)
                assert await _kept(conn) == await _from_the_facts(conn)
            incremental = await _kept(conn)
            # site 1: the registration's second report (key "a" again, sent at 1 h) did not replace the first
            # (10 h), so it lowered nothing; the late referral (7 h) did
            assert incremental == [(SITES[0], _at(7)), (SITES[1], _at(5)), (SITES[2], _at(20))]
            # Replay: the facts gone (each site recounted from what is left: nothing), then written again in
            # one batch, in another order.
            for table in ("feed_registrations", "feed_placements", "feed_referrals"):
                await conn.execute(f"DELETE FROM {table} WHERE left(site, 6) = $1", AUTHORITY)
            assert await _kept(conn) == [] == await _from_the_facts(conn)
            every = [plan for plan in reversed(BATCHES)]
            await store.write(
                conn,
                FeedPlan(
                    registrations=tuple(r for p in every for r in p.registrations),
                    referrals=tuple(r for p in every for r in p.referrals),
                    placements=tuple(r for p in every for r in p.placements),
                ),
            )
            replayed = await _kept(conn)
            assert replayed == await _from_the_facts(conn)
            # the replay kept the 1 h registration under key "a" (it came first): the facts differ, and so
            # does site 1, as the facts say
            assert replayed == [(SITES[0], _at(1)), (SITES[1], _at(5)), (SITES[2], _at(20))]
            # Erasure keeps the statistical facts (consumers.feed.erasure): the sites stay as they were.
            await drop_erased(conn, ["sites-p-a", "sites-p-d"])
            assert await _kept(conn) == replayed
            # A fact moved or removed by hand (an operator's fix) is recounted too.
            await conn.execute(
                "UPDATE feed_registrations SET arrived_at = $1 WHERE event_id = 'sites-r-a'", _at(40)
            )
            assert await _kept(conn) == await _from_the_facts(conn) == [
                (SITES[0], _at(7)), (SITES[1], _at(5)), (SITES[2], _at(20)),
            ]  # fmt: skip
            await conn.execute("TRUNCATE feed_referrals")
            assert await _kept(conn) == await _from_the_facts(conn) == [
                (SITES[0], _at(11)), (SITES[1], _at(5)), (SITES[2], _at(20)),
            ]  # fmt: skip
        finally:
            await written.rollback()


async def test_a_late_fact_sent_earlier_puts_its_site_in_the_feed_at_that_horizon(pool: asyncpg.Pool) -> None:
    month = YearMonth(2008, 3)
    horizon = _at(15)
    async with pool.acquire() as conn:
        written = conn.transaction()
        await written.start()
        try:
            await store.write(conn, BATCHES[0])  # site 1 at 10 h, site 2 at 12 h
            await store.write(conn, FeedPlan(referrals=(_referral("g", SITES[2], _at(30)),)))
            counted = await count_month(conn, month, horizon, only=[AUTHORITY])
            assert counted.feeds[AUTHORITY].sites == (SITES[0], SITES[1])
            # sent at 14 h, kept after the build above: site 3 was seen by the horizon
            await store.write(conn, FeedPlan(placements=(_placement("h", SITES[2], _at(14)),)))
            counted = await count_month(conn, month, horizon, only=[AUTHORITY])
            assert counted.feeds[AUTHORITY].sites == tuple(SITES)
        finally:
            await written.rollback()
