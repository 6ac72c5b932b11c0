"""Shared bench plumbing: a bench database and topic namespace, a sealed event stream, raw Kafka rates."""

from __future__ import annotations

import asyncio
import atexit
import os
import pickle
import resource
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumers.runtime import FETCH_OPTIONS
from contracts.envelope import Family, encode
from devtools.simulator import SimulationConfig, simulate
from devtools.stack import namespaces
from infra.config import Settings, get_settings
from infra.db import create_pool, migrate
from infra.gc import fewer_collections
from infra.kafka import client_options
from infra.topics import ensure_topics, namespace_observers
from producers.submission import to_event


def bench_settings(name: str) -> Settings:
    """Settings for an isolated bench run: its own database and topic namespace. Every namespace the run
    makes topics in is leased to it and deleted when it exits; a killed run's are swept by the next run
    or test session (devtools.stack.namespaces)."""
    os.environ["HUB_PG_DATABASE"] = f"ittai_bench_{name}"
    os.environ["HUB_TOPIC_NAMESPACE"] = f"b{name[:6]}{uuid.uuid4().hex[:6]}"
    get_settings.cache_clear()
    settings = get_settings()
    if namespaces.lease_what_is_made not in namespace_observers:
        namespace_observers.append(namespaces.lease_what_is_made)
        atexit.register(lambda: asyncio.run(namespaces.release_own(settings)))
    return settings


async def _drop_database(admin: asyncpg.Connection, name: str) -> None:
    """``WITH (FORCE)`` may not end an autovacuum worker still in the last run's database (it belongs to
    no role we are a member of: "must be a member of the role whose process is being terminated"); such a
    worker ends by itself within moments, so the drop is tried again rather than the bench dying."""
    for attempt in range(40):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.InsufficientPrivilegeError:
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)


async def fresh_pool(settings: Settings) -> asyncpg.Pool:
    """A fresh bench database on the running stack (``hub stack up``, or the ``HUB_*`` addresses given):
    a bench measures, it does not start or stop brokers."""
    await namespaces.sweep(settings)
    admin = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + "/ittai")
    try:
        await _drop_database(admin, settings.pg_database)
        await admin.execute(f'CREATE DATABASE "{settings.pg_database}" OWNER "{settings.pg_user}"')
    finally:
        await admin.close()
    pool = await create_pool(settings, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn)
    await ensure_topics(settings)
    return pool


Record = tuple[Family, bytes, list[tuple[str, bytes]], bytes]
_CACHE = Path(tempfile.gettempdir()) / "ittai-bench"


def sealed_records(total: int, seed: int = 7) -> list[Record]:
    """``total`` simulated events as Kafka records, kept in a temporary file between runs: generating
    and sealing 200k events takes longer than every measurement of a bench run together."""
    path = _CACHE / f"records-{total}-{seed}.pickle"
    if path.exists():
        with path.open("rb") as f:
            cached: list[Record] = pickle.load(f)
        return cached
    records = list(_generate(total, seed))
    _CACHE.mkdir(exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}")
    with partial.open("wb") as f:
        pickle.dump(records, f, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(path)
    return records


def _generate(total: int, seed: int) -> Iterator[Record]:
    """``total`` simulated events, sealed with per-person keys held in memory, as Kafka records."""
    keys: dict[str, bytes] = {}
    authorities = max(4, total // 5000)
    made = 0
    months = 12
    while made < total:
        config = SimulationConfig(authorities=authorities, months=months, seed=seed + made)
        for sub in simulate(config):
            key = keys.setdefault(sub.person_key, os.urandom(32))
            event = to_event(sub, key)
            k, headers, value = encode(event)
            yield event.family, k, headers, value
            made += 1
            if made >= total:
                return


async def produce(
    settings: Settings, records: list[tuple[Family, bytes, list[tuple[str, bytes]], bytes]]
) -> float:
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
        compression_type="lz4" if _has_lz4() else None,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for family, key, headers, value in records:
            pending.append(await producer.send(settings.topic(family), value, key=key, headers=headers))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def _has_lz4() -> bool:
    try:
        import lz4  # noqa: F401
    except ImportError:
        return False
    return True


@fewer_collections()
async def raw_consume_rate(settings: Settings, topics: list[str], expected: int) -> float:
    """The ceiling: aiokafka reading every record with no decoding and no database, with the consumer
    runtime's fetch options and its collector policy (``infra.gc.fewer_collections``, which ``run`` holds):
    at CPython's default thresholds the collector ran ~500 times per 50,000 records here and cost ~2.5 of
    ~10 µs per record, a cost the runtime does not pay, so the ceiling read lower than aiokafka reads."""
    consumer = AIOKafkaConsumer(
        *topics,
        **client_options(settings),
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FETCH_OPTIONS,  # the consumer runtime's own: the ceiling is not flattered by other settings
    )
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=settings.batch_max_records)
            seen += sum(len(part) for part in batch.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Figure:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("inf")

    def line(self, baseline: Figure | None = None) -> str:
        ratio = f"  ({self.rate / baseline.rate:.2f}× of {baseline.name})" if baseline else ""
        return (
            f"{self.name:38} {self.events:>9,} events  {self.seconds:7.2f} s  {self.rate:>10,.0f} ev/s{ratio}"
        )
