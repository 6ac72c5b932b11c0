"""Replay: rebuild the shared view from the topics, from scratch, as today's consents and erasures say.

The view tables are emptied in the same transaction that forgets the consumer's positions, then the
ordinary projection runs from offset zero until it reaches the end offsets taken at the start. People on
the erasure register are skipped (their sealed data could not be opened anyway). Because a record is a
pure function of a person's events and consent, the result equals the view built incrementally.

Only one writer may own the view: the live consumer (``hub run shared-view``) leads the
``shared-view`` role (``infra.leadership``, lock ``AdvisoryLock.SHARED_VIEW_ROLE``), and a replay refuses to start while
it does. Every write of the replay is fenced by its epoch; if its lock is lost on the way (a database
restart), the replay stops and says so rather than race a consumer that took the lock meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from consumers.catchup import end_offsets, run_until
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from infra.config import Settings
from infra.db import AdvisoryLock
from infra.leadership import Leadership


class ReplayRefused(Exception):
    """``reason`` says why (safe to show)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ReplayResult:
    events: int
    seconds: float
    persons: int
    masked_events: int


async def reset_view(
    conn: asyncpg.Connection,
    consumer: str,
    fence: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> None:
    """Empty the view and forget the consumer's positions, atomically (and only as the leader)."""
    async with conn.transaction():
        if fence is not None:
            await fence(conn)
        await conn.execute("TRUNCATE sv_persons, sv_events, sv_consents")
        await conn.execute("DELETE FROM consumer_offsets WHERE consumer = $1", consumer)


async def replay(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    handler: SharedViewHandler | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    handler = handler or SharedViewHandler(settings)
    leadership = Leadership(settings, "shared-view", AdvisoryLock.SHARED_VIEW_ROLE)
    if not await leadership.acquire_now():
        raise ReplayRefused("the shared-view consumer is running ('hub run shared-view'); stop it first")
    try:
        started = time.perf_counter()
        ends = await end_offsets(settings, handler.topics)
        async with pool.acquire() as conn:
            await reset_view(conn, handler.name, leadership.fence)
        runtime = ConsumerRuntime(handler, settings, pool, role="replay", fence=leadership.fence)
        catching_up = asyncio.create_task(run_until(runtime, pool, ends, progress=progress))
        lost = asyncio.create_task(leadership.lost.wait())
        await asyncio.wait({catching_up, lost}, return_when=asyncio.FIRST_COMPLETED)
        if not catching_up.done():
            runtime.stop()
            with contextlib.suppress(Exception):
                await catching_up
            raise ReplayRefused(
                "the replay lost its lock (the database connection ended); nothing was written after "
                "that: run 'hub replay shared-view' again"
            )
        lost.cancel()
        await catching_up
        async with pool.acquire() as conn:
            persons = await conn.fetchval("SELECT count(*) FROM sv_persons")
        return ReplayResult(
            events=sum(ends.values()),
            seconds=time.perf_counter() - started,
            persons=persons,
            masked_events=handler.masked_events,
        )
    finally:
        await leadership.close()
