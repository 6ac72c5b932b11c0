"""Shared-view projection throughput against the raw aiokafka consume rate and a naive FastStream
subscriber, on the same messages in the same run. Prints figures and ratios; not run in CI.

    .venv/bin/python bench/bench_projection.py                 # 1,000,000 events (a few minutes)
    .venv/bin/python bench/bench_projection.py --events 100000 # quicker look

Its topic namespace is deleted at the end; ``--keep`` keeps it for ``--reuse NAMESPACE`` (measure again
without producing).

What is measured:

1. **raw** — an aiokafka consumer reading every record of the five event topics (``getmany``), nothing
   else: the ceiling.
2. **naive** — a FastStream subscriber on the same topics: decode each message, insert one row, commit
   the offset per message (``AckPolicy.ACK``). Run on the first ``--naive`` messages only (a full run
   would take hours); its rate is what it would do on all of them.
3. **projection** — ``SharedViewHandler`` on the hub's ``ConsumerRuntime``, from offset zero to the end.
4. **replay** — ``hub replay shared-view`` (empty the view, rebuild from the topics).
5. **replay, 2 processes** — ``hub replay shared-view --workers 2`` (``replay_in_processes``): two
   processes in one consumer group, person-affine (the range assignor gives each the same partition
   numbers of every topic, and a person's events share one number on every topic), one writer (the first
   holds the role, the second works under its epoch). Compared with the 1-process replay of the same run;
   its view must equal the others. Its CPU is the workers' (reaped children of the phase's process).

Each phase runs in child processes so each reports its own peak memory (``VmHWM``), its CPU, and the CPU
of its PostgreSQL sessions (read from ``/proc``: the server runs on this machine).
The stream comes from ``devtools.simulator``, sealed with real per-person keys, produced straight to a
bench topic namespace with aiokafka (the outbox is not what is measured), into a ``ittai_bench``
database created afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from consumers.catchup import end_offsets, run_until
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.replay import replay, replay_in_processes
from consumers.shared_view.store import VIEW_FIELDS
from contracts.envelope import decode, encode
from devtools.simulator import SimulationConfig, simulate
from devtools.stack import namespaces
from infra.config import Settings
from infra.crypto import KeyStore
from infra.db import create_pool, migrate, recreate_database
from infra.kafka import client_options
from infra.logging import configure_logging
from infra.topics import ensure_topics
from producers.submission import to_event

BENCH_DB = "ittai_bench"
VIEW_COLUMNS = ", ".join(VIEW_FIELDS)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def peak_mib() -> float:
    """Peak resident memory of this process image. ``ru_maxrss`` would not do for the child phases: Linux
    carries the forking parent's high-water mark across exec; ``VmHWM`` belongs to the new image."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def fresh_database(settings: Settings) -> None:
    await recreate_database(settings)
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        await conn.execute(
            "CREATE TABLE bench_naive (event_id text, family text, person_key text, data jsonb)"
        )
    finally:
        await conn.close()


async def reset_database(settings: Settings) -> None:
    """Keep the data keys of a stream produced earlier; forget every measured effect (on the schema of
    this code: a database made by an older one is migrated first)."""
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        await migrate(conn)
        await conn.execute(
            "TRUNCATE sv_persons, sv_events, sv_reveals, sv_consents, sv_withdrawals, bench_naive, consumer_offsets"
        )
    finally:
        await conn.close()


async def produce(settings: Settings, pool: asyncpg.Pool, events: int) -> int:
    # ~290 events per authority and month: 300 authorities over 12 months is a little over 1,000,000.
    months = 12
    authorities = max(1, min(1000, -(-events // (280 * months))))
    stream = islice(simulate(SimulationConfig(authorities=authorities, months=months, seed=4)), events)
    keystore = KeyStore.from_settings(settings)
    sent = resent = 0
    async with pool.acquire() as conn:
        for chunk in chunks(stream, 10_000):
            keys = await keystore.keys_for(conn, {s.person_key for s in chunk})
            records = []
            for sub in chunk:
                event = to_event(sub, keys[sub.person_key])
                records.append((settings.topic(event.family), *encode(event)))
            while True:  # the shared local broker gets restarted by others' fault tests: resend the chunk
                try:
                    await _send(settings, records)
                    break
                except KafkaError as exc:
                    resent += len(records)
                    print(f"\n  broker trouble ({type(exc).__name__}), resending a chunk", file=sys.stderr)
                    await asyncio.sleep(5)
            sent += len(chunk)
            print(f"\r  produced {sent:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if resent:
        print(f"  ({resent:,} records re-sent after broker restarts; duplicates carry the same event id)")
    return sent


async def _send(settings: Settings, records: list[tuple[str, bytes, list[tuple[str, bytes]], bytes]]) -> None:
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=50, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers)
            for topic, key, headers, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_rate(settings: Settings, total: int) -> float:
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        ends = await end_offsets(settings, settings.event_topics)
        tps = [TopicPartition(t, p) for t, p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def naive_rate(settings: Settings, pool: asyncpg.Pool, limit: int) -> float:
    from faststream.kafka import KafkaBroker, KafkaMessage
    from faststream.middlewares import AckPolicy

    broker = KafkaBroker(settings.kafka_bootstrap, logger=None)
    done = asyncio.Event()
    state = {"n": 0, "first": 0.0, "last": 0.0}

    @broker.subscriber(
        *settings.event_topics,
        group_id=f"naive-{uuid.uuid4().hex[:8]}",  # afresh each run: --reuse reads the stream again
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,  # commit after every message
    )
    async def handle(body: Any, msg: KafkaMessage) -> None:
        rec = cast(ConsumerRecord, msg.raw_message)
        event = decode(rec.key, rec.headers, rec.value)
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO bench_naive (event_id, family, person_key, data) VALUES ($1, $2, $3, $4::text::jsonb)",
                event.id,
                event.family.value,
                event.subject,
                event.data.model_dump_json(),
            )
        state["n"] += 1
        if state["n"] == 1:
            state["first"] = time.perf_counter()
        if state["n"] >= limit and not done.is_set():
            state["last"] = time.perf_counter()
            done.set()

    await broker.start()
    try:
        await done.wait()
    finally:
        await broker.stop()
    return (state["n"] - 1) / (state["last"] - state["first"])


async def child(phase: str, settings: Settings) -> dict[str, Any]:
    return await children(phase, settings, 1)


async def children(phase: str, settings: Settings, processes: int) -> dict[str, Any]:
    """Run ``phase`` in ``processes`` child processes at once; their figures together (the wall time from
    the first one's start to the last one's end; CPU summed; the highest peak). The CPU of their
    PostgreSQL sessions is sampled here while they run (each session's last reading, from ``/proc``: the
    server runs on this machine), so sessions of several children are counted once each."""
    args = [sys.executable, __file__, "--phase", phase, "--namespace", settings.topic_namespace]
    observer = await asyncpg.connect(settings.pg_dsn)
    sessions: dict[int, float] = {}
    try:
        running = [
            await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
            for _ in range(processes)
        ]
        outputs = [asyncio.create_task(proc.communicate()) for proc in running]
        while not all(out.done() for out in outputs):
            for row in await observer.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ):
                used = _process_cpu(row["pid"])
                if used:
                    sessions[row["pid"]] = used
            await asyncio.wait(outputs, timeout=0.25)
    finally:
        await observer.close()
    results = []
    for proc, out in zip(running, outputs, strict=True):
        if proc.returncode:
            raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
        results.append(json.loads((await out)[0].decode().strip().splitlines()[-1]))
    last = results[-1]
    return {
        **last,
        "events": results[0]["events"],
        "seconds": max(r["ended"] for r in results) - min(r["started"] for r in results),
        "cpu": sum(r["cpu"] for r in results),
        "server_cpu": sum(sessions.values()),
        "peak_mib": max(r["peak_mib"] for r in results),
    }


def _process_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # a session that ended in between
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def run_phase(phase: str, settings: Settings) -> dict[str, Any]:
    configure_logging("WARNING")
    pool = await create_pool(settings, max_size=4)
    try:
        handler = SharedViewHandler(settings)
        started, cpu = time.perf_counter(), time.process_time()
        wall_start = time.time()
        if phase == "project":
            ends = await end_offsets(settings, handler.topics)
            runtime = ConsumerRuntime(handler, settings, pool, role="bench", person_affine=True)
            await run_until(runtime, pool, ends)
            events = sum(ends.values())
        else:
            result = await replay(settings, pool, handler=handler)
            events = result.events
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return {**await _figures(settings, pool), "events": events, "seconds": seconds, "cpu": cpu,
                "started": wall_start, "ended": time.time()}  # fmt: skip
    finally:
        await pool.close()


def run_workers_phase(workers: int, settings: Settings) -> dict[str, Any]:
    """``hub replay shared-view --workers N``, forked from here (no event loop may run while it forks)."""
    configure_logging("WARNING")
    wall_start, before = time.time(), time.process_time()  # this process's imports are not the replay's
    result = replay_in_processes(settings, workers)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - before + reaped.ru_utime + reaped.ru_stime

    async def figures() -> dict[str, Any]:
        pool = await create_pool(settings, max_size=2)
        try:
            return await _figures(settings, pool)
        finally:
            await pool.close()

    # The workers are forked (no exec), so each one's peak is its own ``ru_maxrss``: the largest is reported.
    peak = max(peak_mib(), reaped.ru_maxrss / 1024)
    return {**asyncio.run(figures()), "events": result.events, "seconds": result.seconds, "cpu": cpu,
            "started": wall_start, "ended": time.time(), "peak_mib": peak}  # fmt: skip


async def _figures(settings: Settings, pool: asyncpg.Pool) -> dict[str, Any]:
    async with pool.acquire() as conn:
        persons = await conn.fetchval("SELECT count(*) FROM sv_persons")
        held = await conn.fetchval(
            "SELECT count(*) FROM sv_events e WHERE NOT EXISTS "
            "(SELECT 1 FROM sv_persons p WHERE p.person_key = e.person_key)"
        )
        # The whole view in one checksum: projection and replay must end with the same records.
        digest = await conn.fetchval(
            f"SELECT md5(string_agg(md5(row({VIEW_COLUMNS})::text), '' ORDER BY person_key)) FROM sv_persons"
        )
    return {"peak_mib": peak_mib(), "persons": persons, "held": held, "digest": digest}


async def main(args: argparse.Namespace) -> None:
    configure_logging("WARNING")
    settings = Settings(pg_database=BENCH_DB, topic_namespace=args.reuse or f"bench{uuid.uuid4().hex[:6]}")
    print(
        f"bench namespace {settings.topic_namespace}, database {BENCH_DB}, batch {settings.batch_max_records}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if not args.keep:  # leased: its topics are deleted at the end, or by the next sweep if this run is killed
        namespaces.claim(settings)
    try:
        await _measure(settings, args)
    finally:
        if not args.keep:
            await namespaces.release_own(settings)


async def _measure(settings: Settings, args: argparse.Namespace) -> None:
    if args.reuse:
        await reset_database(settings)
    else:
        await fresh_database(settings)
    await ensure_topics(settings, [*settings.event_topics, settings.deadletter_topic])
    pool = await create_pool(settings, max_size=8)
    try:
        t = time.perf_counter()
        if args.reuse:
            total = sum((await end_offsets(settings, settings.event_topics)).values())
            print(f"reusing the {total:,} events already in namespace {args.reuse}")
        else:
            total = await produce(settings, pool, args.events)
            print(f"produced {total:,} sealed events in {time.perf_counter() - t:.1f} s")
        raw = await raw_rate(settings, total)
        print(f"raw aiokafka consume      {raw:>10,.0f} events/s")
        naive = await naive_rate(settings, pool, min(args.naive, total))
        print(f"naive FastStream (first {min(args.naive, total):,}) {naive:>10,.0f} events/s")
    finally:
        await pool.close()
    projected = await child("project", settings)
    rate = projected["events"] / projected["seconds"]
    print(
        f"shared-view projection   {rate:>10,.0f} events/s  ({projected['events']:,} in {projected['seconds']:.1f} s, "
        f"{_cpu(projected)}, peak {projected['peak_mib']:.0f} MiB; "
        f"{projected['persons']:,} people in view, {projected['held']:,} held)"
    )
    if args.replay:
        replayed = await child("replay", settings)
        print(
            f"replay                   {replayed['events'] / replayed['seconds']:>10,.0f} events/s  "
            f"({replayed['events']:,} in {replayed['seconds']:.1f} s, {_cpu(replayed)}, "
            f"peak {replayed['peak_mib']:.0f} MiB)"
        )
        same = "equal" if replayed["digest"] == projected["digest"] else "DIFFERENT"
        print(f"replayed view vs projected view: {same} (md5 {replayed['digest']})")
    if args.replay and args.processes > 1:
        split = await child(f"replay-{args.processes}", settings)
        split_rate = split["events"] / split["seconds"]
        one = replayed["events"] / replayed["seconds"]
        print(
            f"replay, {args.processes} processes {split_rate:>10,.0f} events/s  "
            f"({split['seconds']:.1f} s, {_cpu(split)}, peak {split['peak_mib']:.0f} MiB per process; "
            f"x{split_rate / one:.2f} of the 1-process replay)"
        )
        same = "equal" if split["digest"] == projected["digest"] else "DIFFERENT"
        print(f"{args.processes}-process replayed view vs projected view: {same}")
    print(f"projection / naive  = {rate / naive:6.1f}x   (target >= 10x)")
    print(f"projection / raw    = {rate / raw:6.2f}    (must >= 0.15, aim 0.25)")
    print(f"bench driver peak memory {peak_mib():.0f} MiB; load average at the end {os.getloadavg()[0]:.2f}")


def _cpu(phase: dict[str, Any]) -> str:
    per = 1e6 / phase["events"]
    return (
        f"CPU {phase['cpu']:.1f} s consumer ({phase['cpu'] * per:.0f} us/event) + "
        f"{phase['server_cpu']:.1f} s PostgreSQL ({phase['server_cpu'] * per:.0f} us/event)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--reuse", metavar="NAMESPACE", help="measure again on a namespace produced earlier (with --keep)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the namespace's topics at the end (for --reuse)"
    )
    parser.add_argument("--naive", type=int, default=30_000, help="messages the naive subscriber is timed on")
    parser.add_argument("--processes", type=int, default=2, help="replay processes in the scaling phase")
    parser.add_argument(
        "--no-replay", dest="replay", action="store_false", help="measure the projection only"
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # project, replay, replay-N
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        s = Settings(pg_database=BENCH_DB, topic_namespace=args.namespace)
        if args.phase.startswith("replay-"):
            print(json.dumps(run_workers_phase(int(args.phase.removeprefix("replay-")), s)))
        else:
            print(json.dumps(asyncio.run(run_phase(args.phase, s))))
    else:
        asyncio.run(main(args))
