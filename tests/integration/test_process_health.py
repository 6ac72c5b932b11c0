"""Readiness is process-wide (``infra.health``): a part that was made and put away must leave it as it
found it, or every HTTP app of the process answers 503 on ``/readyz`` from then on (the console's health
test failed whenever the portal's tests, which drain a relay, ran before it)."""

from __future__ import annotations

import asyncpg

from infra import health
from infra.config import Settings
from infra.crypto import KeyStore
from producers.ingest import accept
from producers.outbox import OutboxRelay
from tests import factories


async def test_a_relay_made_drained_and_closed_leaves_readiness_as_it_was(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    health.forget("leadership.relay")
    pk = factories.person_key()
    async with pool.acquire() as conn:
        await accept(
            conn, KeyStore.from_settings(settings), [factories.registration(pk)], origin="test",
            namespace=settings.topic_namespace,
        )  # fmt: skip
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
        assert await relay.drain() == 0  # nothing left: returns before taking the lead
    finally:
        await relay.close()
    assert "leadership.relay" not in health.failing(), health.failing()
    OutboxRelay(settings, pool)  # made, never run
    assert "leadership.relay" not in health.failing(), health.failing()
