"""Every event family, end to end on the real stack: accept → outbox → Kafka → consumer → PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg

from consumers.event_log import EventLogHandler
from consumers.runtime import ConsumerRuntime
from contracts.envelope import Family, decode
from contracts.events import PlacementPersonal, RegistrationPersonal, Sealed
from infra.config import Settings
from infra.crypto import KeyStore, open_sealed
from producers.ingest import accept
from producers.outbox import OutboxRelay
from tests import factories
from tests.helpers import read_topic, wait_for


async def test_every_family_round_trips(pool: asyncpg.Pool, settings: Settings) -> None:
    pk = factories.person_key()
    subs = [*factories.one_of_each(pk), factories.erasure(pk)]  # every kind, the operator's too
    keystore = KeyStore.from_settings(settings)
    async with pool.acquire() as conn:
        events = await accept(conn, keystore, subs, origin="test", namespace=settings.topic_namespace)
        pending = await conn.fetchval("SELECT count(*) FROM outbox_pending")
    assert pending >= len(subs)

    relay = OutboxRelay(settings, pool)
    await relay.drain()
    await relay.close()

    # Raw bytes on each topic decode to the same event; the key is the person key.
    for event in events:
        records = [
            r for r in await read_topic(settings, settings.topic(event.family)) if r.key == pk.encode()
        ]
        assert len(records) == 1, event.family
        back = decode(records[0].key, records[0].headers, records[0].value)
        assert back.id == event.id and back.data == event.data and back.type == f"jp.ittai.{event.family}.v1"
        assert b"\xe9\xab\x99" not in records[0].value  # 髙 in UTF-8: the name travels sealed

    runtime = ConsumerRuntime(EventLogHandler(settings), settings, pool, group_id="rt-roundtrip")
    task = asyncio.create_task(runtime.run())
    async with pool.acquire() as conn:
        rows = await wait_for(
            lambda: conn.fetch("SELECT * FROM event_log WHERE subject = $1 ORDER BY family", pk),
            until=lambda r: len(r) == len(subs),
        )
    runtime.stop()
    await task
    assert sorted(r["family"] for r in rows) == sorted(f.value for f in Family)
    by_family = {r["family"]: r for r in rows}
    for event in events:
        assert by_family[event.family.value]["event_id"] == event.id

    # The sealed blocks open with the person's key and hold what the client sent.
    async with pool.acquire() as conn:
        keys = await keystore.existing_keys(conn, [pk])
    reg = Sealed.model_validate(by_family["registration"]["data"]["personal"])
    assert RegistrationPersonal.model_validate(open_sealed(keys[pk], pk, reg)).name == "髙橋 花子"
    plc = Sealed.model_validate(by_family["placement"]["data"]["personal"])
    assert (
        PlacementPersonal.model_validate(open_sealed(keys[pk], pk, plc)).employer_name
        == "株式会社𠮷野ケアサービス"
    )
