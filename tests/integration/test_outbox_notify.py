"""Acceptance wakes the relay: the outbox rows and their NOTIFY are one statement (``infra.outbox_rows``),
and the notification arrives once the accepting transaction has committed."""

from __future__ import annotations

import asyncpg

from infra.config import Settings
from infra.crypto import KeyStore
from infra.db import OUTBOX_CHANNEL, connect
from producers.ingest import accept
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
