"""A file chunk's row keys and data keys go in by plain inserts (migration 059b); a chunk that meets a row
imported before fails that insert and takes the ON CONFLICT way. Either way each row is accepted once: a
chunk of new rows, rows imported before, a row twice in the chunk and rows of people with a stored key
keeps exactly the new rows, one outbox row and one record each, and no second key for anyone."""

from __future__ import annotations

import asyncpg
import pytest

from contracts.envelope import Family
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from tests import factories
from tests.helpers import csv_importer


async def test_a_chunk_of_new_and_imported_rows_keeps_each_new_row_once(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, principal, _, start = await csv_importer(pool, settings, monkeypatch, "plain", chunk_rows=20)
    known = [factories.person_key() for _ in range(2)]
    before = [factories.placement(p).data for p in known]
    first = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", before))
    assert (first.accepted, first.duplicates) == (2, 0), first.as_dict()
    fresh = [factories.person_key() for _ in range(3)]
    new = [factories.placement(p).data for p in fresh]
    again_known = [factories.placement(known[0]).data]  # a new row of a person with a stored key
    rows = [new[0], before[0], new[1], new[1], before[1], again_known[0], new[2]]
    keys = "SELECT person_key, wrapped FROM person_data_keys WHERE person_key = ANY($1::text[]) ORDER BY 1"
    async with pool.acquire() as conn:
        stored = await conn.fetch(keys, known)
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (summary.accepted, summary.duplicates, summary.rejected) == (4, 3, 0), summary.as_dict()
    async with pool.acquire() as conn:
        outbox = await conn.fetch(
            "SELECT key, event_id FROM outbox WHERE id > $1 AND key = ANY($2::bytea[]) ORDER BY id",
            start,
            [p.encode() for p in known + fresh],
        )
        records = await conn.fetch(
            "SELECT event_ids FROM idempotency_keys WHERE organisation = $1 AND event_ids && $2::text[]",
            principal.organisation,
            [r["event_id"] for r in outbox],
        )
        assert await conn.fetch(keys, known) == stored
        assert [r["person_key"] for r in await conn.fetch(keys, fresh)] == sorted(fresh)
    persons = [bytes(r["key"]).decode() for r in outbox]
    assert sorted(persons) == sorted([*known, *fresh, known[0]])  # the first file's two, then four
    assert sorted(e for r in records for e in r["event_ids"]) == sorted(r["event_id"] for r in outbox)
    third = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (third.accepted, third.duplicates) == (0, 7), third.as_dict()
