"""The relay publishes a record's headers as its writer spelled them (migration 059: the outbox keeps them
as json, not jsonb). jsonb kept them in its own key order (shorter names first), so every record that came
through the outbox reached Kafka with its headers out of ``contracts.envelope.encode``'s order, and the
consumers' quick read (``decode_canonical``, which takes a record in that order only) declined every one.
Each writer of the outbox is here: a file chunk (``accept_file_rows``), the adapters' requests
(``accept_sealed``) and the hub's own events (``insert_events``)."""

from __future__ import annotations

import os

import asyncpg
import pytest

from contracts.envelope import Event, Family, decode_canonical, encode, header_texts
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from infra.crypto import KeyStore
from infra.outbox_rows import insert_events
from producers.ingest import accept
from producers.outbox import OutboxRelay
from tests import factories
from tests.helpers import csv_importer, read_topic


async def test_every_writers_records_reach_kafka_in_encodes_header_order(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, principal, _, start = await csv_importer(pool, settings, monkeypatch, "header-order")
    rows = [factories.placement(factories.person_key()).data for _ in range(4)]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert summary.accepted == 4, summary.as_dict()
    keystore = KeyStore.from_settings(settings)
    subs = [factories.placement(factories.person_key()) for _ in range(3)]
    async with pool.acquire() as conn:
        accepted = await accept(conn, keystore, subs, origin="test", namespace=settings.topic_namespace)
        # The hub's own events (an erasure's) go in by insert_events: these, under ids of their own.
        own = [e._replace(id=os.urandom(16).hex()) for e in accepted]
        async with conn.transaction():
            await insert_events(conn, own, origin="test", namespace=settings.topic_namespace)
        written = await conn.fetch("SELECT event_id, origin FROM outbox WHERE id > $1 ORDER BY id", start)
    assert sorted(r["origin"] for r in written) == ["employment-csv"] * 4 + ["test"] * 6
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()

    ids = {r["event_id"] for r in written}
    records = [
        r
        for r in await read_topic(settings, settings.topic(Family.PLACEMENT), timeout_s=120)
        if dict(r.headers).get("ce_id", b"").decode() in ids
    ]
    assert len(records) == len(ids)
    expected = list(header_texts(accepted[0]))  # the names encode writes, in its order
    assert [name for name, _ in encode(accepted[0])[1]] == expected
    for record in records:
        assert [name for name, _ in record.headers] == expected
        read = decode_canonical(record.key, list(record.headers), record.value, None, False)
        assert isinstance(read, Event), "the consumers' quick read takes the record"
