"""The shared view's store: every statement the projection runs, and the records as stored.

The handler loads a batch's state through it, plans in ``domain.shared_view`` and writes the plan through
it. Writes take the consumers' one bulk-write idiom (``infra.db.copy_to_stage``): the rows are copied
(binary ``COPY``, encoded by the driver in C) into a temporary staging table and merged with one
``INSERT … SELECT … ON CONFLICT`` per table and batch; repeats of an event are absorbed by
``ON CONFLICT`` on its id.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from consumers.consent_store import ConsentStore
from domain.shared_view import PersonView, ViewPlan, view_from_values
from infra.db import (  # the lock: batches shared, an erasure exclusive
    AdvisoryLock,
    copy_to_stage,
    stage_ddl,
    text_array,
)

consents = ConsentStore("sv_consents")


async def begin(conn: asyncpg.Connection, partitions: Iterable[int]) -> None:
    """Start a transaction's work on people's rows, in one round trip: take the erasure lock (shared), then
    the lock of each partition number its people's events go to (``AdvisoryLock.SHARED_VIEW_PERSONS``,
    ascending, so two transactions never wait for each other in a circle), set the planner's costs and
    declare the staging tables the writes below copy into.

    The partition locks are what make N workers correct under any assignment of partitions: a person's
    events are on one partition number on every topic (``infra.kafka.partitions_of``, the numbers come
    from the person keys, not from where the records were read), so two transactions about one person
    never overlap, and the second reads what the first committed (every statement of a READ COMMITTED
    transaction sees what committed before it began). Under the person-affine assignment the workers use
    (``ConsumerRuntime``'s range assignor), each worker's numbers are its own and no one waits."""
    locks = [_PERSONS_LOCK.format(int(p)) for p in sorted(set(partitions))]
    await conn.execute("; ".join((_ERASURE_SHARED, *locks, _SETUP)))


async def erased(conn: asyncpg.Connection, persons: Iterable[str]) -> frozenset[str]:
    rows = await conn.fetch(
        "SELECT person_key FROM sv_erasures WHERE person_key = ANY($1::text::text[])", text_array(persons)
    )
    return frozenset(r[0] for r in rows)


async def known_events(conn: asyncpg.Connection, event_ids: Sequence[str]) -> frozenset[str]:
    """Which of these events are stored already."""
    if not event_ids:
        return frozenset()
    rows = await conn.fetch(
        "SELECT event_id FROM sv_events WHERE event_id = ANY($1::text::text[])", text_array(event_ids)
    )
    return frozenset(r[0] for r in rows)


async def validity_candidates(conn: asyncpg.Connection, today: date) -> set[str]:
    """People whose consent may have started or ended by ``today`` (the sweep looks at them again)."""
    rows = await conn.fetch(
        "SELECT person_key FROM sv_persons WHERE valid_until < $1 OR valid_from > $1 "
        "UNION SELECT c.person_key FROM sv_consents c WHERE NOT c.withdrawn AND c.valid_from <= $1 "
        "AND (c.valid_until IS NULL OR c.valid_until >= $1) "
        "AND NOT EXISTS (SELECT 1 FROM sv_persons p WHERE p.person_key = c.person_key) "
        "AND NOT EXISTS (SELECT 1 FROM sv_erasures e WHERE e.person_key = c.person_key)",
        today,
    )
    return {r[0] for r in rows}


async def stored_events(conn: asyncpg.Connection, persons: Iterable[str]) -> list[asyncpg.Record]:
    """These people's stored events, as (person_key, event_id, family, event_time, data, block_opens): the
    handler reads them by position."""
    return await conn.fetch(
        "SELECT person_key, event_id, family, event_time, data, block_opens FROM sv_events "
        "WHERE person_key = ANY($1::text::text[])",
        text_array(persons),
    )


async def write_plan(
    conn: asyncpg.Connection,
    plan: ViewPlan,
    raw: Mapping[str, bytes],
    known: frozenset[str],
    opened: Mapping[str, Mapping[str, Any] | None],
) -> None:
    """Everything of ``plan`` but the records (``plan.write`` and the rebuilds, which the handler writes
    together with ``write_views``), in the batch's transaction. ``raw``: each event's JSON as received,
    stored verbatim (``json``: its bytes go straight into the binary COPY); ``known``: the ids of the
    plan's events stored already (not stored again); ``opened``: the new events' personal blocks as they
    opened on arrival (``None``: shut), whence each stored event's ``block_opens`` (migration 047)."""
    await consents.save(conn, plan.consents)
    await _store_events(conn, plan, raw, known, opened)
    await reveal(conn, plan.reveal)
    await remove(conn, plan.remove)
    await _log_withdrawals(conn, plan)


async def reveal(conn: asyncpg.Connection, persons: Iterable[str]) -> None:
    """Held events of these people become visible now: one row per person in ``sv_reveals``, from which
    ``sv_events_applied`` derives each held event's instant (its person's first reveal after it was
    stored; migration 028). Writing the instant into each held event instead rewrote two thirds of a
    replay's events (bench_projection, 100,000 events: 48,445 of 72,433 rows, 8.2 µs of PostgreSQL per
    event)."""
    persons = list(persons)
    if persons:
        await conn.execute(
            "INSERT INTO sv_reveals (person_key, revealed_at) "
            "SELECT p, clock_timestamp() FROM unnest($1::text::text[]) AS p",
            text_array(persons),
        )


async def remove(conn: asyncpg.Connection, persons: Iterable[str]) -> None:
    persons = list(persons)
    if persons:
        await conn.execute(
            "DELETE FROM sv_persons WHERE person_key = ANY($1::text::text[])", text_array(persons)
        )


_EVENT_COLUMNS = ("event_id", "person_key", "family", "event_time", "data", "applied_at", "block_opens")


async def _store_events(
    conn: asyncpg.Connection,
    plan: ViewPlan,
    raw: Mapping[str, bytes],
    known: frozenset[str],
    opened: Mapping[str, Mapping[str, Any] | None],
) -> None:
    """The plan's events not stored yet, copied straight into ``sv_events``: the batch's state says which
    are stored already (``known``, read in this transaction, under the locks of their people), and
    ``plan_batch`` keeps one of each id, so no staging table and ``ON CONFLICT`` are needed. The primary
    key stands behind that: an id stored meanwhile by another person's transaction (a forged repeat, the
    only way one id reaches two people) fails the batch, and the runtime dead-letters the event alone.
    Measured on bench_projection's stream of 100,000 events (a busy machine), PostgreSQL's time in the
    batch: the stage and ``INSERT … SELECT … ON CONFLICT`` 28%, the direct ``COPY`` 26%, one statement
    less. An event without a personal block is stored as one whose block opens (``block_opens``)."""
    rows = [
        (e, raw[e.event_id], visible, e.event_id not in opened or opened[e.event_id] is not None)
        for e, visible in plan.events
        if e.event_id not in known
    ]
    if rows:
        payload = memoryview(events_payload(rows, datetime.now(UTC)))  # a view: ``bytes`` reads as a path
        await conn.copy_to_table("sv_events", source=payload, columns=_EVENT_COLUMNS, format="binary")


# The events' rows are written in PostgreSQL's binary COPY format here, not by asyncpg's per-value encoders
# (4.1 us of client CPU per row of these seven values, measured on a loaded machine; the json value went
# through a Python codec call each): what goes in is what asyncpg would write — text as UTF-8, json as its
# text (json's binary form), timestamptz as microseconds since 2000-01-01 UTC (every event time is aware and
# within 2000-2099: ``contracts.types.in_supported_range``), bool as one byte.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # no flags, no header extension
_TRAILER = struct.pack(">h", -1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TEXT = struct.Struct(">i")
_TIME = struct.Struct(">iq")
_OPENS = {True: b"\x00\x00\x00\x01\x01", False: b"\x00\x00\x00\x01\x00"}
_NULL = _TEXT.pack(-1)


def events_payload(rows: Iterable[tuple[Any, bytes, bool, bool]], now: datetime) -> bytes:
    """``sv_events`` rows (``_EVENT_COLUMNS``) as one binary COPY: each (event, its JSON as received,
    visible now?, does its block open?); ``now``: ``applied_at`` of the visible ones."""
    head, text, time = struct.pack(">h", len(_EVENT_COLUMNS)), _TEXT.pack, _TIME.pack
    applied = time(8, (now - _PG_EPOCH) // _MICROSECOND)
    parts = [_SIGNATURE]
    for e, value, visible, opens in rows:
        event_id, person, family = e.event_id.encode(), e.person_key.encode(), e.family.encode()
        parts += (
            head,
            text(len(event_id)),
            event_id,
            text(len(person)),
            person,
            text(len(family)),
            family,
            time(8, (e.time - _PG_EPOCH) // _MICROSECOND),
            text(len(value)),
            value,
            applied if visible else _NULL,
            _OPENS[opens],
        )
    parts.append(_TRAILER)
    return b"".join(parts)


async def _log_withdrawals(conn: asyncpg.Connection, plan: ViewPlan) -> None:
    if not plan.withdrawals:
        return
    await conn.execute(
        "INSERT INTO sv_withdrawals (event_id, person_key, consent_id, accepted_at, removed_at, latency_ms) "
        "SELECT u.eid, u.pk, u.cid, o.accepted_at, clock_timestamp(), "
        "extract(epoch FROM clock_timestamp() - o.accepted_at) * 1000 "
        "FROM unnest($1::text[], $2::text[], $3::text[]) AS u(eid, pk, cid) "
        "LEFT JOIN LATERAL (SELECT min(accepted_at) AS accepted_at FROM outbox WHERE event_id = u.eid) o ON true "
        "ON CONFLICT (event_id) DO NOTHING",
        [c.event_id for c in plan.withdrawals],
        [c.person_key for c in plan.withdrawals],
        [c.record.consent_id for c in plan.withdrawals],
    )


_VIEW_COLUMNS = (
    ("person_key", "text"),
    ("consent_id", "text"),
    ("scopes", "jsonb"),
    ("recipient_authorities", "jsonb"),
    ("recipient_offices", "jsonb"),
    ("valid_from", "date"),
    ("valid_until", "date"),
    ("authority", "text"),
    ("office", "text"),
    ("site", "text"),
    ("registered_on", "date"),
    ("sex", "text"),
    ("age_band", "text"),
    ("attributes", "jsonb"),
    ("desired_occupation", "text"),
    ("team_support", "bool"),
    ("referring_authorities", "jsonb"),
    ("referrals", "jsonb"),
    ("placements", "jsonb"),
    ("retention", "jsonb"),
    ("name", "text"),
    ("name_kana", "text"),
    ("birth_date", "date"),
    ("phone", "text"),
    ("email", "text"),
    ("address", "text"),
    ("job_seeker_number", "text"),
    ("case_numbers", "jsonb"),
    ("masked", "bool"),
)
VIEW_FIELDS = tuple(name for name, _ in _VIEW_COLUMNS)
# jsonb is staged as its text (the pool's jsonb codec would serialise a Python value again) and cast once
# in the merge.
_VIEW_STAGE = ", ".join(f"{n} {'text' if k == 'jsonb' else k}" for n, k in _VIEW_COLUMNS)
_SELECT = ", ".join(f"{n}::jsonb" if k == "jsonb" else n for n, k in _VIEW_COLUMNS)
_NAMES = ", ".join(VIEW_FIELDS)
# The staged rows are taken out as they are merged (DELETE … RETURNING): a second write in the same
# transaction (the validity sweep's, a split batch's) starts from an empty stage.
_UPSERT = (
    f"WITH staged AS (DELETE FROM sv_persons_stage RETURNING *) "
    f"INSERT INTO sv_persons ({_NAMES}, updated_at) SELECT {_SELECT}, clock_timestamp() "
    f"FROM staged ON CONFLICT (person_key) DO UPDATE SET "
    + ", ".join(f"{n} = EXCLUDED.{n}" for n in (*VIEW_FIELDS[1:], "updated_at"))
)
_JSON_AT = tuple(i for i, (_, kind) in enumerate(_VIEW_COLUMNS) if kind == "jsonb")


def _view_row(view: PersonView, dumps: Any = orjson.dumps) -> list[Any]:
    row = list(view)
    for i in _JSON_AT:  # every jsonb field is a tuple, most of them empty (no placement yet, no retention)
        value = row[i]
        row[i] = dumps(value).decode() if value else "[]"
    return row


def view_rows(views: Iterable[PersonView]) -> list[list[Any]]:
    """These records as ``write_views`` copies them."""
    return [_view_row(v) for v in views]


def extended_rows(views: Iterable[PersonView], stored: Mapping[str, PersonView]) -> list[list[Any]]:
    """Records extended in place (``plan.write``) as ``write_extended`` copies them: a jsonb field equal to
    the stored record's (``stored``: the records as read in this transaction) is staged as NULL and kept as
    stored, not serialised here and parsed again by PostgreSQL. A batch's event changes one or two of a
    record's nine jsonb fields (its referrals, placements or retention)."""
    rows = []
    for view in views:
        before = stored[view.person_key]
        row = list(view)
        for i in _JSON_AT:
            value = row[i]
            if value is before[i] or value == before[i]:  # ``extend`` keeps an unchanged field's object
                row[i] = None
            else:
                row[i] = orjson.dumps(value).decode() if value else "[]"
        rows.append(row)
    return rows


async def write_views(conn: asyncpg.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Upsert these records (``view_rows``). Clear data: only in a transaction holding the erasure lock
    (``begin``, which also declares the staging table)."""
    if not rows:
        return
    await copy_to_stage(conn, "sv_persons_stage", _VIEW_STAGE, rows, declared=True)
    await conn.execute(_UPSERT)


# An extended record's row is there: it was read in this transaction (``load_views``), under the locks of its
# person's partition number, which every writer of a person's row takes (``begin``), and neither an erasure
# (the erasure lock) nor a replay's TRUNCATE can run before this transaction ends.
_UPDATE_EXTENDED = (
    "WITH staged AS (DELETE FROM sv_persons_stage RETURNING *) UPDATE sv_persons p SET "
    + ", ".join(
        f"{n} = coalesce(s.{n}::jsonb, p.{n})" if k == "jsonb" else f"{n} = s.{n}"
        for n, k in _VIEW_COLUMNS[1:]
    )
    + ", updated_at = clock_timestamp() FROM staged s WHERE p.person_key = s.person_key"
)


async def write_extended(conn: asyncpg.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Update records extended in place (``extended_rows``): what ``write_views`` would store, with the
    unchanged jsonb fields kept as stored (measured, 2,000 of bench_projection's records with one jsonb
    field changed, the backend's CPU: about a fifth less than the upsert of every field)."""
    if not rows:
        return
    await copy_to_stage(conn, "sv_persons_stage", _VIEW_STAGE, rows, declared=True)
    status = await conn.execute(_UPDATE_EXTENDED)
    if status != f"UPDATE {len(rows)}":  # see _UPDATE_EXTENDED: a broken invariant, never a lost write
        raise RuntimeError(f"shared view: {status} of {len(rows)} extended records")


async def load_views(conn: asyncpg.Connection, persons: Iterable[str] | None = None) -> list[PersonView]:
    """Records as stored (``None`` = everyone), for reads, tests and the replay comparison."""
    sql = f"SELECT {_NAMES} FROM sv_persons"
    rows = (
        await conn.fetch(sql + " WHERE person_key = ANY($1::text::text[])", text_array(persons))
        if persons is not None
        else await conn.fetch(sql)
    )
    return [view_from_row(r) for r in rows]


def view_from_row(row: asyncpg.Record) -> PersonView:
    """A record from a row selected as ``SELECT {VIEW_FIELDS}`` (every read of ``sv_persons`` does)."""
    # Positional, in the record's field order (checked below at import): a view is read per person per
    # batch, and 29 lookups by name cost more than the read itself.
    values = list(row)
    for i in _JSON_AT:
        values[i] = tuple(values[i])
    return view_from_values(values)


if PersonView._fields != VIEW_FIELDS:
    raise TypeError("sv_persons columns must follow PersonView's fields, in order")


# A batch looks up its ~2,000 people by key in tables that hold every person of the year. At the default
# random_page_cost (4, for disks) PostgreSQL scanned sv_events, sv_persons and sv_consents whole for each
# lookup (EXPLAIN ANALYZE on 100,000 events: 33 ms for the events, 32 ms for the reveal's UPDATE), a cost
# that grows with the year; the view is read from memory, so 1.1 is the true ratio, and the bitmap index
# scans take 27 ms and 16 ms, whatever the table's size. JIT compiles expressions for a seq scan once its
# estimated cost passes 100,000, tens of milliseconds for a lookup of milliseconds: off, for the batch.
#
# No seq scan where an index serves (``enable_seqscan = off``: the stage tables, which have none, are still
# scanned). asyncpg prepares each statement once per connection, and after five executions PostgreSQL keeps
# a generic plan, made for no array in particular. A replay starts on tables it has just emptied, and the
# generic plan kept then was a seq scan; with ``person_key = ANY($1)`` it compares every row with each of
# the 2,000 keys in turn (the hashed form is only for an array known at planning), and it stayed until
# autovacuum's next ANALYZE of the table, whenever that came. Measured (bench_projection's stream of
# 100,000 events, 1-process replay on a busy machine): the view's lookup by key took 65% of PostgreSQL's
# time, 151 µs of PostgreSQL per event (the projection: 69); with this, 70. Planning every batch's
# statements for their arrays (``plan_cache_mode = force_custom_plan``) gave 75 too, but costs ~20 ms of
# planning per batch (selectivity estimated for each of 2,000 keys).
_ERASURE_SHARED = f"SELECT pg_advisory_xact_lock_shared({AdvisoryLock.ERASURE.value})"
_PERSONS_LOCK = f"SELECT pg_advisory_xact_lock({AdvisoryLock.SHARED_VIEW_PERSONS.value}, {{}})"
_SETUP = "; ".join(
    (
        "SET LOCAL random_page_cost = 1.1",
        "SET LOCAL jit = off",
        "SET LOCAL enable_seqscan = off",
        stage_ddl("sv_persons_stage", _VIEW_STAGE),
    )
)
