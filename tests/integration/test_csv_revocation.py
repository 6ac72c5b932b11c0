"""A file's import re-checks its uploader's credential at every chunk: a client revoked while its file is
being imported has nothing accepted from the next chunk on (the chunks committed before stay), and the
summary says why, naming no value."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from contracts.envelope import Family
from infra.auth import Principal, revoke_client
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from producers.adapters import service as service_module
from producers.adapters.service import AdapterService
from tests import factories
from tests.helpers import csv_importer


async def test_a_client_revoked_during_an_import_has_nothing_accepted_from_the_next_chunk_on(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, principal, client_id, start = await csv_importer(pool, settings, monkeypatch, "revoked")
    commit = service._write_chunk
    commits = 0

    async def revoked_after_the_first(*args: Any) -> None:
        nonlocal commits
        await commit(*args)
        commits += 1
        if commits == 1:  # the first chunk is in; the credential is revoked before the second commits
            async with pool.acquire() as conn:
                assert await revoke_client(conn, client_id)

    monkeypatch.setattr(service, "_write_chunk", revoked_after_the_first)
    rows = [factories.placement(factories.person_key()).data for _ in range(9)]
    summary, written = await _import(service, principal, pool, rows, start)
    assert (summary.accepted, written) == (3, 3)
    assert summary.file_error is not None and "revoked" in summary.file_error
    assert summary.file_error.startswith("line 5:")  # the second chunk's first row (line 1 is the header)
    assert rows[3]["personal"]["employer_name"] not in str(summary.as_dict())


async def test_a_client_revoked_after_a_chunk_was_authorised_has_nothing_of_it_accepted(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk is authorised while the one before it is still being written; its transaction reads the
    credential again, so a revocation between the two refuses that chunk (and the rest)."""
    service, principal, client_id, start = await csv_importer(pool, settings, monkeypatch, "revoked-late")
    seal, write = service._seal_chunk, service._write_chunk
    seals = writes = 0

    async def revoke_once_both_happened() -> None:
        # The second chunk is authorised while the first is being written: revoke once both are done
        # (whichever ends last), so the first chunk is in and the second's transaction meets the revocation.
        if seals == 2 and writes == 1:
            async with pool.acquire() as conn:
                assert await revoke_client(conn, client_id)

    async def sealing(*args: Any) -> Any:
        nonlocal seals
        sealed = await seal(*args)
        seals += 1
        await revoke_once_both_happened()
        return sealed

    async def writing(*args: Any) -> Any:
        nonlocal writes
        written = await write(*args)
        writes += 1
        await revoke_once_both_happened()
        return written

    monkeypatch.setattr(service, "_seal_chunk", sealing)
    monkeypatch.setattr(service, "_write_chunk", writing)
    rows = [factories.placement(factories.person_key()).data for _ in range(9)]
    summary, written = await _import(service, principal, pool, rows, start)
    assert (summary.accepted, written) == (3, 3)
    assert summary.file_error is not None and summary.file_error.startswith("line 5:")


async def _import(
    service: AdapterService, principal: Principal, pool: asyncpg.Pool, rows: list[Any], start: int
) -> tuple[Any, int]:
    """The import's summary, and how many outbox rows it wrote."""
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    async with pool.acquire() as conn:
        written = await conn.fetchval("SELECT count(*) FROM outbox WHERE id > $1", start)
    return summary, written


async def test_a_revocation_committed_while_a_chunk_is_accepted_waits_for_that_chunk(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk's transaction has read the credential (``accept_file_rows``) and not committed yet when an
    operator revokes it: the revocation must wait for that commit, so nothing the chunk accepted commits
    after the revocation did (a plain read of ``clients`` let the revocation commit first, and the chunk's
    rows then went in under a credential already revoked)."""
    service, principal, client_id, start = await csv_importer(
        pool, settings, monkeypatch, "revoked-in-commit"
    )
    accept = service_module._accept_file_rows
    revoker = await pool.acquire()
    revoking: list[asyncio.Future[bool]] = []
    committed_first: list[bool] = []

    async def revoked_before_commit(*args: Any) -> Any:
        verdict = await accept(*args)  # in the chunk's transaction, which commits once this returns
        if not revoking:
            revoking.append(asyncio.ensure_future(revoke_client(revoker, client_id)))
            pid = revoker.get_server_pid()
            # Until the revocation has committed or waits for a lock (an order, not a time, is checked).
            while not revoking[0].done():
                if await pool.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
                ):
                    break
                await asyncio.sleep(0.01)
            committed_first.append(revoking[0].done())
        return verdict

    monkeypatch.setattr(service_module, "_accept_file_rows", revoked_before_commit)
    rows = [factories.placement(factories.person_key()).data for _ in range(9)]
    try:
        summary, written = await _import(service, principal, pool, rows, start)
        assert await revoking[0]
    finally:
        await pool.release(revoker)
    assert committed_first == [False], "the revocation committed inside the chunk's open transaction"
    assert (summary.accepted, written) == (3, 3)  # the first chunk, committed before the revocation
    assert summary.file_error is not None and summary.file_error.startswith("line 5:")
