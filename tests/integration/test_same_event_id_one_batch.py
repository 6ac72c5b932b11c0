"""Two records with one event id in one batch, through the real consumers (real Kafka, real PostgreSQL).

Each consumer keeps per-batch state by event id or by person (the shared view's opened blocks and raw
JSON, the feed's rows, the event log's COPY, the provenance memo). The second record with an id must get
neither the first one's verdict nor its data:

* a repeat under a ``ce_source`` that does not own its data is dead-lettered by every consumer on its own
  check, whether it comes before or after the valid record with the id (the provenance memo is keyed by
  what is checked, never by the id), and the valid one is applied;
* a repeat that is valid on its own (another person's registration, the same id: only a forger can make
  one) is not applied anywhere: every consumer keeps the id's first delivery, the same one, with that
  delivery's own person, data and sealed block.

The two records go to one partition, in order, before the consumers start: one fetch, one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from consumers.catchup import run_until_caught_up
from consumers.event_log import EventLogHandler
from consumers.feed.projection import FeedProjection
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import Event, Family, encode
from infra.config import Settings
from infra.crypto import KeyStore
from infra.kafka import client_options
from producers.submission import to_event
from tests import factories

CONSUMERS = ("event-log", "shared-view", "placement-feed")
Record = tuple[bytes, list[tuple[str, bytes]], bytes]


def _with_id(event: Event, event_id: str, *, source: str | None = None) -> Record:
    key, headers, value = encode(event._replace(id=event_id))
    if source is not None:
        headers = [(n, source.encode() if n == "ce_source" else v) for n, v in headers]
    return key, headers, value


async def _on_one_partition(settings: Settings, records: Sequence[Record]) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for key, headers, value in records:
            await producer.send_and_wait(
                settings.topic(Family.REGISTRATION), value, key=key, headers=headers, partition=0
            )
    finally:
        await producer.stop()


async def _events_on_one_partition(settings: Settings, events: Sequence[Event]) -> None:
    """``events`` as the hub encodes them, onto one partition (one batch when read together)."""
    await _on_one_partition(settings, [encode(event) for event in events])


async def _consume(pool: asyncpg.Pool, settings: Settings) -> None:
    for handler in (EventLogHandler(settings), SharedViewHandler(settings), FeedProjection(settings)):
        await run_until_caught_up(handler, settings, pool, timeout_s=120)  # re-raises what stopped it


async def _registrations(pool: asyncpg.Pool, settings: Settings, n: int) -> list[Event]:
    people = [factories.person_key() for _ in range(n)]
    async with pool.acquire() as conn:
        keys = await KeyStore.from_settings(settings).keys_for(conn, people)
    return [to_event(factories.registration(p), keys[p]) for p in people]


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value  # json, or jsonb decoded


async def _kept(conn: asyncpg.Connection, event_id: str) -> dict[str, tuple[str, ...]]:
    """Who each consumer keeps the event id under, and the sealed block the feed and the view keep."""
    logged = await conn.fetch("SELECT subject, data FROM event_log WHERE event_id = $1", event_id)
    viewed = await conn.fetch("SELECT person_key, data FROM sv_events WHERE event_id = $1", event_id)
    fed = await conn.fetch(
        "SELECT person_key, personal FROM feed_registrations WHERE event_id = $1", event_id
    )
    return {
        "event-log": tuple((r["subject"], _json(r["data"])["personal"]["ct"]) for r in logged),
        "shared-view": tuple((r["person_key"], _json(r["data"])["personal"]["ct"]) for r in viewed),
        "placement-feed": tuple((r["person_key"], _json(r["personal"])["ct"]) for r in fed),
    }


async def _letters(conn: asyncpg.Connection, settings: Settings) -> list[tuple[str, int, str]]:
    rows = await conn.fetch(
        "SELECT consumer, source_offset, reason FROM dead_letters WHERE source_topic = $1 ORDER BY 2, 1",
        settings.topic(Family.REGISTRATION),
    )
    return [(r["consumer"], r["source_offset"], r["reason"]) for r in rows]


async def test_a_repeated_id_under_a_source_that_does_not_own_it_is_refused_on_its_own_check_in_either_order(
    pool: asyncpg.Pool, isolated_per_test: Settings
) -> None:
    settings = isolated_per_test
    first, second, third, fourth = await _registrations(pool, settings, 4)
    forged = f"/authorities/{factories.OTHER_AUTHORITY}"  # does not run the site the data names
    # offsets 0-1: the valid record, then a forged one with its id; 2-3: a forged one, then the valid one
    await _on_one_partition(
        settings,
        [
            _with_id(first, first.id),
            _with_id(second, first.id, source=forged),
            _with_id(third, fourth.id, source=forged),
            _with_id(fourth, fourth.id),
        ],
    )
    await _consume(pool, settings)
    async with pool.acquire() as conn:
        for valid, event_id in ((first, first.id), (fourth, fourth.id)):
            kept = await _kept(conn, event_id)
            assert kept == dict.fromkeys(CONSUMERS, ((valid.subject, valid.data.personal.ct),)), kept
        letters = await _letters(conn, settings)
    assert [(c, o) for c, o, _ in letters] == [(c, o) for o in (1, 2) for c in sorted(CONSUMERS)]
    assert all(r.startswith("handler rejected: ce_source re-checked against the data:") for *_, r in letters)


async def test_a_repeated_id_valid_on_its_own_is_the_first_deliverys_in_every_consumer(
    pool: asyncpg.Pool, isolated_per_test: Settings
) -> None:
    settings = isolated_per_test
    first, second = await _registrations(pool, settings, 2)
    await _on_one_partition(settings, [_with_id(first, first.id), _with_id(second, first.id)])
    await _consume(pool, settings)
    async with pool.acquire() as conn:
        kept = await _kept(conn, first.id)
        assert kept == dict.fromkeys(CONSUMERS, ((first.subject, first.data.personal.ct),)), kept
        for table, column in (("event_log", "subject"), ("sv_events", "person_key"),
                              ("feed_registrations", "person_key")):  # fmt: skip
            held = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", second.subject)
            assert held == 0, table  # nothing of the second delivery under its own person either
        assert await _letters(conn, settings) == []
