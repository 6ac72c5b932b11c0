"""Acceptance means durability: events accepted while Kafka is down (directly into the outbox, or over
an adapter's HTTP API) arrive once, in order, once the broker is back. The broker stopped here is the
session's own (``own``), never the shared one."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg
import httpx
import pytest

from contracts.envelope import Family, decode
from infra.auth import OrgKind, Role, add_client
from infra.crypto import KeyStore
from producers.adapters.app import employment_app
from producers.adapters.serve import running
from producers.adapters.sites import add_sites
from producers.ingest import accept
from producers.outbox import OutboxRelay
from tests import factories
from tests.faults.conftest import OwnStack
from tests.helpers import free_port, read_topic, wait_for

pytestmark = pytest.mark.faults


async def test_events_accepted_while_broker_down_arrive_once_in_order(
    own: OwnStack, own_pool: asyncpg.Pool
) -> None:
    pool, settings = own_pool, own.settings
    keystore = KeyStore.from_settings(settings)
    people = [factories.person_key() for _ in range(20)]
    relay = OutboxRelay(settings, pool)
    relay_task = asyncio.create_task(relay.run())
    try:
        await asyncio.to_thread(own.hub, "stack", "node", "stop", "1")
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
                "SELECT count(*) FROM outbox JOIN outbox_pending USING (id) WHERE event_id = ANY($1::text[])",
                [e.id for e in accepted],
            )
        assert pending == len(accepted) == 60, "accepted events wait in the outbox while Kafka is down"
    finally:
        await asyncio.to_thread(own.hub, "stack", "node", "start", "1")

    async with pool.acquire() as conn:
        await wait_for(
            lambda: conn.fetchval(
                "SELECT count(*) FROM outbox JOIN outbox_pending USING (id) WHERE event_id = ANY($1::text[])",
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


async def test_accepted_while_broker_down_arrive_once_in_order(own: OwnStack, own_pool: asyncpg.Pool) -> None:
    pool, settings = own_pool, own.settings
    async with pool.acquire() as conn:
        _, token = await add_client(
            conn,
            name="office down",
            org_kind=OrgKind.OFFICE,
            org_code="1301",
            roles=frozenset({Role.PUBLISH}),
        )
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "新宿")])  # P2: a registered site
    people = [factories.person_key() for _ in range(10)]
    accepted: list[tuple[str, str]] = []  # (person, event id) in acceptance order
    async with running(employment_app(settings), "127.0.0.1", free_port()) as base:
        http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        try:
            await asyncio.to_thread(own.hub, "stack", "node", "stop", "1")
            try:
                for round_ in range(3):
                    responses = await asyncio.gather(
                        *(
                            http.post(
                                "/v1/placement",
                                json=factories.placement(pk, placed_on=f"2025-05-{10 + round_}").data,
                            )
                            for pk in people
                        )
                    )
                    assert [r.status_code for r in responses] == [202] * len(people)
                    accepted += [(pk, r.json()["event_id"]) for pk, r in zip(people, responses, strict=True)]
                async with pool.acquire() as conn:
                    pending = await conn.fetchval(
                        "SELECT count(*) FROM outbox JOIN outbox_pending USING (id) WHERE event_id = ANY($1::text[])",
                        [e for _, e in accepted],
                    )
                assert pending == 30, (
                    "the adapter answered 202 while Kafka was down: events wait in the outbox"
                )
            finally:
                await asyncio.to_thread(own.hub, "stack", "node", "start", "1")
            async with pool.acquire() as conn:
                await wait_for(
                    lambda: conn.fetchval(
                        "SELECT count(*) FROM outbox JOIN outbox_pending USING (id) WHERE event_id = ANY($1::text[])",
                        [e for _, e in accepted],
                    ),
                    until=lambda n: n == 0,
                    timeout_s=90,
                )
        finally:
            await http.aclose()

    ours = {e for _, e in accepted}
    seen: dict[str, int] = defaultdict(int)
    order: dict[str, list[str]] = defaultdict(list)
    for rec in sorted(
        await read_topic(settings, settings.topic(Family.PLACEMENT)), key=lambda r: (r.partition, r.offset)
    ):
        event = decode(rec.key, rec.headers, rec.value)
        if event.id in ours:
            seen[event.id] += 1
            order[event.subject].append(event.id)
    assert set(seen) == ours and all(n == 1 for n in seen.values()), "every accepted event arrived once"
    expected: dict[str, list[str]] = defaultdict(list)
    for pk, event_id in accepted:
        expected[pk].append(event_id)
    assert order == expected, "in acceptance order per person"
