"""When each registration was first referred (``feed_registrations.referred_at``, migration 049): a new
job seeker counts as referred when the authority it registered with referred the person by the end of the
registration's month, by the horizon. The month's counting joined its registrations to every referral kept
for that; triggers now keep the first such referral's time with each registration, by whatever writes the
facts, so it is always what the referrals say: checked against a recount from the facts after every batch,
a late referral sent earlier, a re-report, erasure, an operator's update and delete, and a truncate."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from consumers.feed import store
from consumers.feed.erasure import drop_erased
from domain.feed_projection import FeedPlan, ReferralRow, RegistrationRow

pytestmark = pytest.mark.asyncio(loop_scope="session")

AUTHORITY = "960049"  # sites no other test writes
OTHER = "960050"
SITE = f"{AUTHORITY}-01"
T0 = datetime(2008, 3, 2, tzinfo=UTC)


def _at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def _registration(key: str, at: datetime, on: date = date(2008, 3, 1)) -> RegistrationRow:
    return RegistrationRow(
        f"referred-r-{key}", f"referred-p-{key}", AUTHORITY, SITE, on, False, {"sealed": "x"}, at, [],
        "female", "40-44", False, None,
    )  # fmt: skip


def _referral(
    key: str, person: str, at: datetime, on: date = date(2008, 3, 10), by: str = AUTHORITY
) -> ReferralRow:
    return ReferralRow(f"referred-f-{key}", f"referred-p-{person}", by, f"{by}-01", on, at, None)


# Batches in the order they arrive: a referral before its registration (another topic), after it, a late
# one sent earlier, the same referral again with another time (the first report wins), one by another
# authority, one made after the registration's month, a registration with its referral in one batch.
BATCHES = [
    FeedPlan(referrals=(_referral("1", "a", _at(20)),)),
    FeedPlan(registrations=(_registration("a", _at(10)), _registration("b", _at(11)))),
    FeedPlan(referrals=(_referral("2", "b", _at(30)), _referral("3", "a", _at(40)))),
    FeedPlan(referrals=(_referral("4", "b", _at(25)), _referral("2", "b", _at(5)))),
    FeedPlan(
        referrals=(
            _referral("5", "c", _at(3), by=OTHER),
            _referral("6", "c", _at(4), on=date(2008, 4, 1)),
            _referral("7", "d", _at(50), on=date(2008, 3, 31)),
        ),
        registrations=(_registration("c", _at(12)), _registration("d", _at(13))),
    ),
    FeedPlan(referrals=(_referral("8", "c", _at(60)),)),
]


async def _kept(conn: asyncpg.Connection) -> dict[str, datetime | None]:
    rows = await conn.fetch(
        "SELECT event_id, referred_at FROM feed_registrations WHERE authority = $1 ORDER BY event_id",
        AUTHORITY,
    )
    return {r["event_id"]: r["referred_at"] for r in rows}


async def _from_the_facts(conn: asyncpg.Connection) -> dict[str, datetime | None]:
    """The definition (the counting's join before 049): the registering authority's earliest referral of
    the person made by the end of the registration's month."""
    rows = await conn.fetch(
        "SELECT g.event_id, (SELECT min(r.arrived_at) FROM feed_referrals r WHERE r.person_key = g.person_key "
        "  AND r.authority = g.authority AND to_char(r.referred_on, 'YYYY-MM') <= to_char(g.registered_on, 'YYYY-MM')"
        ") AS referred_at FROM feed_registrations g WHERE g.authority = $1 ORDER BY g.event_id",
        AUTHORITY,
    )
    return {r["event_id"]: r["referred_at"] for r in rows}


async def test_each_registrations_first_referral_is_kept_incrementally_as_a_recount_finds_it(
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
            # a: its referral read before it (20 h); b: the late referral sent at 25 h, not the re-report
            # at 5 h; c: neither another authority's nor one made in April, but its own at 60 h; d: 31 March
            assert await _kept(conn) == {
                "referred-r-a": _at(20), "referred-r-b": _at(25), "referred-r-c": _at(60), "referred-r-d": _at(50),
            }  # fmt: skip
            await drop_erased(conn, ["referred-p-a", "referred-p-b"])  # statistical facts stay
            assert await _kept(conn) == await _from_the_facts(conn)
            # An operator's fixes: a referral moved in time, to another authority, removed; a registration
            # moved to April (its referral made on 1 April now counts) and back.
            await conn.execute(
                "UPDATE feed_referrals SET arrived_at = $1 WHERE referral_id = 'referred-f-1'", _at(2)
            )
            await conn.execute(
                "UPDATE feed_referrals SET authority = $1 WHERE referral_id = 'referred-f-4'", OTHER
            )
            await conn.execute("DELETE FROM feed_referrals WHERE referral_id = 'referred-f-8'")
            await conn.execute(
                "UPDATE feed_registrations SET registered_on = '2008-04-02' WHERE event_id = 'referred-r-c'"
            )
            kept = await _kept(conn)
            assert kept == await _from_the_facts(conn)
            assert kept == {
                "referred-r-a": _at(2), "referred-r-b": _at(30), "referred-r-c": _at(4), "referred-r-d": _at(50),
            }  # fmt: skip
            await conn.execute(
                "UPDATE feed_registrations SET registered_on = '2008-03-02' WHERE event_id = 'referred-r-c'"
            )
            assert await _kept(conn) == await _from_the_facts(conn)
            assert (await _kept(conn))["referred-r-c"] is None
            # Replay: written again in one batch, in another order, from nothing.
            await conn.execute("DELETE FROM feed_registrations WHERE authority = $1", AUTHORITY)
            await conn.execute("DELETE FROM feed_referrals WHERE referral_id LIKE 'referred-f-%'")
            every = list(reversed(BATCHES))
            await store.write(
                conn,
                FeedPlan(
                    registrations=tuple(r for p in every for r in p.registrations),
                    referrals=tuple(r for p in every for r in p.referrals),
                ),
            )
            assert await _kept(conn) == await _from_the_facts(conn)
            # a registration written with a time of its own is set to what the referrals say
            await conn.execute(
                "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, team_support, "
                "personal, arrived_at, referred_at) VALUES ('referred-r-e', 'referred-p-e', $1, $2, '2008-03-03', "
                "false, '{}', $3, $3)",
                AUTHORITY,
                SITE,
                _at(1),
            )
            assert (await _kept(conn))["referred-r-e"] is None
            await conn.execute("TRUNCATE feed_referrals")
            assert set((await _kept(conn)).values()) == {None}
            assert await _kept(conn) == await _from_the_facts(conn)
        finally:
            await written.rollback()
