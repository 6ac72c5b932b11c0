"""Backbone bench: for the same 200,000 simulated events in one run, the raw aiokafka consume rate
(the ceiling) and the walking-skeleton consumer's rate (decode + validate + one PostgreSQL transaction
per batch with offsets), and their ratio.

    .venv/bin/python -m bench.bench_backbone [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

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
from infra.logging import configure_logging


async def main(total: int) -> None:
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
    await pool.close()

    print()
    print(raw.line())
    print(skeleton.line(raw))
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().events))
