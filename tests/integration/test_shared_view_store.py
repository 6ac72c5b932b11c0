"""The shared view's store as PostgreSQL sees it: how its writes land in the tables (issue 14)."""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg

from consumers.shared_view import store
from domain.shared_view import PersonView


def _record(person: str, referrals: int) -> PersonView:
    """A record about the size of one in bench_projection's view (~600 bytes as stored)."""
    return PersonView(
        person_key=person,
        consent_id=f"c-{person}",
        scopes=("disclose_placement", "share_registration"),
        recipient_authorities=("131016",),
        recipient_offices=("1301",),
        valid_from=date(2026, 4, 1),
        valid_until=date(2027, 3, 31),
        authority="131016",
        office="1301",
        site="131016-01",
        registered_on=date(2026, 4, 2),
        sex="F",
        age_band="30-39",
        attributes=("single_parent",),
        desired_occupation="05",
        team_support=True,
        referring_authorities=("131016",),
        referrals=tuple(
            {
                "referral_id": f"r-{person}-{i}",
                "authority": "131016",
                "site": "131016-01",
                "programme": "seikatsu_hogo",
                "referred_on": "2026-04-10",
            }
            for i in range(referrals)
        ),
        name="Test Person",
        name_kana="テスト",
        birth_date=date(1990, 1, 1),
        phone="03-0000-0000",
        email="someone@example.invalid",
        address="Tokyo, Chiyoda 1-1-1",
        job_seeker_number="1301-000000-1",
        case_numbers=("K-0001",),
    )


async def test_a_record_extended_in_place_is_rewritten_on_its_own_page(pool: asyncpg.Pool) -> None:
    """A record is inserted once and extended many times (bench_projection: ~2.5 writes per person). The
    table keeps room on each page (fillfactor, migration 038), so an extension whose indexed columns stay
    as they were is a heap-only tuple update: no new entry in the primary key or the authority and office
    indexes. Counted by PostgreSQL itself, in the transaction (``pg_stat_xact_user_tables``)."""
    people = [f"hot-{uuid.uuid4().hex[:12]}-{i:04d}" for i in range(400)]
    async with pool.acquire() as conn:
        async with conn.transaction():
            await store.begin(conn, [0])
            await store.write_views(conn, store.view_rows(_record(p, 1) for p in people))
        extended = people[::8]  # a batch extends some of the people on each page
        async with conn.transaction():
            await store.begin(conn, [0])
            await store.write_views(conn, store.view_rows(_record(p, 2) for p in extended))
            updated, hot = await conn.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'sv_persons'"
            )
        assert (updated, hot) == (len(extended), len(extended))
        views = {v.person_key: v for v in await store.load_views(conn, extended)}
        assert all(len(views[p].referrals) == 2 for p in extended)
        await conn.execute("DELETE FROM sv_persons WHERE person_key = ANY($1::text[])", people)
