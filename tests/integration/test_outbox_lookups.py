"""The outbox's event ids are found by its index (a hash index since migration 059a), as by reading the
whole table: the shared view's look-up of a withdrawal's acceptance time (``store._log_withdrawals``), an
event id with two rows (a redrive adds one) and one not there."""

from __future__ import annotations

import os

import asyncpg
import orjson

from infra.config import Settings
from infra.crypto import KeyStore
from producers.ingest import accept
from tests import factories

_ACCEPTED_AT = "SELECT min(accepted_at) FROM outbox WHERE event_id = $1"


async def test_an_event_id_is_found_by_the_index_as_by_reading_the_table(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    subs = [factories.placement(factories.person_key()) for _ in range(3)]
    async with pool.acquire() as conn:
        events = await accept(
            conn, KeyStore.from_settings(settings), subs, origin="test", namespace=settings.topic_namespace
        )
        # a second row of the first event, later (as a console redrive writes one)
        await conn.execute(
            "INSERT INTO outbox (topic, key, headers, value, event_id, origin, accepted_at) "
            "SELECT topic, key, headers, value, event_id, 'console-redrive', accepted_at + interval '1 hour' "
            "FROM outbox WHERE event_id = $1",
            events[0].id,
        )
        ids = [e.id for e in events] + [os.urandom(16).hex()]
        found: dict[str, list[object]] = {}
        for scans in ("enable_seqscan", "enable_indexscan, enable_bitmapscan"):
            async with conn.transaction():
                for setting in scans.split(", "):
                    await conn.execute(f"SET LOCAL {setting} = off")
                plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {_ACCEPTED_AT}", ids[0])  # json: read
                found[scans] = [await conn.fetchval(_ACCEPTED_AT, i) for i in ids]
            if scans == "enable_seqscan":
                assert "outbox_event_id" in orjson.dumps(plan).decode(), plan
        times = await conn.fetch(
            "SELECT accepted_at FROM outbox WHERE event_id = $1 ORDER BY accepted_at", events[0].id
        )
    assert found["enable_seqscan"] == found["enable_indexscan, enable_bitmapscan"]
    assert found["enable_seqscan"][0] == times[0]["accepted_at"] and len(times) == 2
    assert found["enable_seqscan"][-1] is None
    assert None not in found["enable_seqscan"][:-1]
