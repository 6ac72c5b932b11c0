"""A file's chunks are pipelined: one chunk is authorised and sealed while the one before it is still in
its transaction. Authorisation must still see what that chunk changes in the registers: here the holders
a registration makes (P3: a person held by some organisations is registered elsewhere only after
identity linking), in a first chunk whose transaction is held back until the second was authorised."""

from __future__ import annotations

import asyncpg
import pytest

from contracts.envelope import Family
from infra.auth import OrgKind, Role, add_client, authenticate
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from infra.crypto import KeyStore
from producers.adapters import service as service_module
from producers.adapters.authorization import Adapter
from producers.adapters.service import AdapterService
from producers.adapters.sites import add_sites
from tests import factories
from tests.helpers import ChunksOverlapped

_OTHER_SITE, _OTHER_OFFICE = f"{factories.OTHER_AUTHORITY}-01", "1102"


async def test_holders_a_chunk_still_being_written_makes_bind_the_next_chunk(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = factories.person_key()
    async with pool.acquire() as conn:
        await add_sites(
            conn, [(factories.SITE, factories.OFFICE, "pipeline"), (_OTHER_SITE, _OTHER_OFFICE, "elsewhere")]
        )
        _, token = await add_client(
            conn, name="pipeline", org_kind=OrgKind.HELLO_WORK_NATIONAL, org_code="*",
            roles=frozenset({Role.PUBLISH}),
        )  # fmt: skip
        principal = await authenticate(conn, f"Bearer {token}")
    monkeypatch.setattr(service_module, "CHUNK_ROWS", 1)
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    overlapped = ChunksOverlapped(service, monkeypatch)
    rows = [
        factories.registration(person).data,
        factories.registration(
            person, site=_OTHER_SITE, office=_OTHER_OFFICE, authority=factories.OTHER_AUTHORITY
        ).data,
    ]
    summary = await service.import_csv(principal, Family.REGISTRATION, write_csv("registration", rows))
    assert (overlapped.seals, summary.accepted, summary.rejected) == (2, 1, 1), summary.as_dict()
    ((line, refusal),) = summary.errors
    assert line == 3 and "P3" in refusal.rule


async def test_a_chunk_is_staged_while_the_one_before_it_is_still_in_its_transaction(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging a chunk's events (outbox columns and row keys, a sixth of the importer's work per row) is
    part of sealing it: done while the chunk before it is in PostgreSQL, not while PostgreSQL waits."""
    from typing import Any

    from tests.helpers import csv_importer

    service, principal, _, _ = await csv_importer(pool, settings, monkeypatch, "staged-ahead", chunk_rows=2)
    ChunksOverlapped(service, monkeypatch)  # the first chunk's transaction waits for the second's sealing
    log: list[str] = []
    staged, accept = service_module._staged, service_module._accept_file_rows

    async def logged_staged(*args: Any) -> Any:
        log.append("staged")
        return await staged(*args)

    async def logged_accept(*args: Any) -> Any:
        log.append("accept")
        return await accept(*args)

    monkeypatch.setattr(service_module, "_staged", logged_staged)
    monkeypatch.setattr(service_module, "_accept_file_rows", logged_accept)
    rows = [factories.placement(factories.person_key()).data for _ in range(4)]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (summary.accepted, summary.rejected) == (4, 0), summary.as_dict()
    assert log == ["staged", "staged", "accept", "accept"]


async def test_a_files_first_and_last_chunks_are_small_so_neither_side_waits_a_full_chunk(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first chunk is judged with no transaction to overlap it, the last one written with nothing left
    to judge: while either runs, PostgreSQL or this process waits. So chunks grow from one part of rows
    to CHUNK_ROWS, and shrink again as the file's end nears (halving what is left), every row imported
    once and in order."""
    from typing import Any

    from tests.helpers import csv_importer

    service, principal, _, _ = await csv_importer(pool, settings, monkeypatch, "ramped", chunk_rows=8)
    monkeypatch.setattr(service_module, "_YIELD_EVERY", 1)  # a part of a chunk: one row
    sizes: list[int] = []
    seal = service._seal_chunk

    async def sized(*args: Any) -> Any:
        sizes.append(args[2].rows)
        return await seal(*args)

    monkeypatch.setattr(service, "_seal_chunk", sized)
    rows = [factories.placement(factories.person_key()).data for _ in range(30)]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (summary.accepted, summary.rejected) == (30, 0), summary.as_dict()
    assert sum(sizes) == 30 and max(sizes) == 8, sizes
    assert sizes[0] == 1 and sizes[-1] == 1, sizes
