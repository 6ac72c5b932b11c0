"""Replay: rebuild the shared view from the topics, from scratch, as today's consents and erasures say.

The view tables are emptied in the same transaction that forgets the consumer's positions, then the
ordinary projection runs from offset zero until it reaches the end offsets taken at the start. People on
the erasure register are skipped (their sealed data could not be opened anyway). Because a record is a
pure function of a person's events and consent, the result equals the view built incrementally.

Only one writer may own the view: the live consumer (``hub run shared-view``) holds ``SERVICE_LOCK``,
and a replay refuses to start while it does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from consumers.catchup import end_offsets, run_until
from consumers.shared_view.handler import SharedViewHandler, runtime_for
from infra.config import Settings

SERVICE_LOCK = 7_204_002


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


async def reset_view(conn: asyncpg.Connection, consumer: str) -> None:
    """Empty the view and forget the consumer's positions, atomically."""
    async with conn.transaction():
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
    async with pool.acquire() as lock_conn:
        if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", SERVICE_LOCK):
            raise ReplayRefused("the shared-view consumer is running ('hub run shared-view'); stop it first")
        try:
            started = time.perf_counter()
            ends = await end_offsets(settings, handler.topics)
            await reset_view(lock_conn, handler.name)
            runtime = runtime_for(handler, settings, pool, role="replay")
            await run_until(runtime, pool, ends, progress=progress)
            persons = await lock_conn.fetchval("SELECT count(*) FROM sv_persons")
            return ReplayResult(
                events=sum(ends.values()),
                seconds=time.perf_counter() - started,
                persons=persons,
                masked_events=handler.masked_events,
            )
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", SERVICE_LOCK)
