"""A zombie member: a consumer paused (SIGSTOP) with a batch in hand and its transaction open, past its
session timeout, while another member takes its partitions over and applies them; then resumed. Only the
batch fence (``_save_positions``: positions advance only from where the batch starts) keeps the zombie's
batch from taking effect a second time — this test fails if that condition is removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from contracts.envelope import Family, encode
from infra.kafka import client_options
from infra.topics import ensure_topics
from producers.submission import to_event
from tests import factories
from tests.faults.conftest import OwnStack
from tests.helpers import wait_for
from tests.support.counting_consumer import EFFECTS_TABLE

pytestmark = pytest.mark.faults

TOTAL = 400


def _member(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.support.counting_consumer"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


async def test_a_resumed_zombie_member_applies_nothing_twice(
    own: OwnStack, own_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = own.settings.model_copy(update={"topic_namespace": f"z{uuid.uuid4().hex[:8]}"})
    await ensure_topics(settings, [settings.topic(Family.REGISTRATION)])
    async with own_pool.acquire() as conn:
        await conn.execute(EFFECTS_TABLE)
        await conn.execute("TRUNCATE test_effects")
        await conn.execute("DELETE FROM consumer_offsets WHERE consumer = 'counting'")
    key = os.urandom(32)
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=20)
    await producer.start()
    try:
        for _ in range(TOTAL):
            event = to_event(factories.registration(factories.person_key()), key)
            k, headers, value = encode(event)
            await producer.send(settings.topic(Family.REGISTRATION), value, key=k, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()

    env = {
        **own.env,
        "HUB_TOPIC_NAMESPACE": settings.topic_namespace,
        "HUB_BATCH_MAX_RECORDS": "10",
        "HUB_TEST_BATCH_DELAY_S": "0.3",  # a member spends nearly all its time inside a batch
    }
    count = 'SELECT count(DISTINCT (partition, "offset")) FROM test_effects'
    zombie, taker = tmp_path / "zombie.log", tmp_path / "taker.log"
    async with own_pool.acquire() as conn:
        first = _member(env, zombie)
        members = [first]
        try:
            await wait_for(lambda: conn.fetchval(count), until=lambda n: n >= 30, timeout_s=90)
            first.send_signal(signal.SIGSTOP)  # mid-batch: records in hand, transaction open
            members.append(_member(env, taker))
            try:
                # The second member gets every partition once the first one's session expires, and
                # applies everything, including the batch the first one holds.
                await wait_for(lambda: conn.fetchval(count), until=lambda n: n >= TOTAL, timeout_s=120)
            finally:
                first.send_signal(signal.SIGCONT)
            await own.logged(zombie, "stale batch discarded", timeout_s=60)
        finally:
            for proc in members:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(timeout=60) for proc in members]
        total, distinct, events = await conn.fetchrow(
            'SELECT count(*), count(DISTINCT (partition, "offset")), count(DISTINCT event_id) FROM test_effects'
        )
    assert events == TOTAL, "nothing lost"
    assert total == distinct == TOTAL, f"{total - distinct} records applied twice"
    assert codes == [0, 0]
