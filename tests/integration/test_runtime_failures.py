"""Transient failures are retried and never dead-lettered; a handler's rejection dead-letters only the
event it rejects."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaProducer

from consumers.runtime import Consumed, ConsumerRuntime, HandlerRejected
from contracts.envelope import Family, encode
from hub.config import Settings
from hub.topics import ensure_topics
from producers.submission import to_event
from tests import factories
from tests.helpers import read_topic, wait_for


class FlakyThenPicky:
    """Fails twice as if the database were unreachable, then rejects one chosen event."""

    def __init__(self, topic: str, reject_id: str) -> None:
        self.name = f"flaky-{uuid.uuid4().hex[:6]}"
        self.topics: Sequence[str] = (topic,)
        self.reject_id = reject_id
        self.failures_left = 2
        self.applied: list[str] = []

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionRefusedError("database unreachable (simulated)")
        if any(c.event.id == self.reject_id for c in batch):
            raise HandlerRejected("placement for an unknown site (simulated)")
        await conn.execute("SELECT 1")
        self.applied.extend(c.event.id for c in batch)


async def test_transient_retried_rejection_isolated(pool: asyncpg.Pool, settings: Settings) -> None:
    own = settings.model_copy(update={"topic_namespace": f"f{uuid.uuid4().hex[:8]}"})
    await ensure_topics(own, [own.topic(Family.PLACEMENT), own.deadletter_topic])
    key = os.urandom(32)
    events = [to_event(factories.placement(factories.person_key()), key) for _ in range(30)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            k, headers, value = encode(event)
            await producer.send_and_wait(own.topic(Family.PLACEMENT), value, key=k, headers=headers)
    finally:
        await producer.stop()

    rejected = events[17]
    handler = FlakyThenPicky(own.topic(Family.PLACEMENT), rejected.id)
    runtime = ConsumerRuntime(handler, own, pool)
    task = asyncio.create_task(runtime.run())
    await wait_for(lambda: asyncio.sleep(0, len(handler.applied)), until=lambda n: n == 29, timeout_s=30)
    runtime.stop()
    await task

    assert handler.failures_left == 0, "the transient failures happened and were retried"
    assert sorted(handler.applied) == sorted(e.id for e in events if e.id != rejected.id)
    async with pool.acquire() as conn:
        register = await conn.fetch("SELECT * FROM dead_letters WHERE consumer = $1", handler.name)
    assert [r["reason"] for r in register] == ["handler rejected: placement for an unknown site (simulated)"]
    letters = await read_topic(own, own.deadletter_topic)
    assert [dict(r.headers)["ce_id"].decode() for r in letters] == [rejected.id]
