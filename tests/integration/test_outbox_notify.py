"""Acceptance wakes the relay: the outbox rows and their NOTIFY are one statement (``infra.outbox_rows``),
and the notification arrives once the accepting transaction has committed."""

from __future__ import annotations

import os
import uuid

import asyncpg

from infra.config import Settings
from infra.crypto import KeyStore
from infra.db import OUTBOX_CHANNEL, connect
from infra.outbox_rows import COPY_FROM, insert_events
from producers.ingest import accept
from producers.submission import to_event
from tests import factories
from tests.helpers import wait_for


async def test_an_accepted_event_notifies_the_relay_at_commit(pool: asyncpg.Pool, settings: Settings) -> None:
    listener = await connect(settings)
    heard: list[str] = []
    await listener.add_listener(OUTBOX_CHANNEL, lambda *args: heard.append(str(args[2])))
    try:
        async with pool.acquire() as conn:
            events = await accept(
                conn,
                KeyStore.from_settings(settings),
                [factories.referral(factories.person_key())],
                origin="test",
                namespace=settings.topic_namespace,
            )
            count = await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", events[0].id)
        assert count == 1

        async def notifications() -> int:
            return len(heard)

        await wait_for(notifications, until=lambda n: n >= 1, timeout_s=30)
        assert heard[0] == OUTBOX_CHANNEL
    finally:
        await listener.close()


async def test_two_file_chunks_in_one_transaction_write_each_event_once(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A chunk's rows go in through a staging table that is emptied only at commit: each call takes out
    what it staged, so a second chunk in the same transaction does not write the first one's again."""
    key = os.urandom(32)
    chunks = [
        [to_event(factories.referral(factories.person_key()), key) for _ in range(COPY_FROM)]
        for _ in range(2)
    ]
    origin = f"test-chunks-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        async with conn.transaction():
            for chunk in chunks:
                await insert_events(conn, chunk, origin=origin, namespace=settings.topic_namespace)
        rows = await conn.fetch("SELECT event_id FROM outbox WHERE origin = $1 ORDER BY id", origin)
    assert [r["event_id"] for r in rows] == [e.id for e in chunks[0] + chunks[1]]
