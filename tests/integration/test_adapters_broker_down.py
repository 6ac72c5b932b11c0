"""Acceptance means durability: events accepted over HTTP while Kafka is down arrive once, in order."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict

import asyncpg
import httpx

from contracts.envelope import Family, decode
from devtools import stack
from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from producers.adapters.app import employment_app
from producers.adapters.serve import running
from tests import factories
from tests.helpers import read_topic, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_accepted_while_broker_down_arrive_once_in_order(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    async with pool.acquire() as conn:
        _, token = await add_client(
            conn,
            name="office down",
            org_kind=OrgKind.OFFICE,
            org_code="1301",
            roles=frozenset({Role.PUBLISH}),
        )
    people = [factories.person_key() for _ in range(10)]
    accepted: list[tuple[str, str]] = []  # (person, event id) in acceptance order
    async with running(employment_app(settings), "127.0.0.1", _free_port()) as base:
        http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        try:
            await asyncio.to_thread(stack.kafka_stop_node, 1)
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
                        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND event_id = ANY($1::text[])",
                        [e for _, e in accepted],
                    )
                assert pending == 30, (
                    "the adapter answered 202 while Kafka was down: events wait in the outbox"
                )
            finally:
                await asyncio.to_thread(stack.kafka_start_node, 1)
            async with pool.acquire() as conn:
                await wait_for(
                    lambda: conn.fetchval(
                        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND event_id = ANY($1::text[])",
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
