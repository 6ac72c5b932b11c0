"""Several shared-view processes. One run of them is one writer (``infra.leadership.SharedEpoch`` /
``Follower``): a worker of the run writes only under the epoch its holder published, never before the
holder leads, never after it let go, and never once another holder has taken the role. And two workers'
transactions about one person take turns (``consumers.shared_view.store.begin``)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from consumers.runtime import Consumed
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.store import load_views
from contracts.envelope import decode, encode
from infra.config import Settings
from infra.crypto import KeyStore
from infra.db import AdvisoryLock
from infra.leadership import Follower, Leadership, LeadershipLost, SharedEpoch
from producers.submission import Submission, to_event
from tests import factories
from tests.helpers import wait_for

KEY = 7_299_301  # a key of this test's own (advisory locks are per database: the session's own)


async def _fenced(pool: asyncpg.Pool, follower: Follower) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await follower.fence(conn)


async def test_a_follower_writes_only_under_its_holders_epoch(pool: asyncpg.Pool, settings: Settings) -> None:
    role = f"test-share-{uuid.uuid4().hex[:8]}"
    share = SharedEpoch()
    follower = Follower(role, share)
    holder = Leadership(settings, role, KEY, share=share)
    with pytest.raises(LeadershipLost):
        await _fenced(pool, follower)  # the holder does not lead yet
    assert await holder.acquire_now()
    assert share.epoch == holder.epoch is not None
    await _fenced(pool, follower)
    first = share.epoch
    await holder.close()
    assert share.epoch is None
    with pytest.raises(LeadershipLost):
        await _fenced(pool, follower)  # the holder let go

    other = Leadership(settings, role, KEY)  # another deployment takes the role
    try:
        assert await other.acquire_now()
        share.publish(first)  # as a worker would see a holder that has not noticed its loss yet
        with pytest.raises(LeadershipLost, match="superseded"):
            await _fenced(pool, follower)
        assert not await Leadership(settings, role, KEY, share=share).acquire_now()
    finally:
        await other.close()


# --- two workers' transactions about one person ------------------------------------------------------


def _consumed(settings: Settings, sub: Submission, key: bytes, offset: int) -> Consumed:
    event = to_event(sub, key)
    k, headers, value = encode(event)
    return Consumed(decode(k, headers, value, fast=True), settings.topic(event.family), 0, offset, value)


async def _waiting_for_a_person_lock(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        waiting: int = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND classid = $1 "
            "AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            AdvisoryLock.SHARED_VIEW_PERSONS,
        )
    return waiting


async def test_two_workers_take_turns_on_one_person(pool: asyncpg.Pool, settings: Settings) -> None:
    """A person's consent in one worker's batch and their registration in another's, at the same time
    (an assignment that is not person-affine, or a member a rebalance left behind): without the person
    lock the second batch reads no consent (the first has not committed), holds the registration, and
    the person shows in the view without it for good."""
    pk = factories.person_key()
    async with pool.acquire() as conn:
        key = (await KeyStore.from_settings(settings).keys_for(conn, {pk}))[pk]
    consent = _consumed(settings, factories.consent(pk), key, 1)
    registration = _consumed(settings, factories.registration(pk), key, 2)

    async def second_worker() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await SharedViewHandler(settings).handle(conn, [registration])

    async with pool.acquire() as first:
        tx = first.transaction()
        await tx.start()
        try:
            await SharedViewHandler(settings).handle(first, [consent])
            second = asyncio.create_task(second_worker())
            await wait_for(lambda: _waiting_for_a_person_lock(pool), until=lambda n: n >= 1)
            assert not second.done()
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()
        await second
        [view] = await load_views(first, [pk])
    assert view.registered_on is not None and view.name == "髙橋 花子"
