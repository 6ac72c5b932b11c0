"""The shared view's store as PostgreSQL sees it: how its writes land in the tables (issue 14)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg

from consumers.shared_view import store
from domain.batch import Incoming
from domain.shared_view import PersonView
from infra.db import MIGRATIONS


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
        case_numbers=({"authority": "131016", "case_number": "K-0001"},),
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
        counts = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'sv_persons'"
        async with conn.transaction():
            await store.begin(conn, [0])
            # Counted from here: a backend's counts of its earlier transactions stay in these figures until
            # it reports them (at most once a second), so an update another test made on this pooled
            # connection just before showed up here once (51 for 50).
            before = await conn.fetchrow(counts)
            await store.write_views(conn, store.view_rows(_record(p, 2) for p in extended))
            after = await conn.fetchrow(counts)
        updated, hot = (after[0] - before[0], after[1] - before[1])
        assert (updated, hot) == (len(extended), len(extended))
        views = {v.person_key: v for v in await store.load_views(conn, extended)}
        assert all(len(views[p].referrals) == 2 for p in extended)
        await conn.execute("DELETE FROM sv_persons WHERE person_key = ANY($1::text[])", people)


async def test_the_events_copy_payload_stores_what_the_drivers_encoders_store(pool: asyncpg.Pool) -> None:
    """``store.events_payload`` writes ``sv_events`` rows in PostgreSQL's binary COPY format itself; the
    same rows copied through asyncpg's own encoders are stored identically: times at several offsets and
    microseconds (and near both ends of 2000-2099), JSON with non-ASCII text and escapes kept verbatim, a
    held and a visible event, a block that opens and one that does not."""
    zones = [UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-5, minutes=-30))]
    times = [
        datetime(2000, 1, 1, 9, 0, 0, 1, tzinfo=zones[1]),
        datetime(2026, 11, 28, 23, 59, 59, 999999, tzinfo=zones[2]),
        datetime(2099, 12, 31, 23, 59, 59, tzinfo=zones[0]),
        datetime(2025, 4, 3, 10, 0, tzinfo=zones[1]),
    ]
    tag = uuid.uuid4().hex[:16]
    events = [
        Incoming(f"{tag}{i:016x}", family, f"{tag}p{i:015x}", when, {})
        for i, (family, when) in enumerate(
            zip(("registration", "referral", "placement", "retention"), times, strict=True)
        )
    ]
    values = [
        '{"name": "髙橋 𠮷野", "q": "a\\"b\\\\u0000"}'.encode(),
        b'{"n": 1e5, "list": [1, 2, {"x": null}]}',
        b"{}",
        '{"emoji": "\\ud83d\\ude00 😀"}'.encode(),
    ]
    rows = [(e, v, i % 2 == 0, i != 1) for i, (e, v) in enumerate(zip(events, values, strict=True))]
    now = datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=UTC)
    columns = ("event_id", "person_key", "family", "event_time", "data", "applied_at", "block_opens")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMP TABLE mine (LIKE sv_events INCLUDING DEFAULTS) ON COMMIT DROP")
        await conn.execute("CREATE TEMP TABLE theirs (LIKE sv_events INCLUDING DEFAULTS) ON COMMIT DROP")
        payload = memoryview(store.events_payload(rows, now))
        await conn.copy_to_table("mine", source=payload, columns=columns, format="binary")
        await conn.copy_records_to_table(
            "theirs",
            records=[
                (e.event_id, e.person_key, e.family, e.time, v, now if vis else None, o)
                for e, v, vis, o in rows
            ],
            columns=columns,
        )
        read = "SELECT event_id, person_key, family, event_time, data::text, applied_at, block_opens FROM {} ORDER BY 1"
        mine = [tuple(r) for r in await conn.fetch(read.format("mine"))]
        assert mine == [tuple(r) for r in await conn.fetch(read.format("theirs"))]
    assert [r[3] for r in mine] == times and [r[4].encode() for r in mine] == values
    assert [r[5] for r in mine] == [now, None, now, None] and [r[6] for r in mine] == [
        True,
        False,
        True,
        True,
    ]


def _extensions(view: PersonView) -> list[PersonView]:
    """Ways a batch extends a record (``domain.shared_view.extend``): one jsonb field or several changed,
    the others the stored record's own objects or equal copies of them, registration fields, masked."""
    placement = {"placement_id": "p-1", "office": "1301", "site": "131016-01", "placed_on": "2026-05-01",
                 "route": "referral", "occupation": "05", "employment_type": "full_time",
                 "employer_name": "株式会社 テスト"}  # fmt: skip
    referral = {**view.referrals[0], "referral_id": "r-new", "authority": "011002"} if view.referrals else {}
    return [
        view._replace(placements=(placement,)),
        view._replace(referrals=(*view.referrals, referral), referring_authorities=("011002", "131016")),
        view._replace(
            retention=(
                {
                    "placement_id": "p-1",
                    "checkpoint_months": 1,
                    "status": "employed",
                    "checked_on": "2026-06-01",
                },
            ),
            masked=True,
        ),
        view._replace(
            case_numbers=(*view.case_numbers, {"authority": "131016", "case_number": "K-0002"}),
            attributes=tuple(view.attributes),
        ),
        view._replace(referrals=tuple(dict(r) for r in view.referrals), placements=(placement,)),
        view._replace(name=None, phone="03-1111-1111", registered_on=date(2026, 5, 1), team_support=False),
        view._replace(referrals=(), referring_authorities=(), scopes=("share_registration",)),
        # as many items as stored, other values
        view._replace(
            referrals=tuple({**r, "programme": "general"} for r in view.referrals),
            recipient_offices=("1302",),
        ),
        view,
    ]


async def test_a_record_extended_in_place_is_stored_as_the_upsert_of_every_field_stores_it(
    pool: asyncpg.Pool,
) -> None:
    """``write_extended`` (unchanged jsonb fields staged as NULL and kept as stored) leaves each record as
    ``write_views`` (every field upserted) leaves it: the same row text of every field, for each way a
    batch extends a record."""
    people = [f"ext-{uuid.uuid4().hex[:12]}-{i:02d}" for i in range(len(_extensions(_record("x", 1))))]
    stored = {p: _record(p, 1 + i % 2) for i, p in enumerate(people)}
    extended = [_extensions(stored[p])[i] for i, p in enumerate(people)]
    as_text = f"SELECT person_key, row({', '.join(store.VIEW_FIELDS)})::text FROM sv_persons WHERE person_key = ANY($1::text[])"
    counts = "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'sv_persons'"
    async with pool.acquire() as conn:
        async with conn.transaction():
            await store.begin(conn, [0])
            await store.write_views(conn, store.view_rows(stored.values()))
        try:
            rows = {}
            for name in ("upsert", "extended"):
                tx = conn.transaction()
                await tx.start()
                try:
                    await store.begin(conn, [0])
                    read = {v.person_key: v for v in await store.load_views(conn, people)}
                    before = await conn.fetchrow(counts)
                    if name == "upsert":
                        await store.write_views(conn, store.view_rows(extended))
                    else:
                        await store.write_extended(conn, store.extended_rows(extended, read))
                    after = await conn.fetchrow(counts)
                    assert after[0] - before[0] == len(people)  # each record updated once, none inserted
                    rows[name] = dict(await conn.fetch(as_text, people))
                finally:
                    await tx.rollback()
            assert rows["extended"] == rows["upsert"]
            assert len(rows["upsert"]) == len(people)
            assert rows["upsert"] != dict(await conn.fetch(as_text, people))  # the extensions changed them
        finally:
            await conn.execute("DELETE FROM sv_persons WHERE person_key = ANY($1::text[])", people)


async def test_migration_071_gives_each_kept_case_number_its_authority_where_one_referred(
    pool: asyncpg.Pool,
) -> None:
    """Records kept before 071 held the case numbers as one list: a number goes to the one authority that
    referred the person; of a person several authorities referred, to none (null: Hello Work only) until
    a replay rebuilds the record from its sealed referrals. What the migration writes loads as the
    records ``project`` builds."""
    sql = (MIGRATIONS / "071_sv_case_numbers_by_authority.sql").read_text(encoding="utf-8")
    one, two, none = (f"m071-{uuid.uuid4().hex[:12]}-{i}" for i in range(3))
    async with pool.acquire() as conn, conn.transaction():
        await store.begin(conn, [0])
        await store.write_views(
            conn,
            store.view_rows(
                [
                    _record(one, 1)._replace(case_numbers=()),
                    _record(two, 1)._replace(referring_authorities=("131016", "131059"), case_numbers=()),
                    _record(none, 0)._replace(referring_authorities=(), case_numbers=()),
                ]
            ),
        )
        old = {one: ["K-2", "K-1"], two: ["K-9", "B-3"]}
        for person, numbers in old.items():
            await conn.execute(
                "UPDATE sv_persons SET case_numbers = $2::text::jsonb WHERE person_key = $1",
                person,
                json.dumps(numbers),
            )
        await conn.execute(sql)
        views = {v.person_key: v for v in await store.load_views(conn, [one, two, none])}
        await conn.execute("DELETE FROM sv_persons WHERE person_key = ANY($1::text[])", [one, two, none])
    assert views[one].case_numbers == (
        {"authority": "131016", "case_number": "K-1"},
        {"authority": "131016", "case_number": "K-2"},
    )
    assert views[two].case_numbers == (
        {"authority": None, "case_number": "B-3"},
        {"authority": None, "case_number": "K-9"},
    )
    assert views[none].case_numbers == ()
