"""Backbone bench: for the same 200,000 simulated events in one run, the raw aiokafka consume rate
(the ceiling) and the walking-skeleton consumer's rate (decode + validate + one PostgreSQL transaction
per batch with offsets), and their ratio; then ``hub run event-log --workers N`` as separate processes
(N = 1, 2 by default), from when all N are members of a stable group (the local broker starts a group
at once, so the first worker reads alone until the others join and the group rebalances) to the last
committed batch, each against the same ceiling. The events of that span are the figure's count.

The process figures read a longer stream: ``--scale-events`` more events (default 400,000, produced
after the first figures) on top of the ``--events``. Over ``--events`` alone, two processes finished
most of the stream before the second one had joined, and the span both ran was about a second: mostly
the join, so the figure was noise (0.12–0.32× in one evening). Each process line says how many events
were read before the group was stable and how long that took; the figure is the rest.

The ceiling reads as the runtime does: its fetch options and its collector policy (``bench.common``); the
same read at CPython's default collector is printed beside it, for figures measured before.

Each figure also gives the CPU it took over the same span, per event: the consumer's (this process for
the raw read and the skeleton, the ``hub run`` processes for the others) and that of the database's
sessions (read from ``/proc``: the server runs on this machine). On a busy machine the rates swing with
the load; the CPU per event is the steady figure.

    .venv/bin/python -m bench.bench_backbone [--events 200000] [--workers 1,2] [--scale-events 400000]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import signal
import sys
import time

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

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
from consumers.runtime import ConsumerRuntime, group_id_for
from infra.config import Settings
from infra.gc import freeze_what_lives
from infra.kafka import client_options
from infra.logging import configure_logging

_TICK = os.sysconf("SC_CLK_TCK")
_SCALE_PART = 100_000


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of one process so far; 0 for one that has ended."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every process below it (``hub run --workers N`` forks its workers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += _cpu_of(pid)
        todo += parents.get(pid, [])
    return total


async def _stable_group(settings: Settings, members: int) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        while True:
            (response,) = await admin.describe_consumer_groups([group_id_for("event-log", settings)])
            _error, _group, state, *_rest, found = response.groups[0][:6]
            if state == "Stable" and len(found) == members:
                return
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def server_cpu(conn: asyncpg.Connection) -> float:
    """CPU seconds so far of this database's client sessions."""
    pids = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
    )
    return sum(_cpu_of(r["pid"]) for r in pids)


def cpu_line(events: int, consumer: float, server: float) -> str:
    return (
        f"{'':38} CPU {consumer:6.1f} s consumer ({consumer / events * 1e6:5.1f} µs/event) + "
        f"{server:5.1f} s PostgreSQL ({server / events * 1e6:5.1f} µs/event)"
    )


async def workers_rate(
    settings: Settings, pool: asyncpg.Pool, total: int, workers: int
) -> tuple[Figure, str]:
    """``hub run event-log --workers N`` over the whole stream of ``total`` events, timed from when all N
    are members of a stable group (the processes' start and the group's rebalances are not the consumer's
    rate) to its last committed batch; the events committed before that are not counted."""
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
        launched = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.DEVNULL)
        progress = "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = 'event-log'"
        try:
            while int(await conn.fetchval(progress)) == 0:
                await asyncio.sleep(0.02)
            # The broker starts a group at once (no initial rebalance delay on the local stack): the first
            # worker takes every partition, the others join and the group rebalances. Timed from when all
            # of them are members of a stable group.
            await _stable_group(settings, workers)
            first = int(await conn.fetchval(progress))
            started = time.perf_counter()
            joined = started - launched
            cpu, server = _tree_cpu(proc.pid), await server_cpu(conn)
            while await conn.fetchval(progress) < total:
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
            cpu, server = _tree_cpu(proc.pid) - cpu, await server_cpu(conn) - server
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
        assert await conn.fetchval("SELECT count(*) FROM event_log") == total
    name = f"hub run event-log, {workers} process{'es' if workers > 1 else ''}"
    how = (
        f"{'':38} of {total:,}: {first:,} committed in the {joined:.1f} s to a stable group of {workers}, "
        f"not counted; the figure is the rest, to the last committed batch"
    )
    return Figure(name, total - first, seconds), cpu_line(total - first, cpu, server) + "\n" + how


async def main(total: int, workers: list[int], scale: int) -> None:
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
    freeze_what_lives()

    cpu = time.process_time()
    raw = Figure(
        "raw aiokafka consume (ceiling)",
        total,
        await raw_consume_rate(settings, list(settings.event_topics), total),
    )
    raw_cpu = cpu_line(total, time.process_time() - cpu, 0.0)
    # For comparison with figures before the ceiling took the runtime's collector policy (not a baseline):
    # the same read at CPython's default collector thresholds.
    cpu = time.process_time()
    default_gc = Figure(
        "raw, CPython's default collector",
        total,
        await inspect.unwrap(raw_consume_rate)(settings, list(settings.event_topics), total),
    )
    default_gc_cpu = cpu_line(total, time.process_time() - cpu, 0.0)

    runtime = ConsumerRuntime(EventLogHandler(settings), settings, pool, group_id="bench-event-log")
    async with pool.acquire() as conn:
        server = await server_cpu(conn)
    started, cpu = time.perf_counter(), time.process_time()
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
        skeleton = Figure("skeleton consumer (event_log)", total, time.perf_counter() - started)
        skeleton_cpu = cpu_line(total, time.process_time() - cpu, await server_cpu(conn) - server)
        assert await conn.fetchval("SELECT count(*) FROM event_log") == total
    runtime.stop()
    await task
    print()
    print(raw.line())
    print(raw_cpu)
    print(default_gc.line())
    print(default_gc_cpu)
    print(skeleton.line(raw))
    print(skeleton_cpu)
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")
    stream = total
    if workers and scale:
        # In parts, each cached on its own (``sealed_records``), so this process never holds them all.
        for part, start in enumerate(range(0, scale, _SCALE_PART)):
            records = sealed_records(min(_SCALE_PART, scale - start), seed=100 + part)
            await produce(settings, records)
            stream += len(records)
            del records
        print(f"{stream - total:,} more events produced for the process figures ({stream:,} in all)")
    for n in workers:
        figure, figure_cpu = await workers_rate(settings, pool, stream, n)
        print(figure.line(raw))
        print(figure_cpu)
    await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2", help="process counts to measure, e.g. 1,2 ('' for none)")
    parser.add_argument(
        "--scale-events",
        type=int,
        default=400_000,
        help="more events for the process figures, on top of --events (so the span two processes run is long)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, [int(n) for n in args.workers.split(",") if n], args.scale_events))
