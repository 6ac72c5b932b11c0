"""Replay: rebuild the shared view from the topics, from scratch, as today's consents and erasures say.

The view tables are emptied in the same transaction that forgets the consumer's positions, then the
ordinary projection runs from offset zero until it reaches the end offsets taken at the start. People on
the erasure register are skipped (their sealed data could not be opened anyway). Because a record is a
pure function of a person's events and consent, the result equals the view built incrementally.

Only one writer may own the view: the live consumer (``hub run shared-view``) holds ``SERVICE_LOCK``,
and a replay refuses to start while it does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.runtime import ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler, runtime_for
from hub.config import Settings

SERVICE_LOCK = 7_204_002

Positions = dict[tuple[str, int], int]


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


async def end_offsets(settings: Settings, topics: Sequence[str]) -> Positions:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()  # aiokafka has no public refresh
                parts = consumer.partitions_for_topic(topic) or set()
            tps += [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def progress_of(conn: asyncpg.Connection, consumer: str, ends: Positions) -> int:
    """How many of the records before ``ends`` the consumer has committed."""
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1", consumer
    )
    done = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
    return sum(min(done.get(tp, 0), end) for tp, end in ends.items())


async def run_until_caught_up(
    runtime: ConsumerRuntime,
    pool: asyncpg.Pool,
    ends: Positions,
    *,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 3600.0,
) -> None:
    """Run ``runtime`` until it has committed everything before ``ends``, then stop it."""
    total = sum(ends.values())
    task = asyncio.create_task(runtime.run())
    deadline = time.monotonic() + timeout_s
    try:
        async with pool.acquire() as conn:
            while True:
                done = await progress_of(conn, runtime.handler.name, ends)
                if progress:
                    progress(done, total)
                if done >= total:
                    break
                if task.done():
                    await task  # surfaces the runtime's failure
                    raise RuntimeError("consumer stopped before catching up")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not caught up after {timeout_s}s ({done}/{total})")
                await asyncio.sleep(0.1)
    finally:
        runtime.stop()
        await task


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
            await run_until_caught_up(runtime, pool, ends, progress=progress)
            persons = await lock_conn.fetchval("SELECT count(*) FROM sv_persons")
            return ReplayResult(
                events=sum(ends.values()),
                seconds=time.perf_counter() - started,
                persons=persons,
                masked_events=handler.masked_events,
            )
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", SERVICE_LOCK)
