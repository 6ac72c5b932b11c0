"""No data key outlives a person's erasure, whatever becomes of the acceptance that asked for one.

Sealing runs before the accepting transaction (``KeyStore.keys_for`` commits the keys it makes), and the
erasure fence inside that transaction used to delete a key made for an erased person. When that
transaction rolled back instead (``enqueue`` raising ``ErasedMeanwhile`` in the caller's transaction, or
anything failing after the fence), the deletion rolled back with it: an erased person had a data key
again. Now no key is ever stored for a person on the erasure register.
"""

from __future__ import annotations

import asyncpg
import pytest

from infra.config import Settings
from infra.crypto import KeyStore
from producers.holders import ErasedMeanwhile
from producers.ingest import accept, enqueue, seal_events
from producers.submission import validate
from tests import factories
from tests.helpers import accept_then_erase


async def _keys(conn: asyncpg.Connection, person: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", person))


async def _erased(pool: asyncpg.Pool, settings: Settings) -> str:
    person = factories.person_key()
    async with pool.acquire() as conn:
        await accept_then_erase(conn, settings, person)
        assert await _keys(conn, person) == 0
    return person


async def test_a_rolled_back_acceptance_of_an_erased_person_leaves_no_data_key(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    person = await _erased(pool, settings)
    sub = factories.registration(person)
    checked = [validate(sub.family, sub.data, time=sub.time, event_id=sub.event_id, trusted=True)]
    async with pool.acquire() as conn:
        events = await seal_events(conn, KeyStore.from_settings(settings), checked, [sub.source])
        with pytest.raises(ErasedMeanwhile):
            async with conn.transaction():  # the caller's transaction rolls back on the refusal
                await enqueue(conn, events, origin="test", namespace=settings.topic_namespace)
        assert await _keys(conn, person) == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", events[0].id) == 0


async def test_an_acceptance_failing_after_the_fence_leaves_no_data_key(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    person = await _erased(pool, settings)
    sub = factories.registration(person)
    checked = [validate(sub.family, sub.data, time=sub.time, event_id=sub.event_id, trusted=True)]
    async with pool.acquire() as conn:
        await seal_events(conn, KeyStore.from_settings(settings), checked, [sub.source])
        with pytest.raises(ErasedMeanwhile):
            await accept(conn, KeyStore.from_settings(settings), [sub], origin="test",
                         namespace=settings.topic_namespace)  # fmt: skip
        assert await _keys(conn, person) == 0
