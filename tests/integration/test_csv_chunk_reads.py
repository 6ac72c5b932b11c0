"""A file chunk's transaction reads the registers it checks by key, never by organisation: what it reads
of ``idempotency_keys`` and ``person_data_keys`` grows with the chunk, not with what an organisation
accepted before (seven days of row keys, every data key ever made). Counted by PostgreSQL itself
(``pg_stat_xact_user_tables``, in the chunk's own transaction), not timed."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from contracts.envelope import Family
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from producers.adapters import service as adapter_service
from tests import factories
from tests.helpers import csv_importer

_BEFORE = 5_000  # row keys and data keys the organisation had before the file
_ROWS = 400


async def test_a_chunk_reads_the_keys_it_checks_not_every_key_of_its_organisation(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, principal, _, _ = await csv_importer(pool, settings, monkeypatch, "reads", chunk_rows=_ROWS)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids) "
            "SELECT $1, md5(g::text) || md5(g::text), '\\x00', 'placement', ARRAY[md5(g::text)] "
            "FROM generate_series(1, $2) g",
            principal.organisation,
            _BEFORE,
        )
        await conn.execute(
            "INSERT INTO person_data_keys (person_key, version, wrapped) "
            "SELECT md5('p' || g), 1, '\\x00' FROM generate_series(1, $1) g",
            _BEFORE,
        )
        await conn.execute("ANALYZE idempotency_keys; ANALYZE person_data_keys")
    read: list[dict[str, int]] = []
    accept = adapter_service._accept_file_rows

    async def counted(conn: asyncpg.Connection, *args: Any) -> Any:
        verdict = await accept(conn, *args)
        rows = await conn.fetch(
            "SELECT relname, seq_tup_read + coalesce(idx_tup_fetch, 0) AS n FROM pg_stat_xact_user_tables "
            "WHERE relname IN ('idempotency_keys', 'person_data_keys')"
        )
        read.append({r["relname"]: r["n"] for r in rows})
        return verdict

    monkeypatch.setattr(adapter_service, "_accept_file_rows", counted)
    rows = [factories.placement(factories.person_key()).data for _ in range(_ROWS)]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (summary.accepted, summary.rejected) == (_ROWS, 0), summary.as_dict()
    assert read
    # At most a few reads per row of a chunk (the file's chunks hold _ROWS rows together): none of the
    # 5,000 keys the organisation had is read.
    assert sum(n for chunk in read for n in chunk.values()) <= 4 * _ROWS, read


async def test_rows_whose_records_expired_are_accepted_again_and_the_others_stay_duplicates(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired record is gone for every purpose (``service._PURGE_EVERY_S``): a chunk that meets one
    deletes it and takes the row again, while its rows with a live record are duplicates."""
    service, principal, _, _ = await csv_importer(pool, settings, monkeypatch, "expired", chunk_rows=10)
    rows = [factories.placement(factories.person_key()).data for _ in range(6)]
    content = write_csv("placement", rows)
    taken = "SELECT key FROM idempotency_keys WHERE organisation = $1 AND expires_at > now()"
    async with pool.acquire() as conn:
        before = {r["key"] for r in await conn.fetch(taken, principal.organisation)}
    first = await service.import_csv(principal, Family.PLACEMENT, content)
    assert (first.accepted, first.duplicates) == (6, 0), first.as_dict()
    async with pool.acquire() as conn:
        keys = sorted({r["key"] for r in await conn.fetch(taken, principal.organisation)} - before)
        expired = keys[::2]
        await conn.execute(
            "UPDATE idempotency_keys SET expires_at = now() - interval '1 s' WHERE organisation = $1 "
            "AND key = ANY($2::text[])",
            principal.organisation,
            expired,
        )
    again = await service.import_csv(principal, Family.PLACEMENT, content)
    assert (again.accepted, again.duplicates, again.rejected) == (3, 3, 0), again.as_dict()
    async with pool.acquire() as conn:
        live = {r["key"] for r in await conn.fetch(taken, principal.organisation)} - before
    assert sorted(live) == keys
