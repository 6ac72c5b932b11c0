"""A consumer killed mid-stream (SIGKILL), then stopped with SIGTERM, then run to the end: nothing lost,
nothing applied twice — because effects and positions commit in one PostgreSQL transaction."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import asyncpg
from aiokafka import AIOKafkaProducer

from contracts.envelope import Family, encode
from infra.config import Settings
from infra.kafka import client_options
from infra.topics import ensure_topics
from producers.submission import to_event
from tests import factories
from tests.helpers import wait_for
from tests.support.counting_consumer import EFFECTS_TABLE

TOTAL = 4000


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.counting_consumer"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _fresh_effects(pool: asyncpg.Pool, own: Settings) -> None:
    """``own``'s registration topic, and an empty effects table and no stored positions for the counting
    consumer."""
    await ensure_topics(own, [own.topic(Family.REGISTRATION)])
    async with pool.acquire() as conn:
        await conn.execute(EFFECTS_TABLE)
        await conn.execute("TRUNCATE test_effects")
        await conn.execute("DELETE FROM consumer_offsets WHERE consumer = 'counting'")


async def _publish_registrations(own: Settings, n: int) -> None:
    """``n`` registrations of new people (random keys, so spread over every partition) on ``own``'s topic."""
    key = os.urandom(32)
    producer = AIOKafkaProducer(**client_options(own), acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = []
        for _ in range(n):
            k, headers, value = encode(to_event(factories.registration(factories.person_key()), key))
            futures.append(await producer.send(own.topic(Family.REGISTRATION), value, key=k, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _stream_of_registrations(pool: asyncpg.Pool, own: Settings) -> None:
    """TOTAL registrations on ``own``'s topic, and an empty effects table for the counting consumer."""
    await _fresh_effects(pool, own)
    await _publish_registrations(own, TOTAL)


async def applied_through(conn: asyncpg.Connection, own: Settings) -> int:
    """How many records of ``own``'s registration topic the counting consumer has committed (its stored
    positions, committed with the effects in one transaction). Once this is the topic's record count,
    every event has taken effect and no later commit can add one: stale batches are fenced."""
    stored: int = await conn.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = 'counting' AND topic = $1",
        own.topic(Family.REGISTRATION),
    )
    return stored


async def test_killed_consumer_restarts_without_loss_or_duplicates(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    namespace = f"x{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(update={"topic_namespace": namespace})
    await _stream_of_registrations(pool, own)

    env = {
        **os.environ,
        "HUB_TOPIC_NAMESPACE": namespace,
        "HUB_BATCH_MAX_RECORDS": "100",
        "HUB_LOG_LEVEL": "INFO",
    }
    count = "SELECT count(*) FROM test_effects"
    async with pool.acquire() as conn:
        proc = _start(env)
        await wait_for(lambda: conn.fetchval(count), until=lambda n: n >= 600, timeout_s=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = await conn.fetchval(count)
        assert 0 < killed_at < TOTAL, "the kill must land mid-stream"

        proc = _start(env)
        await wait_for(lambda: conn.fetchval(count), until=lambda n: n >= killed_at + 600, timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert b"consumer stopped" in stderr
        stopped_at = await conn.fetchval(count)
        assert stopped_at < TOTAL, "SIGTERM must land mid-stream too"

        proc = _start(env)
        # Done when the committed positions reach the end (no pause: effects commit with positions).
        await wait_for(lambda: applied_through(conn, own), until=lambda n: n == TOTAL, timeout_s=90)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

        total, distinct = await conn.fetchrow("SELECT count(*), count(DISTINCT event_id) FROM test_effects")
        offsets = await conn.fetchval(
            "SELECT sum(next_offset) FROM consumer_offsets WHERE consumer = 'counting' AND topic = $1",
            own.topic(Family.REGISTRATION),
        )
    assert distinct == TOTAL, "nothing lost"
    assert total == TOTAL, "nothing applied twice"
    assert offsets == TOTAL


async def test_rebalances_mid_stream_apply_each_event_once(pool: asyncpg.Pool, settings: Settings) -> None:
    """A second member joins mid-stream, then the first is killed: two rebalances while batches are in
    hand. Each event must still take effect exactly once."""
    namespace = f"r{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(update={"topic_namespace": namespace})
    await _stream_of_registrations(pool, own)

    env = {**os.environ, "HUB_TOPIC_NAMESPACE": namespace, "HUB_BATCH_MAX_RECORDS": "50"}
    count = "SELECT count(*) FROM test_effects"
    async with pool.acquire() as conn:
        first = _start(env)
        await wait_for(lambda: conn.fetchval(count), until=lambda n: n >= 400, timeout_s=60)
        second = _start(env)  # joins the group: partitions move while the first is mid-batch
        await wait_for(lambda: conn.fetchval(count), until=lambda n: n >= 1600, timeout_s=90)
        first.send_signal(signal.SIGKILL)  # its partitions move again once its session expires
        first.wait(timeout=10)
        await wait_for(lambda: applied_through(conn, own), until=lambda n: n == TOTAL, timeout_s=120)
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
        total, distinct = await conn.fetchrow("SELECT count(*), count(DISTINCT event_id) FROM test_effects")
    assert distinct == TOTAL, "nothing lost"
    assert total == TOTAL, "nothing applied twice across rebalances"
