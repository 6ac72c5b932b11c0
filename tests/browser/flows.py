"""Publishing, consuming and reading Kafka for the console tests (integration and browser)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumers.event_log import EventLogHandler
from consumers.runtime import Consumed, ConsumerRuntime, HandlerRejected
from infra.config import Settings
from infra.crypto import KeyStore
from infra.kafka import client_options
from producers.ingest import accept
from producers.outbox import OutboxRelay
from producers.submission import Submission
from tests.helpers import wait_for


async def publish(settings: Settings, pool: asyncpg.Pool, subs: Sequence[Submission], origin: str) -> None:
    keystore = KeyStore.from_settings(settings)
    async with pool.acquire() as conn:
        await accept(conn, keystore, subs, origin=origin, namespace=settings.topic_namespace)
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()


async def partition_ends(settings: Settings, topic: str) -> dict[int, int]:
    """End offset of each partition, read independently of the console's probe."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**client_options(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def kafka_ends(settings: Settings, topic: str) -> int:
    return sum((await partition_ends(settings, topic)).values())


async def consume_all(runtime: ConsumerRuntime, pool: asyncpg.Pool, settings: Settings) -> None:
    """Run ``runtime`` until its saved positions reach the present end of every partition it reads."""
    ends = {
        (topic, partition): end
        for topic in runtime.handler.topics
        for partition, end in (await partition_ends(settings, topic)).items()
        if end > 0
    }

    def caught_up(rows: list[asyncpg.Record]) -> bool:
        saved = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        return all(saved.get(k, 0) >= end for k, end in ends.items())

    async with pool.acquire() as conn:
        task = asyncio.create_task(runtime.run())
        try:
            await wait_for(
                lambda: conn.fetch(
                    "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1",
                    runtime.handler.name,
                ),
                until=caught_up,
            )
        finally:
            runtime.stop()
            await task


class Picky(EventLogHandler):
    """Rejects the events it is told to, until the fix: stands in for a handler bug fixed later."""

    name = "picky-log"

    def __init__(self, settings: Settings, reject: dict[str, str]) -> None:
        super().__init__(settings)
        self.reject = reject  # event id -> reason

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        for c in batch:
            if c.event.id in self.reject:
                raise HandlerRejected(f"{c.event.family.value}: {self.reject[c.event.id]}")
        await super().handle(conn, batch)
