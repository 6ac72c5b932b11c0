"""The same event id at two offsets — what a relay re-send produces — takes effect once in every consumer.

The whole stream is sent, the event log, the shared view and the feed's projection catch up; then every
event is sent again under the same id (each at a second, later offset, after everything that followed it
the first time) and they catch up again: nothing they hold may change.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from consumers.catchup import run_until_caught_up
from consumers.event_log import EventLogHandler
from consumers.feed.projection import FeedProjection
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.store import load_views
from contracts.envelope import Event, encode
from devtools.simulator import SimulationConfig, simulate
from infra.config import Settings
from infra.crypto import KeyStore
from infra.kafka import client_options
from producers.submission import to_event

FEED_TABLES = ("feed_registrations", "feed_referrals", "feed_placements", "feed_retention", "feed_consents")


async def _send(settings: Settings, events: list[Event]) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=20)
    await producer.start()
    try:
        for e in events:
            key, headers, value = encode(e)
            await producer.send(settings.topic(e.family), value, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def _state(conn: asyncpg.Connection, ids: list[str], persons: list[str]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "event_log": await conn.fetch(
            'SELECT event_id, topic, partition, "offset" FROM event_log WHERE event_id = ANY($1::text[]) '
            "ORDER BY event_id",
            ids,
        ),
        # by key: rows come back in their physical order, which an upsert of the same values may change
        "sv_persons": sorted(await load_views(conn, persons), key=lambda v: v.person_key),
        "sv_events": await conn.fetch(
            "SELECT event_id, applied_at FROM sv_events_applied WHERE person_key = ANY($1::text[]) ORDER BY event_id",
            persons,
        ),
    }
    for table in FEED_TABLES:
        rows = await conn.fetch(f"SELECT * FROM {table} WHERE person_key = ANY($1::text[])", persons)
        state[table] = sorted((tuple(r.items()) for r in rows), key=repr)
    return state


async def test_a_resent_event_takes_effect_once_everywhere(pool: asyncpg.Pool, settings: Settings) -> None:
    # The session's own topics: the shared view's replay test (which runs later) then rebuilds these
    # events too, duplicates included, and finds the view it had.
    own = settings
    subs = list(simulate(SimulationConfig(authorities=1, months=2, seed=13, registrations_per_site_month=8)))
    keystore = KeyStore.from_settings(own)
    async with pool.acquire() as conn:
        keys = await keystore.keys_for(conn, {s.person_key for s in subs})
    events = [to_event(s, keys[s.person_key]) for s in subs]
    ids = [e.id for e in events]
    persons = sorted({e.subject for e in events})

    async def catch_up() -> None:
        for handler in (EventLogHandler(own), SharedViewHandler(own), FeedProjection(own)):
            await run_until_caught_up(handler, own, pool, timeout_s=120)

    await _send(own, events)
    await catch_up()
    async with pool.acquire() as conn:
        once = await _state(conn, ids, persons)
    assert len(once["event_log"]) == len(events)
    assert once["sv_persons"], "some people consented: the view is not empty"
    assert once["feed_placements"], "the feed projection holds placements"

    await _send(own, events)  # every id again, each at a second offset
    await catch_up()
    async with pool.acquire() as conn:
        twice = await _state(conn, ids, persons)
    for part, rows in once.items():
        assert twice[part] == rows, f"{part} changed when the same events arrived a second time"
