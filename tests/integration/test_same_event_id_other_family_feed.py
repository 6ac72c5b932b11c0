"""A placement and a registration of two people sharing one event id, through the real placement-feed
consumer (real Kafka, real PostgreSQL).

The feed keeps each fact by its own key, the first report winning: a registration by its event id, a
placement by (placement id, person). Across batches a placement carrying a registration's event id (only a
forger repeats an id: the hub makes them) never touched the registration; within one batch every
non-consent record was de-duplicated by event id, families together (``domain.batch.once_each``), so the
one that came second was not kept - the registration left out of its authority's feed in one batching and
kept in another, and a re-read of the topics could differ from the live feed (review13). Now the batch
keeps what its two records, consumed apart, keep: both facts.

The records go to one partition, in order, before the consumer starts (one fetch, one batch), or are
consumed one at a time (two batches).
"""

from __future__ import annotations

import asyncpg
import pytest

from consumers.catchup import run_until_caught_up
from consumers.feed.projection import FeedProjection
from contracts.envelope import Family
from infra.config import Settings
from infra.crypto import KeyStore
from producers.submission import to_event
from tests import factories
from tests.integration.test_same_event_id_one_batch import _events_on_one_partition


@pytest.mark.parametrize("placement_first", [True, False], ids=["placement-first", "registration-first"])
@pytest.mark.parametrize("one_batch", [True, False], ids=["one-batch", "two-batches"])
async def test_a_placement_and_a_registration_sharing_an_event_id_are_both_kept_by_the_feed(
    pool: asyncpg.Pool, isolated_per_test: Settings, one_batch: bool, placement_first: bool
) -> None:
    settings = isolated_per_test
    placed, registered = factories.person_key(), factories.person_key()
    async with pool.acquire() as conn:
        keys = await KeyStore.from_settings(settings).keys_for(conn, [placed, registered])
    registration = to_event(factories.registration(registered), keys[registered])
    placement = to_event(factories.placement(placed), keys[placed])._replace(id=registration.id)
    pair = [placement, registration] if placement_first else [registration, placement]
    for part in [pair] if one_batch else [pair[:1], pair[1:]]:
        await _events_on_one_partition(settings, part)
        await run_until_caught_up(FeedProjection(settings), settings, pool, timeout_s=120)

    async with pool.acquire() as conn:
        regs = await conn.fetch(
            "SELECT person_key FROM feed_registrations WHERE event_id = $1", registration.id
        )
        places = await conn.fetch(
            "SELECT person_key FROM feed_placements WHERE placement_id = $1", placement.data.placement_id
        )
        letters = await conn.fetchval(
            "SELECT count(*) FROM dead_letters WHERE source_topic = $1", settings.topic(Family.REGISTRATION)
        )
    assert [r["person_key"] for r in regs] == [registered], "the registration was not kept"
    assert [r["person_key"] for r in places] == [placed], "the placement was not kept"
    assert letters == 0
