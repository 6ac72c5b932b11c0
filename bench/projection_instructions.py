"""The shared view's client work per event in instructions, for valgrind: what a replay does for each
record (decode in the runtime's per-record loop, ``Consumed``, the handler: blocks opened and checked,
planned, stored; then each consent's record rebuilt from the stored events and written), against a real
database in one transaction that is rolled back, without Kafka.

Wall-clock rates swing with the machine's load; instruction counts do not. Run it twice with different
``--events`` under valgrind and divide the difference by the difference of the counts: everything else
(start-up, imports, sealing the records) is the same in both runs and cancels out.

    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m bench.projection_instructions --events 2000
    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m bench.projection_instructions --events 6000

Measured on main at 02c59e4: 5,576.0M and 6,619.0M instructions, 260.8k per event (the 4,000 more events:
2,988 non-consent, 1,012 consents). Of the difference, the interpreter's own loop ~16%, allocation and dicts
~12%, base64 decoding of sealed blocks ~2.7%, ``bytes.count`` (nesting guards) ~2.8%.

Both runs seal the same ``--pool`` simulated events (keys stored in the bench database, as the adapters
store them) and take the first ``--events``: the non-consent ones in batches first, then the consents,
as a replay orders them (``consumers.shared_view.replay``); ``--order live`` keeps them as simulated
(consents among the events, as the live projection reads them: records extended batch after batch).

It also prints the CPU time its PostgreSQL session spent (read from ``/proc``: the server runs on this
machine), for the same difference between two runs: less steady than instructions under load, but the
server's part of the batch.
"""

from __future__ import annotations

import argparse
import asyncio
from itertools import islice

from aiokafka.structs import ConsumerRecord

from bench.bench_projection import _process_cpu
from bench.common import bench_settings, fresh_pool
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import Family, encode
from devtools.simulator import SimulationConfig, simulate
from infra.crypto import KeyStore
from infra.gc import fewer_collections
from infra.logging import configure_logging
from producers.submission import to_event


class _Rollback(Exception):
    pass


@fewer_collections()
async def main(events: int, pool_size: int, name: str, order: str) -> None:
    settings = bench_settings(name)
    configure_logging("WARNING")
    pool = await fresh_pool(settings)
    subs = list(
        islice(
            simulate(SimulationConfig(authorities=max(1, pool_size // 3400), months=12, seed=4)), pool_size
        )
    )
    if len(subs) < events:  # the simulated year of its authorities ended first
        raise SystemExit(f"only {len(subs):,} events simulated; take --events {len(subs):,} at most")
    async with pool.acquire() as conn:
        keys = await KeyStore.from_settings(settings).keys_for(conn, {s.person_key for s in subs})
    offsets: dict[str, int] = {}
    records = []
    for sub in subs:  # all of them in every run: only the number projected differs
        event = to_event(sub, keys[sub.person_key])
        key, headers, value = encode(event)
        topic = settings.topic(event.family)
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        records.append(
            ConsumerRecord(
                topic, 0, offset, 1_700_000_000_000, 0, key, value, None, len(key), len(value), tuple(headers)
            )
        )
    consents = settings.topic(Family.CONSENT)
    taken = records[:events]
    if order == "live":
        ordered = taken
    else:
        ordered = [r for r in taken if r.topic != consents] + [r for r in taken if r.topic == consents]
    handler = SharedViewHandler(settings)
    runtime = ConsumerRuntime(handler, settings, pool, group_id="bench-instructions")
    size = settings.batch_max_records
    good = 0
    async with pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        server_cpu = _process_cpu(backend)
        try:
            async with conn.transaction():
                for start in range(0, len(ordered), size):
                    part = ordered[start : start + size]
                    batch = await runtime._decode(part, {})
                    good += len(batch.good)
                    async with conn.transaction():  # a savepoint: each batch as the runtime commits it
                        await handler.handle(conn, batch.good)
                persons = await conn.fetchval("SELECT count(*) FROM sv_persons")
                server_cpu = _process_cpu(backend) - server_cpu
                raise _Rollback
        except _Rollback:
            pass
    await pool.close()
    print(
        f"{events} records ({order} order), {good} decoded and projected (rolled back); {persons} people in "
        f"the view; PostgreSQL CPU {server_cpu:.3f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6_000)
    parser.add_argument(
        "--pool", type=int, default=8_000, help="events simulated and sealed in every run (at most)"
    )
    parser.add_argument(
        "--name", default="svinstr", help="the bench database's suffix (one per parallel run)"
    )
    parser.add_argument(
        "--order",
        choices=("replay", "live"),
        default="replay",
        help="the events as a replay or the live projection reads them",
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.pool, args.name, args.order))
