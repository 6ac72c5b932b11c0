"""Events accepted while the broker is stopped are kept in the outbox and delivered once, in order."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg

from contracts.envelope import decode
from devtools import stack
from infra.config import Settings
from infra.crypto import KeyStore
from producers.ingest import accept
from producers.outbox import OutboxRelay
from tests import factories
from tests.helpers import read_topic, wait_for


async def test_events_accepted_while_broker_down_arrive_once_in_order(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    keystore = KeyStore.from_settings(settings)
    people = [factories.person_key() for _ in range(20)]
    relay = OutboxRelay(settings, pool)
    relay_task = asyncio.create_task(relay.run())
    try:
        await asyncio.to_thread(stack.kafka_stop_node, 1)
        accepted = []
        async with pool.acquire() as conn:
            for round_ in range(3):  # three events per person, accepted one after another
                for pk in people:
                    sub = factories.placement(pk, placed_on=f"2025-05-{10 + round_:02d}")
                    accepted += await accept(
                        conn, keystore, [sub], origin="test", namespace=settings.topic_namespace
                    )
            await asyncio.sleep(1.0)  # the relay is trying, and failing, all this time
            pending = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND event_id = ANY($1::text[])",
                [e.id for e in accepted],
            )
        assert pending == len(accepted) == 60, "accepted events wait in the outbox while Kafka is down"
    finally:
        await asyncio.to_thread(stack.kafka_start_node, 1)

    async with pool.acquire() as conn:
        await wait_for(
            lambda: conn.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND event_id = ANY($1::text[])",
                [e.id for e in accepted],
            ),
            until=lambda n: n == 0,
            timeout_s=60,
        )
    relay.stop()
    await relay_task

    records = await read_topic(settings, settings.topic(accepted[0].family))
    ours = {e.id for e in accepted}
    seen: dict[str, int] = defaultdict(int)
    order: dict[str, list[str]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = decode(rec.key, rec.headers, rec.value)
        if event.id in ours:
            seen[event.id] += 1
            order[event.subject].append(event.id)
    assert set(seen) == ours, "every accepted event arrived"
    assert all(n == 1 for n in seen.values()), "and only once"
    expected = defaultdict(list)
    for e in accepted:
        expected[e.subject].append(e.id)
    assert order == expected, "in acceptance order per person"
