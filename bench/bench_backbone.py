"""Backbone bench: for the same 200,000 simulated events in one run, the raw aiokafka consume rate
(the ceiling) and the walking-skeleton consumer's rate (decode + validate + one PostgreSQL transaction
per batch with offsets), and their ratio; then ``hub run event-log --workers N`` as separate processes
(N = 1, 2 by default), from the first committed batch to the last, each against the same ceiling.

    .venv/bin/python -m bench.bench_backbone [--events 200000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time

import asyncpg

from bench.common import (
    Figure,
    bench_settings,
    fresh_pool,
    peak_rss_mib,
    produce,
    raw_consume_rate,
    sealed_records,
)
from consumers.event_log import EventLogHandler
from consumers.runtime import ConsumerRuntime
from infra.config import Settings
from infra.logging import configure_logging


async def workers_rate(settings: Settings, pool: asyncpg.Pool, total: int, workers: int) -> Figure:
    """``hub run event-log --workers N`` over the whole stream, timed from its first committed batch (the
    processes' start and the group's first rebalance are not the consumer's rate) to its last."""
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE event_log")
        await conn.execute("DELETE FROM consumer_offsets WHERE consumer = 'event-log'")
        env = {
            **os.environ,
            "HUB_PG_DATABASE": settings.pg_database,
            "HUB_TOPIC_NAMESPACE": settings.topic_namespace,
            "HUB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "HUB_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "hub.cli", "run", "event-log", "--workers", str(workers)]
        proc = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.DEVNULL)
        progress = "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = 'event-log'"
        try:
            while (first := int(await conn.fetchval(progress))) == 0:
                await asyncio.sleep(0.02)
            started = time.perf_counter()
            while await conn.fetchval(progress) < total:
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
        assert await conn.fetchval("SELECT count(*) FROM event_log") == total
    name = f"hub run event-log, {workers} process{'es' if workers > 1 else ''}"
    return Figure(name, total - first, seconds)


async def main(total: int, workers: list[int]) -> None:
    settings = bench_settings("backbone")
    configure_logging("WARNING")
    pool = await fresh_pool(settings)
    t0 = time.perf_counter()
    records = sealed_records(total)
    print(f"generated and sealed {len(records):,} events in {time.perf_counter() - t0:.1f} s")
    produced = await produce(settings, records)
    print(f"produced to Kafka in {produced:.1f} s ({total / produced:,.0f} ev/s, acks=all, idempotent)")
    del records
    # The bench process just built 200k events; a real consumer process holds none of them. Collect and
    # freeze that heap so the cyclic GC does not bill the consumers below for scanning it.
    gc.collect()
    gc.freeze()

    raw = Figure(
        "raw aiokafka consume (ceiling)",
        total,
        await raw_consume_rate(settings, list(settings.event_topics), total),
    )

    runtime = ConsumerRuntime(EventLogHandler(settings), settings, pool, group_id="bench-event-log")
    started = time.perf_counter()
    task = asyncio.create_task(runtime.run())
    async with pool.acquire() as conn:
        # progress from the positions table (cheap), not count(*) over a growing table
        while (
            await conn.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = $1",
                runtime.handler.name,
            )
            < total
        ):
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT count(*) FROM event_log") == total
    skeleton = Figure("skeleton consumer (event_log)", total, time.perf_counter() - started)
    runtime.stop()
    await task
    print()
    print(raw.line())
    print(skeleton.line(raw))
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")
    for n in workers:
        print((await workers_rate(settings, pool, total, n)).line(raw))
    await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2", help="process counts to measure, e.g. 1,2 ('' for none)")
    args = parser.parse_args()
    asyncio.run(main(args.events, [int(n) for n in args.workers.split(",") if n]))
