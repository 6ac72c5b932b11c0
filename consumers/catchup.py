"""Running a consumer until it has applied everything on its topics right now (demo, replay, CLI, tests).

"Caught up" is judged from the positions the runtime commits to PostgreSQL with its effects, against the
topics' end offsets taken when catching up starts: the same source of truth as exactly-once itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.runtime import BatchHandler, ConsumerRuntime
from infra.config import Settings
from infra.kafka import client_options

Positions = dict[tuple[str, int], int]


async def end_offsets(settings: Settings, topics: Sequence[str]) -> Positions:
    """Each partition's end offset, for every partition of ``topics`` (missing topics have none)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
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


async def committed(conn: asyncpg.Connection, consumer: str) -> Positions:
    """The consumer's committed positions (next offset per partition)."""
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1", consumer
    )
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


def reached(done: Positions, ends: Positions) -> int:
    """How many of the records before ``ends`` the positions ``done`` have passed."""
    return sum(min(done.get(tp, 0), end) for tp, end in ends.items())


async def progress_of(conn: asyncpg.Connection, consumer: str, ends: Positions) -> int:
    """How many of the records before ``ends`` the consumer has committed."""
    return reached(await committed(conn, consumer), ends)


async def run_until(
    runtime: ConsumerRuntime,
    pool: asyncpg.Pool,
    ends: Positions,
    *,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 3600.0,
) -> None:
    """Run ``runtime`` until it has committed everything before ``ends``, then stop it cleanly."""
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
                    raise TimeoutError(f"not caught up after {timeout_s:.0f} s ({done}/{total})")
                await asyncio.sleep(0.1)
    finally:
        runtime.stop()
        await task


async def run_until_caught_up(
    handler: BatchHandler,
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 3600.0,
) -> ConsumerRuntime:
    """Catch ``handler`` up with its topics as they are now; returns the finished runtime (counts)."""
    ends = await end_offsets(settings, handler.topics)
    runtime = ConsumerRuntime(handler, settings, pool)
    await run_until(runtime, pool, ends, progress=progress, timeout_s=timeout_s)
    return runtime
