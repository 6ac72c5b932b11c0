"""The relay hands Kafka record batches it builds itself (``producers.outbox._send``): each record still goes
to the partition Kafka's default partitioner gives its key, and a partition's records keep outbox order,
across relay batches and when a partition's rows fill more than one record batch."""

from __future__ import annotations

import uuid
from collections import defaultdict

import asyncpg
from aiokafka.partitioner import DefaultPartitioner

from contracts.envelope import Family
from infra.config import Settings
from infra.crypto import KeyStore
from producers.ingest import accept
from producers.outbox import OutboxRelay
from tests import factories
from tests.helpers import read_topic


def _kafka(key: bytes, partitions: list[int]) -> int:
    return int(DefaultPartitioner()(key, partitions, partitions))


async def test_the_relay_sends_each_record_to_its_keys_partition_in_outbox_order(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    topic = settings.topic(Family.PLACEMENT)
    run = uuid.uuid4().hex[:8]
    keys = [uuid.uuid4().hex.encode() for _ in range(40)]  # person keys: 32 characters
    keys += [b"short", "人".encode(), b"\xff\xfe not text", b""]  # any other key: murmur2 as it is
    big = b"x" * 100_000  # four of these fill more than one record batch (256 KiB) of one partition
    rows = [(key, f"{run}:{n}".encode()) for n, key in enumerate(keys * 2)]
    rows += [(keys[0], f"{run}:{len(rows) + n}:".encode() + big) for n in range(4)]
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO outbox (topic, key, headers, value, event_id, origin) VALUES ($1, $2, $3, $4, $5, 'test')",
            [
                (topic, key, {"ce_id": f"{run}-{n}"}, value, f"{run}-{n}")
                for n, (key, value) in enumerate(rows)
            ],
        )
    relay = OutboxRelay(settings.model_copy(update={"outbox_batch_size": 7}), pool)
    try:
        assert await relay.drain() >= len(rows)
    finally:
        await relay.close()

    records = [
        r for r in await read_topic(settings, topic, timeout_s=120) if r.value.startswith(f"{run}:".encode())
    ]
    assert sorted(r.value for r in records) == sorted(value for _, value in rows)  # each once
    every = list(range(settings.topic_partitions))  # what ``ensure_topics`` made
    order: dict[int, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.partition == _kafka(record.key, every)
        order[record.partition].append(int(record.value.split(b":")[1]))
    assert all(numbers == sorted(numbers) for numbers in order.values())
    assert len(order) > 1


async def test_publishing_leaves_the_outbox_row_as_acceptance_wrote_it(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    # The relay's mark of what is published is not a new version of the row: an UPDATE of the row (never
    # HOT while the pending index's predicate named the column it set) wrote the whole row and an entry in
    # each of its indexes again, per event.
    keystore = KeyStore.from_settings(settings)
    subs = [factories.placement(factories.person_key()) for _ in range(5)]
    async with pool.acquire() as conn:
        events = await accept(conn, keystore, subs, origin="test", namespace=settings.topic_namespace)
        ids = [e.id for e in events]
        written = await conn.fetch(_VERSIONS, ids)
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()
    published = {r.value for r in await read_topic(settings, settings.topic(Family.PLACEMENT), timeout_s=120)}
    async with pool.acquire() as conn:
        assert all(bytes(r["value"]) in published for r in await conn.fetch(_VALUES, ids))
        assert await conn.fetch(_VERSIONS, ids) == written


_VERSIONS = "SELECT ctid::text, xmin::text FROM outbox WHERE event_id = ANY($1::text[]) ORDER BY id"
_VALUES = "SELECT value FROM outbox WHERE event_id = ANY($1::text[]) ORDER BY id"
