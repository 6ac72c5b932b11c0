"""One run of several processes is one writer (``infra.leadership.SharedEpoch`` / ``Follower``): a worker
of the run writes only under the epoch its holder published, never before the holder leads, never after
it let go, and never once another holder has taken the role."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from infra.config import Settings
from infra.leadership import Follower, Leadership, LeadershipLost, SharedEpoch

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
