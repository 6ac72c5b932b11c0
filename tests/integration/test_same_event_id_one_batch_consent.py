"""A consent whose event id another person's event of the same batch carries too, through the real consumers
(real Kafka, real PostgreSQL).

A consent is a versioned record, kept by (person, consent id) and applied by version (``domain.consent``
rule 1), never by event id: across batches that was always so (the id of a stored event is asked only of
the non-consent events). Within one batch every record used to be de-duplicated by event id, families and
people alike (``domain.batch.once_each``), so a record forged under another person ahead of a withdrawal,
with its id, hid the withdrawal from the shared view and the feed — while the same withdrawal, one batch
later, was applied: replay (events first, then consents) and live then differed. Now the batch gives what
its two records, consumed apart, give:

* the withdrawal is applied (the person leaves the view; both consent stores keep version 2, withdrawn);
* the other person's event is applied as its own, with its own JSON (not the consent's, whichever came
  first in the batch);
* the event log keeps event ids unique, as it always did: an id's first delivery, whichever family.

The records go to one partition, in order, before the consumers start (one fetch, one batch), or are
consumed one at a time (two batches). The family is read from the record, not the topic, so a consent on the
registration topic is a consent (as a forger would write it).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest

from contracts.envelope import Family, encode
from infra.config import Settings
from infra.crypto import KeyStore
from producers.submission import to_event
from tests import factories
from tests.integration.test_same_event_id_one_batch import _consume, _events_on_one_partition


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value  # json, or jsonb decoded


@pytest.mark.parametrize("consent_first", [False, True], ids=["event-then-consent", "consent-then-event"])
@pytest.mark.parametrize("one_batch", [True, False], ids=["one-batch", "two-batches"])
async def test_a_withdrawal_sharing_its_id_with_another_persons_event_is_applied_as_alone(
    pool: asyncpg.Pool, isolated_per_test: Settings, one_batch: bool, consent_first: bool
) -> None:
    settings = isolated_per_test
    other, withdrawing = factories.person_key(), factories.person_key()
    async with pool.acquire() as conn:
        keys = await KeyStore.from_settings(settings).keys_for(conn, [other, withdrawing])
    given = factories.consent(withdrawing)
    consent_id = given.data["consent_id"]
    await _events_on_one_partition(
        settings, [to_event(factories.registration(withdrawing), keys[withdrawing]), to_event(given, None)]
    )
    await _consume(pool, settings)
    async with pool.acquire() as conn:
        in_view = "SELECT count(*) FROM sv_persons WHERE person_key = $1"
        assert await conn.fetchval(in_view, withdrawing) == 1  # the case is what it says

    event = to_event(factories.registration(other), keys[other])
    withdrawal = to_event(
        factories.consent(withdrawing, version=2, action="withdrawn", consent_id=consent_id), None
    )._replace(id=event.id)
    pair = [withdrawal, event] if consent_first else [event, withdrawal]
    for part in [pair] if one_batch else [pair[:1], pair[1:]]:
        await _events_on_one_partition(settings, part)
        await _consume(pool, settings)

    async with pool.acquire() as conn:
        assert await conn.fetchval(in_view, withdrawing) == 0, "the withdrawal was not applied"
        for table in ("sv_consents", "feed_consents"):
            kept = await conn.fetch(
                f"SELECT version, withdrawn, event_id FROM {table} WHERE person_key = $1", withdrawing
            )
            assert [tuple(r) for r in kept] == [(2, True, event.id)], table
        stored = await conn.fetch("SELECT person_key, data FROM sv_events WHERE event_id = $1", event.id)
        fed = await conn.fetch(
            "SELECT person_key, personal FROM feed_registrations WHERE event_id = $1", event.id
        )
        own = (other, event.data.personal.ct)
        assert [(r["person_key"], _json(r["data"])["personal"]["ct"]) for r in stored] == [own]
        assert [(r["person_key"], _json(r["personal"])["ct"]) for r in fed] == [own]
        assert _json(stored[0]["data"]) == orjson.loads(encode(event)[2])  # its own JSON, not the consent's
        # The event log keeps each id once: its first delivery, whichever the family
        logged = await conn.fetch("SELECT family FROM event_log WHERE event_id = $1", event.id)
        assert [r["family"] for r in logged] == [pair[0].family.value]
        letters = await conn.fetchval(
            "SELECT count(*) FROM dead_letters WHERE source_topic = $1", settings.topic(Family.REGISTRATION)
        )
        assert letters == 0


async def test_a_withdrawal_delivered_twice_in_one_batch_is_applied_and_logged_once(
    pool: asyncpg.Pool, isolated_per_test: Settings
) -> None:
    """The outbox re-sends an event under its id after a crash: both deliveries of a withdrawal in one
    batch now reach the plan (consents are never dropped by id) — kept once (``newest_versions``) and
    logged once (``sv_withdrawals``' ON CONFLICT (event_id) DO NOTHING takes the repeat in one statement)."""
    settings = isolated_per_test
    person = factories.person_key()
    async with pool.acquire() as conn:
        keys = await KeyStore.from_settings(settings).keys_for(conn, [person])
    given = factories.consent(person)
    await _events_on_one_partition(
        settings, [to_event(factories.registration(person), keys[person]), to_event(given, None)]
    )
    await _consume(pool, settings)
    withdrawal = to_event(
        factories.consent(person, version=2, action="withdrawn", consent_id=given.data["consent_id"]), None
    )
    await _events_on_one_partition(settings, [withdrawal, withdrawal])
    await _consume(pool, settings)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM sv_persons WHERE person_key = $1", person) == 0
        for table in ("sv_consents", "feed_consents"):
            kept = await conn.fetch(f"SELECT version, withdrawn FROM {table} WHERE person_key = $1", person)
            assert [tuple(r) for r in kept] == [(2, True)], table
        logged = await conn.fetchval("SELECT count(*) FROM sv_withdrawals WHERE event_id = $1", withdrawal.id)
        assert logged == 1
        letters = await conn.fetchval(
            "SELECT count(*) FROM dead_letters WHERE source_topic = $1", settings.topic(Family.REGISTRATION)
        )
        assert letters == 0
