"""No data key outlives a person's erasure, whatever becomes of the acceptance that asked for one.

Sealing runs before the accepting transaction (``KeyStore.keys_for`` commits the keys it makes), and the
erasure fence inside that transaction used to delete a key made for an erased person. When that
transaction refused the person or rolled back instead (a refusal at the fence, or anything failing
after it), the deletion rolled back with it: an erased person had a data key
again. Now no key is ever stored for a person on the erasure register.

The database checks that once per statement (migration 020): the rows a statement inserted are joined to
the register after the acceptance erasure lock was granted, and any of an erased person's fails the
statement whole. The last two tests hold that form to the guarantee: they fail if the check is removed,
or if it reads the register with the statement's own snapshot (taken before the lock was granted).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from contracts.envelope import Event
from infra.config import Settings
from infra.crypto import KeyStore
from infra.db import AdvisoryLock
from producers.holders import ErasedMeanwhile
from producers.ingest import accept
from producers.outbox import accept_sealed
from producers.submission import Checked, build_event, seal_checked, validate
from tests import factories
from tests.helpers import accept_then_erase


async def _keys(conn: asyncpg.Connection, person: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", person))


async def _sealed(conn: asyncpg.Connection, keystore: KeyStore, checked: Checked, source: str) -> Event:
    """An event sealed as the acceptance path sealed them before the accepting transaction stored the
    keys itself: under a key ``KeyStore.keys_for`` stores (and commits) first, outside any transaction."""
    keys = await keystore.keys_for(conn, [checked.subject])
    return build_event(checked, source, seal_checked(checked, keys[checked.subject]))


async def _erased(pool: asyncpg.Pool, settings: Settings) -> str:
    person = factories.person_key()
    async with pool.acquire() as conn:
        await accept_then_erase(conn, settings, person)
        assert await _keys(conn, person) == 0
    return person


async def test_a_refused_acceptance_of_an_erased_person_leaves_no_data_key(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    person = await _erased(pool, settings)
    sub = factories.registration(person)
    checked = validate(sub.family, sub.data, time=sub.time, event_id=sub.event_id, trusted=True)
    async with pool.acquire() as conn:
        event = await _sealed(conn, KeyStore.from_settings(settings), checked, sub.source)
        verdicts = await accept_sealed(conn, [[event]], {}, origin="test", namespace=settings.topic_namespace)
        assert verdicts.erased == {person} and not verdicts.kept
        assert await _keys(conn, person) == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", event.id) == 0


async def test_an_acceptance_failing_after_the_fence_leaves_no_data_key(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    person = await _erased(pool, settings)
    sub = factories.registration(person)
    checked = validate(sub.family, sub.data, time=sub.time, event_id=sub.event_id, trusted=True)
    async with pool.acquire() as conn:
        await _sealed(conn, KeyStore.from_settings(settings), checked, sub.source)
        with pytest.raises(ErasedMeanwhile):
            await accept(conn, KeyStore.from_settings(settings), [sub], origin="test",
                         namespace=settings.topic_namespace)  # fmt: skip
        assert await _keys(conn, person) == 0


_INSERT_KEYS = (
    "INSERT INTO person_data_keys (person_key, version, wrapped) "
    "SELECT p, 1, '\\x00' FROM unnest($1::text[]) AS p"
)


async def test_a_statement_storing_keys_for_many_people_stores_none_if_one_is_erased(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    erased = await _erased(pool, settings)
    others = [factories.person_key() for _ in range(3)]
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.RestrictViolationError) as refused:
            await conn.execute(_INSERT_KEYS, [*others[:2], erased, others[2]])
        assert erased not in str(refused.value)  # the refusal names nobody
        assert [await _keys(conn, p) for p in [erased, *others]] == [0, 0, 0, 0]
        # The key store gives everyone a key to seal with, and stores the others' alone.
        keys = await KeyStore.from_settings(settings).keys_for(conn, [others[0], erased, *others[1:]])
        assert sorted(keys) == sorted([erased, *others])
        assert [await _keys(conn, p) for p in [erased, *others]] == [0, 1, 1, 1]


async def test_a_key_insert_waiting_for_an_erasure_in_flight_stores_no_key_for_that_person(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    person, other = factories.person_key(), factories.person_key()
    async with pool.acquire() as eraser, pool.acquire() as inserter:
        async with eraser.transaction():  # an erasure in flight: the lock held, the register written
            await eraser.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.ACCEPTANCE_ERASURE)
            await eraser.execute(
                "INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 'test')", person
            )
            inserting = asyncio.create_task(
                KeyStore.from_settings(settings).keys_for(inserter, [other, person])
            )
            await _until_waiting_for_a_lock(eraser, inserter.get_server_pid())
        keys = await inserting
    assert sorted(keys) == sorted([person, other])
    async with pool.acquire() as conn:
        assert await _keys(conn, person) == 0  # its statement began before the erasure committed
        assert await _keys(conn, other) == 1


async def _until_waiting_for_a_lock(conn: asyncpg.Connection, pid: int) -> None:
    """Until the backend ``pid`` waits for an advisory lock (bounded, so that a test that never gets
    there ends)."""
    for _ in range(3000):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted", pid
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the key insert never waited for the erasure's lock")
