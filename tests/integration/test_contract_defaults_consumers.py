"""A field the contract gives a default is read as that default by every consumer, never as a missing key.

The shared view and the placement feed take their events' data as the decoder's parse of the value
(``Event.parsed``, ``consumers.runtime.incoming``), not as the validated struct. The contract lets a
record leave out a field with a default (``Occupation.classification_version``, ``Sealed.alg``): the
adapters always write it, a rogue producer on the topic need not. The feed's planning read
``occupation["classification_version"]`` from the parse and raised ``KeyError`` — no event error, so the
placement feed stopped, and met the same record again on every restart (found by fuzzing the parse the
consumers act on against the contract's values: ``tests/unit/test_decode_differential.py``).
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg
import orjson

from consumers.catchup import run_until_caught_up
from consumers.event_log import EventLogHandler
from consumers.feed.projection import FeedProjection
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import Event, encode
from domain.occupation import CLASSIFICATION_VERSION
from infra.config import Settings
from infra.crypto import KeyStore
from producers.ingest import accept
from producers.outbox import OutboxRelay
from producers.submission import to_event
from tests import factories
from tests.integration.test_hostile_consumers import _publish_raw

Record = tuple[str, bytes, list[tuple[str, bytes]], bytes]


def _without_defaults(settings: Settings, event: Event) -> Record:
    """The record the hub would publish for ``event``, less every field the contract defaults."""
    key, headers, value = encode(event)
    data: dict[str, Any] = orjson.loads(value)
    for occupation in ("occupation", "desired_occupation"):
        if occupation in data:
            del data[occupation]["classification_version"]
    if isinstance(data.get("personal"), dict):
        del data["personal"]["alg"]
    return settings.topic(event.family), key, headers, orjson.dumps(data)


async def _catch_up(pool: asyncpg.Pool, settings: Settings) -> None:
    for handler in (EventLogHandler(settings), SharedViewHandler(settings), FeedProjection(settings)):
        await run_until_caught_up(handler, settings, pool, timeout_s=120)  # re-raises what stopped it


async def test_a_record_leaving_out_a_defaulted_field_is_applied_with_the_default_by_every_consumer(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    settings = isolated
    pk = factories.person_key()
    registration = factories.registration(pk)
    async with pool.acquire() as conn:  # through the edge: the person is held, and has a data key
        await accept(conn, KeyStore.from_settings(settings), [registration], origin="test",
                     namespace=settings.topic_namespace)  # fmt: skip
        data_key = (await KeyStore.from_settings(settings).keys_for(conn, [pk]))[pk]
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()
    placement = to_event(factories.placement(pk), data_key)
    other = factories.person_key()
    registered = to_event(factories.registration(other), os.urandom(32))
    rogue = [_without_defaults(settings, placement), _without_defaults(settings, registered)]
    await _publish_raw(settings, rogue)

    await _catch_up(pool, settings)

    async with pool.acquire() as conn:
        kept = await conn.fetchrow(
            "SELECT person_key, occupation, classification_version FROM feed_placements WHERE placement_id = $1",
            placement.data.placement_id,
        )
        assert kept is not None, "the feed did not keep a placement the contract accepts"
        assert tuple(kept) == (pk, placement.data.occupation.group, CLASSIFICATION_VERSION)
        logged = await conn.fetchval(
            "SELECT count(*) FROM event_log WHERE event_id = ANY($1::text[])", [placement.id, registered.id]
        )
        assert logged == 2
        letters = await conn.fetch(
            "SELECT consumer, reason FROM dead_letters WHERE source_topic = ANY($1::text[])",
            settings.event_topics,
        )
    assert not letters, [tuple(r) for r in letters]  # the contract accepts both: nobody refuses them
