"""Transient failures are retried and never dead-lettered; a handler's rejection dead-letters only the
event it rejects."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from consumers.runtime import Consumed, ConsumerRuntime, HandlerRejected
from contracts.envelope import Family, encode
from infra import health
from infra.config import Settings
from infra.kafka import client_options
from infra.topics import ensure_topics
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

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionRefusedError("database unreachable (simulated)")
        if any(c.event.id == self.reject_id for c in batch):
            raise HandlerRejected("placement for an unknown site (simulated)")
        # The effect lives in the batch's transaction, as every consumer's must.
        await conn.executemany(
            "INSERT INTO test_applied (consumer, event_id) VALUES ($1, $2)",
            [(self.name, c.event.id) for c in batch],
        )


async def test_transient_retried_rejection_isolated(pool: asyncpg.Pool, settings: Settings) -> None:
    own = settings.model_copy(update={"topic_namespace": f"f{uuid.uuid4().hex[:8]}"})
    await ensure_topics(own, [own.topic(Family.PLACEMENT), own.deadletter_topic])
    key = os.urandom(32)
    events = [to_event(factories.placement(factories.person_key()), key) for _ in range(30)]
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for event in events:
            k, headers, value = encode(event)
            await producer.send_and_wait(own.topic(Family.PLACEMENT), value, key=k, headers=headers)
    finally:
        await producer.stop()

    rejected = events[17]
    handler = FlakyThenPicky(own.topic(Family.PLACEMENT), rejected.id)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS test_applied (consumer text, event_id text)")
    runtime = ConsumerRuntime(handler, own, pool)
    task = asyncio.create_task(runtime.run())
    applied = "SELECT count(*) FROM test_applied WHERE consumer = $1"
    async with pool.acquire() as conn:
        await wait_for(lambda: conn.fetchval(applied, handler.name), until=lambda n: n >= 29, timeout_s=30)
    await asyncio.sleep(0.5)  # anything applied twice, or the rejected event, would show up now
    runtime.stop()
    await task

    assert handler.failures_left == 0, "the transient failures happened and were retried"
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id FROM test_applied WHERE consumer = $1", handler.name)
    assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in events if e.id != rejected.id)
    async with pool.acquire() as conn:
        register = await conn.fetch("SELECT * FROM dead_letters WHERE consumer = $1", handler.name)
    assert [r["reason"] for r in register] == ["handler rejected: placement for an unknown site (simulated)"]
    letters = await read_topic(own, own.deadletter_topic)
    # at least once on the topic (a batch fenced off and redone may send it again); once in the register
    assert {dict(r.headers)["ce_id"].decode() for r in letters} == {rejected.id}


class BreaksKafkaCommits:
    """Applies nothing; from its first batch on, the runtime's Kafka commits fail with a non-Kafka error."""

    def __init__(self, topic: str) -> None:
        self.name = f"commits-{uuid.uuid4().hex[:6]}"
        self.topics: Sequence[str] = (topic,)
        self.runtime: ConsumerRuntime | None = None

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        assert self.runtime is not None and self.runtime._consumer is not None
        self.runtime._consumer.commit = self._fail  # type: ignore[method-assign]

    async def _fail(self, *_: object) -> None:
        raise RuntimeError("kafka commit failed (simulated)")


async def test_a_failing_kafka_commit_does_not_skip_the_cleanup(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The Kafka commit (for lag tools) runs beside the pipeline; whatever it raised, a stopping consumer
    still closes its Kafka client and gives its connection back."""
    own = settings.model_copy(update={"topic_namespace": f"f{uuid.uuid4().hex[:8]}"})
    await ensure_topics(own, [own.topic(Family.PLACEMENT), own.deadletter_topic])
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for _ in range(5):
            k, headers, value = encode(to_event(factories.placement(factories.person_key()), os.urandom(32)))
            await producer.send_and_wait(own.topic(Family.PLACEMENT), value, key=k, headers=headers)
    finally:
        await producer.stop()
    handler = BreaksKafkaCommits(own.topic(Family.PLACEMENT))
    runtime = handler.runtime = ConsumerRuntime(handler, own, pool)
    task = asyncio.create_task(runtime.run())

    async def commits_failed() -> bool:
        commits = runtime._kafka_commits
        return runtime.processed >= 5 and commits is not None and commits.done()

    await wait_for(commits_failed, until=bool, timeout_s=30)
    runtime.stop()
    await task  # returns: the failed commit is logged, not raised past the cleanup
    assert runtime._conn is None, "the batch connection went back to the pool"
    assert runtime._consumer is not None and runtime._consumer._closed, "the Kafka client was stopped"


class Keeps:
    """Keeps the ids it is handed (in the batch's transaction: nothing else to write)."""

    def __init__(self, topic: str) -> None:
        self.name = f"keeps-{uuid.uuid4().hex[:6]}"
        self.topics: Sequence[str] = (topic,)
        self.ids: list[str] = []

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        self.ids += [c.event.id for c in batch]


async def test_a_runtime_given_its_partitions_stopped_while_the_database_is_away_ends_cleanly(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime given its partitions (``assigned``: the replay's members) reads its stored positions as it
    starts, in its own task rather than a group's callback: stopped while the database is away there, it
    ends, its Kafka client closed, instead of raising out of ``run``."""
    own = settings.model_copy(update={"topic_namespace": f"f{uuid.uuid4().hex[:8]}"})
    topic = own.topic(Family.PLACEMENT)
    await ensure_topics(own, [topic, own.deadletter_topic])
    handler = Keeps(topic)
    runtime = ConsumerRuntime(handler, own, pool, assigned=[(topic, 0)])
    tried: list[int] = []

    async def away() -> dict[tuple[str, int], int]:
        tried.append(1)
        raise ConnectionRefusedError("database unreachable (simulated)")

    monkeypatch.setattr(runtime, "_load_positions", away)
    task = asyncio.create_task(runtime.run())
    await wait_for(lambda: asyncio.sleep(0, len(tried)), until=lambda n: n >= 2, timeout_s=30)
    runtime.stop()
    await asyncio.wait_for(task, timeout=30)  # returns: no error out of run
    assert runtime._consumer is None, "the Kafka client was stopped and let go"
    assert not [c for c in health.failing() if c.startswith(f"{handler.name}.")], "no failing report left"


async def test_a_runtime_given_its_partitions_reads_those_and_joins_no_group(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """``assigned``: exactly the partitions given, from the stored positions (none yet: the beginning), and
    no group (no join to wait for, no offsets committed to Kafka)."""
    own = settings.model_copy(update={"topic_namespace": f"f{uuid.uuid4().hex[:8]}"})
    topic = own.topic(Family.PLACEMENT)
    await ensure_topics(own, [topic, own.deadletter_topic])
    sent: dict[int, list[str]] = {}
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for i in range(12):
            event = to_event(factories.placement(factories.person_key()), os.urandom(32))
            k, headers, value = encode(event)
            meta = await producer.send_and_wait(topic, value, key=k, headers=headers, partition=i % 2)
            sent.setdefault(meta.partition, []).append(event.id)
    finally:
        await producer.stop()
    handler = Keeps(topic)
    runtime = ConsumerRuntime(handler, own, pool, assigned=[(topic, 1)])
    task = asyncio.create_task(runtime.run())
    try:
        await wait_for(
            lambda: asyncio.sleep(0, len(handler.ids)), until=lambda n: n >= len(sent[1]), timeout_s=60
        )
    finally:
        runtime.stop()
        await task
    assert sorted(handler.ids) == sorted(sent[1]), "partition 1's events, each once, none of partition 0's"
    assert runtime._consumer is not None and runtime._consumer._group_id is None, "no group"
    assert runtime._kafka_commits is None, "no offsets committed to Kafka"
