"""One event id for two people within one batch (a forged repeat: the only way it happens; review11 F1).

``plan_batch`` keeps an id's first delivery (``domain.batch.once_each``); everything the handler keeps by
event id for that batch must be that delivery's too: its JSON as stored (``raw``) and its personal block as
opened on arrival (``opened``). Kept by the last delivery instead, a record forged under person A ahead of
person B's real event with the same id took B's opened block (B's name in A's record, disclosed to A's
recipients) and B's JSON as A's stored event.
"""

from __future__ import annotations

import uuid

import asyncpg

from consumers.runtime import Consumed
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.store import load_views
from contracts.envelope import Event, decode, encode
from infra.config import Settings
from infra.crypto import KeyStore
from producers.submission import to_event
from tests import factories


def _consumed(
    settings: Settings, key: bytes, headers: list[tuple[str, bytes]], value: bytes, offset: int
) -> Consumed:
    event = decode(key, headers, value, fast=True, keep_parsed=True)
    return Consumed(event, settings.topic(event.family), 0, offset, value)


def _record(settings: Settings, event: Event, offset: int) -> Consumed:
    return _consumed(settings, *encode(event), offset)


def _as_person(settings: Settings, event: Event, person: str, offset: int) -> Consumed:
    """``event``'s record with its subject and person key swapped for ``person``'s, id and sealed block
    left as they are (a rogue producer's copy)."""
    key, headers, value = encode(event)
    swap = event.subject.encode(), person.encode()
    forged = [(n, v.replace(*swap) if n == "ce_subject" else v) for n, v in headers]
    return _consumed(settings, key.replace(*swap), forged, value.replace(*swap), offset)


async def test_a_forged_repeat_of_an_id_in_one_batch_takes_nothing_of_the_other_persons_event(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    keystore = KeyStore.from_settings(settings)
    victim, forger = factories.person_key(), factories.person_key()
    victims_name = f"検証{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        keys = await keystore.keys_for(conn, [victim, forger])
    real = to_event(
        factories.registration(victim, personal={"name": victims_name, "birth_date": "1988-06-01"}),
        keys[victim],
    )
    handler = SharedViewHandler(settings)
    async with pool.acquire() as conn:
        async with (
            conn.transaction()
        ):  # the forger's consent: their record is built when a registration comes
            await handler.handle(conn, [_record(settings, to_event(factories.consent(forger), None), 1)])
        async with conn.transaction():  # the copy under the forger ahead of the victim's real event, one id
            await handler.handle(conn, [_as_person(settings, real, forger, 2), _record(settings, real, 3)])

        views = {v.person_key: v for v in await load_views(conn, [victim, forger])}
        assert victim not in views  # no consent
        assert views[forger].name != victims_name, "the victim's name in the forger's record"
        assert views[forger].masked  # the copied block does not open under the forger's key
        stored = await conn.fetchrow(
            "SELECT person_key, data->>'person_key' AS data_person FROM sv_events WHERE event_id = $1",
            real.id,
        )
        assert (stored["person_key"], stored["data_person"]) == (forger, forger)
        in_clear = await conn.fetchval(
            "SELECT count(*) FROM sv_persons WHERE position($1 in sv_persons::text) > 0", victims_name
        )
        assert in_clear == 0
