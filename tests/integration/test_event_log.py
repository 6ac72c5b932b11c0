"""The event log's batch write: every event once, its JSON exactly as it travelled.

A batch normally goes in with one COPY; an id already there (a relay re-send), or twice in the batch,
takes the other way in. Either way the log holds each event once, with the first record's position.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import asyncpg

from consumers.event_log import EventLogHandler
from consumers.runtime import Consumed
from contracts.envelope import decode, encode
from infra.config import Settings
from producers.submission import to_event
from tests import factories


def _consumed(settings: Settings, pk: str, offset: int) -> Consumed:
    event = to_event(factories.referral(pk), os.urandom(32))
    key, headers, value = encode(event)
    return Consumed(decode(key, headers, value, fast=True), settings.topic(event.family), 0, offset, value)


async def _rows(conn: asyncpg.Connection, ids: list[str]) -> dict[str, tuple[int, str]]:
    rows = await conn.fetch(
        'SELECT event_id, "offset", data::text AS data FROM event_log WHERE event_id = ANY($1::text[])', ids
    )
    return {r["event_id"]: (r["offset"], r["data"]) for r in rows}


async def test_each_event_is_logged_once_verbatim(pool: asyncpg.Pool, settings: Settings) -> None:
    handler = EventLogHandler(settings)
    pk = factories.person_key()
    first, second, third = (_consumed(settings, pk, offset) for offset in (1, 2, 3))
    # the same event with its JSON spaced out: what is stored is the record's own bytes
    spaced = first.value.replace(b'":', b'" :\n\t')
    assert spaced != first.value
    first = first._replace(value=spaced)
    ids = [first.event.id, second.event.id, third.event.id]
    async with pool.acquire() as conn:
        async with conn.transaction():
            await handler.handle(conn, [first, second])
        assert await _rows(conn, ids) == {ids[0]: (1, spaced.decode()), ids[1]: (2, second.value.decode())}

        # re-sent: the first again at a later offset, beside a new one and a repeat within the batch
        async with conn.transaction():
            await handler.handle(conn, [first._replace(offset=7), third, third._replace(offset=8)])
        assert await _rows(conn, ids) == {
            ids[0]: (1, spaced.decode()),
            ids[1]: (2, second.value.decode()),
            ids[2]: (3, third.value.decode()),
        }

        # only repeats within one batch, none in the log yet
        fourth = _consumed(settings, pk, 9)
        async with conn.transaction():
            await handler.handle(conn, [fourth, fourth._replace(offset=10)])
        assert await _rows(conn, [fourth.event.id]) == {fourth.event.id: (9, fourth.value.decode())}


async def test_every_column_holds_the_events_attribute_in_either_way_in(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The rows are built by position (the event's leading fields, then the record's place and bytes): each
    column must hold its own attribute, by the COPY and by the staging way alike."""
    handler = EventLogHandler(settings)
    pk = factories.person_key()
    first, second = _consumed(settings, pk, 4), _consumed(settings, pk, 5)
    async with pool.acquire() as conn:
        async with conn.transaction():
            await handler.handle(conn, [first])
        async with conn.transaction():  # the first again: the batch takes the staging way
            await handler.handle(conn, [first._replace(offset=6), second])
        for c in (first, second):
            row = await conn.fetchrow(
                'SELECT event_id, family, type, source, subject, event_time, topic, partition, "offset", '
                "data::text AS data FROM event_log WHERE event_id = $1",
                c.event.id,
            )
            e = c.event
            assert dict(row) == {
                "event_id": e.id,
                "family": e.family.value,
                "type": e.type,
                "source": e.source,
                "subject": e.subject,
                "event_time": e.time,
                "topic": c.topic,
                "partition": c.partition,
                "offset": c.offset,
                "data": c.value.decode(),
            }


async def test_the_logged_times_are_the_events_instants_at_any_offset(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """``event_time`` holds each event's instant, whatever offset its ``ce_time`` was written at. Checked in
    PostgreSQL (as UTC text), read back on the log's connection and on a fresh one, by either way in."""
    handler = EventLogHandler(settings)
    pk = factories.person_key()
    times = [
        "2025-04-03T09:15:00.123456+09:00",
        "2025-04-03T00:15:00Z",
        "2031-12-31T23:59:59.999999-03:30",
        "2000-01-01T09:00:00+09:00",  # the first instant of the supported range: 0 on the wire
        "2099-12-31T23:59:59.000001+14:00",
        "2026-11-28T10:00:00.5+05:45",
    ]
    batch = []
    for offset, text in enumerate(times):
        c = _consumed(settings, pk, offset)
        event = c.event._replace(time=datetime.fromisoformat(text))
        key, headers, value = encode(event)
        batch.append(c._replace(event=decode(key, headers, value, fast=True), value=value))
    assert [c.event.time for c in batch] == [datetime.fromisoformat(t) for t in times]
    ids = [c.event.id for c in batch]
    expected = {c.event.id: c.event.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") for c in batch}
    query = (
        "SELECT event_id, event_time, to_char(event_time AT TIME ZONE 'UTC', "
        """'YYYY-MM-DD"T"HH24:MI:SS.US') AS utc FROM event_log WHERE event_id = ANY($1::text[])"""
    )
    async with pool.acquire() as conn:
        async with conn.transaction():
            await handler.handle(conn, batch[:3])
        async with conn.transaction():  # the first again: the batch takes the staging way
            await handler.handle(conn, [batch[0]._replace(offset=9), *batch[3:]])
        on_log = {r["event_id"]: (r["event_time"], r["utc"]) for r in await conn.fetch(query, ids)}
    plain = await asyncpg.connect(settings.pg_dsn)
    try:
        on_plain = {r["event_id"]: (r["event_time"], r["utc"]) for r in await plain.fetch(query, ids)}
    finally:
        await plain.close()
    for c in batch:
        assert on_log[c.event.id] == on_plain[c.event.id] == (c.event.time, expected[c.event.id])
        assert on_log[c.event.id][0].tzinfo is UTC
