"""The backbone's client work per event in instructions, for valgrind: what the consumer runtime does for
each record of the event log (decode in the runtime's per-record loop, ``Consumed``, the handler: its
checks and the COPY payload, sent to a real database in a transaction that is rolled back), without Kafka.

Wall-clock rates swing with the machine's load; instruction counts do not. Run it twice with different
``--events`` under valgrind and divide the difference by the difference of the counts: everything else
(start-up, imports, reading the records) is the same in both runs and cancels out.

    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m bench.backbone_instructions --events 2000
    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m bench.backbone_instructions --events 10000

Both runs read the same ``--pool`` records (built once, cached by ``bench.common.sealed_records``) and
turn all of them into Kafka records; only the number consumed differs.
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
from aiokafka.structs import ConsumerRecord

from bench.common import _drop_database, bench_settings, fresh_pool, sealed_records
from consumers.event_log import EventLogHandler
from consumers.runtime import ConsumerRuntime
from infra.gc import fewer_collections
from infra.logging import configure_logging


class _Rollback(Exception):
    pass


@fewer_collections()
async def main(events: int, pool_size: int, name: str) -> None:
    settings = bench_settings(name)
    configure_logging("WARNING")
    pool = await fresh_pool(settings)
    records = []
    offsets: dict[str, int] = {}
    for family, key, headers, value in sealed_records(pool_size):
        topic = settings.topic(family)
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        records.append(
            ConsumerRecord(
                topic, 0, offset, 1_700_000_000_000, 0, key, value, None, len(key), len(value), tuple(headers)
            )
        )
    handler = EventLogHandler(settings)
    runtime = ConsumerRuntime(handler, settings, pool, group_id="bench-instructions")
    size = settings.batch_max_records
    good = 0
    async with pool.acquire() as conn:
        for start in range(0, events, size):
            batch = await runtime._decode(records[start : min(start + size, events)], {})
            good += len(batch.good)
            try:
                async with conn.transaction():
                    await handler.handle(conn, batch.good)
                    raise _Rollback
            except _Rollback:
                pass
    await pool.close()
    admin = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + "/ittai")
    try:  # the run's database goes with it (the namespace's topics go at exit: ``bench_settings``)
        await _drop_database(admin, settings.pg_database)
    finally:
        await admin.close()
    print(f"{events} records, {good} decoded and written (rolled back)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--pool", type=int, default=12_000, help="records read (and built) in every run")
    parser.add_argument(
        "--name", default="bbinstr", help="the bench database's suffix (one per parallel run)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.pool, args.name))
