"""A file chunk's data keys are made when it is sealed and stored by its transaction (migration 029's
``accept_file_rows``), with its row keys and outbox rows. Whatever happens between the two, every event
accepted opens with the one key its person has in ``person_data_keys``: a person of two chunks (the second
sealed while the first is still being written) is sealed under the first chunk's key; a person whose key
another acceptance stored meanwhile has their rows sealed again under that key; and two imports of one
file at once accept each row once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest

from contracts.envelope import Family
from contracts.events import Sealed
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from infra.crypto import KeyStore, open_sealed
from infra.db import AdvisoryLock
from producers.adapters.authorization import Adapter
from producers.adapters.service import AdapterService
from producers.holders import ERASED_MEANWHILE
from tests import factories
from tests.helpers import ChunksOverlapped, csv_importer


async def test_a_person_of_two_chunks_has_both_rows_sealed_under_the_one_stored_key(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, principal, _, start = await csv_importer(pool, settings, monkeypatch, "two-chunks", chunk_rows=1)
    # The second chunk is sealed before the first chunk's key is stored.
    overlapped = ChunksOverlapped(service, monkeypatch)
    person = factories.person_key()
    rows = [factories.placement(person).data, factories.placement(person).data]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (overlapped.seals, summary.accepted, summary.rejected) == (2, 2, 0), summary.as_dict()
    assert await _opened(pool, settings, start) == [(person, r["personal"]["employer_name"]) for r in rows]


async def test_rows_of_a_person_whose_key_was_stored_meanwhile_are_sealed_again_under_it(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, principal, _, start = await csv_importer(pool, settings, monkeypatch, "stored-meanwhile")
    seal = service._seal_chunk
    person, other = factories.person_key(), factories.person_key()

    async def another_acceptance_stores_a_key_after_sealing(*args: Any) -> Any:
        sealed = await seal(*args)
        async with pool.acquire() as conn:  # as an HTTP request about the same person would
            await KeyStore.from_settings(settings).keys_for(conn, [person])
        return sealed

    monkeypatch.setattr(service, "_seal_chunk", another_acceptance_stores_a_key_after_sealing)
    rows = [
        factories.placement(person).data,
        factories.placement(other).data,
        factories.placement(person).data,
    ]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (summary.accepted, summary.duplicates, summary.rejected) == (3, 0, 0), summary.as_dict()
    opened = await _opened(pool, settings, start)
    expected = [(r["person_key"], r["personal"]["employer_name"]) for r in rows]
    assert sorted(opened) == sorted(expected)
    # The resealed rows come after the chunk's others, in the file's order among themselves.
    assert [o for o in opened if o[0] == person] == [e for e in expected if e[0] == person]


async def test_two_imports_of_one_file_at_once_accept_each_row_once(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, principal, _, start = await csv_importer(pool, settings, monkeypatch, "twice-at-once")
    other = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    rows = [factories.placement(factories.person_key()).data for _ in range(12)]
    content = write_csv("placement", rows)
    first, second = await asyncio.gather(
        service.import_csv(principal, Family.PLACEMENT, content),
        other.import_csv(principal, Family.PLACEMENT, content),
    )
    assert first.accepted + second.accepted == len(rows)
    assert first.duplicates + second.duplicates == len(rows)
    assert sorted(await _opened(pool, settings, start)) == sorted(
        (r["person_key"], r["personal"]["employer_name"]) for r in rows
    )


async def _opened(pool: asyncpg.Pool, settings: Settings, start: int) -> list[tuple[str, str]]:
    """(person, employer) of every event written since ``start``, in outbox order, each opened with the
    key its person has in ``person_data_keys`` (a fresh key store: nothing cached)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT key, value FROM outbox WHERE id > $1 ORDER BY id", start)
        people = {bytes(r["key"]).decode() for r in rows}
        keys = await KeyStore.from_settings(settings).existing_keys(conn, people)
    opened: list[tuple[str, str]] = []
    for r in rows:
        person = bytes(r["key"]).decode()
        data = orjson.loads(bytes(r["value"]))
        block = open_sealed(keys[person], person, Sealed.model_validate(data["personal"]))
        opened.append((person, block["employer_name"]))
    return opened


async def test_a_file_chunk_records_the_holders_and_fences_its_rows_make(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P3 and P7 with the chunk's acceptance: a registration file makes its site's parties hold the person,
    a consent file's withdrawal moves their fence to its ``signed_at`` (the latest of the file's)."""
    service, principal, _, _ = await csv_importer(pool, settings, monkeypatch, "holders-fences")
    person = factories.person_key()
    registered = await service.import_csv(
        principal, Family.REGISTRATION, write_csv("registration", [factories.registration(person).data])
    )
    signed = ["2025-05-01T09:00:00+09:00", "2025-06-01T09:00:00+09:00", "2025-05-15T09:00:00+09:00"]
    consents = [factories.consent(person).data] + [
        factories.consent(
            person,
            action="withdrawn",
            captured={**factories.consent(person).data["captured"], "signed_at": s},
        ).data
        for s in signed
    ]
    consented = await service.import_csv(principal, Family.CONSENT, write_csv("consent", consents))
    assert (registered.accepted, consented.accepted) == (1, 4), consented.as_dict()
    async with pool.acquire() as conn:
        holders = await conn.fetch(
            "SELECT org_kind, org_code FROM person_holders WHERE person_key = $1 ORDER BY org_kind", person
        )
        fence = await conn.fetchval("SELECT signed_at FROM withdrawal_fences WHERE person_key = $1", person)
    assert [(h["org_kind"], h["org_code"]) for h in holders] == [
        ("authority", factories.SITE[:6]),
        ("office", factories.OFFICE),
    ]
    assert fence is not None and fence.isoformat() == "2025-06-01T00:00:00+00:00"


async def test_rows_of_a_person_erased_after_sealing_are_refused_at_commit_and_leave_no_key(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P9 at commit: the chunk's transaction reads the erasure register under the erasure lock, after the
    authorisation's read; the erased person's rows are refused (line, rule, no value), the others go in,
    and no data key of theirs is stored."""
    service, principal, _, start = await csv_importer(pool, settings, monkeypatch, "erased-meanwhile")
    seal = service._seal_chunk
    person, other = factories.person_key(), factories.person_key()

    async def erased_after_sealing(*args: Any) -> Any:
        sealed = await seal(*args)
        async with pool.acquire() as conn, conn.transaction():  # as an erasure does (infra.db's lock)
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.ACCEPTANCE_ERASURE)
            await conn.execute(
                "INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 'test')", person
            )
        return sealed

    monkeypatch.setattr(service, "_seal_chunk", erased_after_sealing)
    rows = [factories.placement(other).data, factories.placement(person).data]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (summary.accepted, summary.rejected) == (1, 1), summary.as_dict()
    ((line, refusal),) = summary.errors
    assert (line, refusal.rule) == (3, ERASED_MEANWHILE)
    assert rows[1]["personal"]["employer_name"] not in str(summary.as_dict())
    assert [p for p, _ in await _opened(pool, settings, start)] == [other]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", person) == 0


async def test_a_key_stored_meanwhile_is_found_when_another_person_of_the_chunk_was_erased_meanwhile(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both at once, between sealing and commit: a person with a stored key is erased (their key goes),
    and another acceptance stores a key for a person the chunk made a fresh one for. The erased person's
    rows are refused, the other's are sealed again under the stored key: every accepted event opens."""
    service, principal, _, start = await csv_importer(pool, settings, monkeypatch, "erased-and-stored")
    seal = service._seal_chunk
    erased, fresh = factories.person_key(), factories.person_key()
    async with pool.acquire() as conn:
        await KeyStore.from_settings(settings).keys_for(conn, [erased])  # stored before the file

    async def both_after_sealing(*args: Any) -> Any:
        sealed = await seal(*args)
        async with pool.acquire() as conn:
            async with conn.transaction():  # as an erasure does: the lock, the register, the key gone
                await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.ACCEPTANCE_ERASURE)
                await conn.execute(
                    "INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 'test')", erased
                )
                await conn.execute("DELETE FROM person_data_keys WHERE person_key = $1", erased)
            await KeyStore.from_settings(settings).keys_for(conn, [fresh])  # another acceptance's key
        return sealed

    monkeypatch.setattr(service, "_seal_chunk", both_after_sealing)
    rows = [factories.placement(erased).data, factories.placement(fresh).data]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (summary.accepted, summary.rejected) == (1, 1), summary.as_dict()
    assert [e.rule for _, e in summary.errors] == [ERASED_MEANWHILE]
    assert await _opened(pool, settings, start) == [(fresh, rows[1]["personal"]["employer_name"])]


async def test_a_chunk_stores_no_fresh_key_for_a_person_none_of_whose_rows_it_accepted(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key row for a person with no accepted data is a key for nobody (as migration 042 made it for
    ``accept_events``): a chunk whose rows of a person are all refused (their row keys taken) does not
    store the fresh key it sealed for them, nor does the adapter cache it. A person with one accepted row
    beside a refused one keeps theirs; so does a person only new rows name. Reached here by taking the
    keys of two people already imported out of the register (their rows' keys stay taken)."""
    service, principal, _, _ = await csv_importer(pool, settings, monkeypatch, "unkept-keys", chunk_rows=10)
    gone, back, new = factories.person_key(), factories.person_key(), factories.person_key()
    first = [factories.placement(gone).data, factories.placement(back).data]
    summary = await service.import_csv(principal, Family.PLACEMENT, write_csv("placement", first))
    assert summary.accepted == 2, summary.as_dict()
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM person_data_keys WHERE person_key = ANY($1::text[])", [gone, back])
        start = await conn.fetchval("SELECT max(id) FROM outbox")
    again = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    rows = [*first, factories.placement(back).data, factories.placement(new).data]
    summary = await again.import_csv(principal, Family.PLACEMENT, write_csv("placement", rows))
    assert (summary.accepted, summary.duplicates, summary.rejected) == (2, 2, 0), summary.as_dict()
    async with pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT person_key FROM person_data_keys WHERE person_key = ANY($1::text[])", [gone, back, new]
        )
    assert sorted(r[0] for r in stored) == sorted([back, new]), (
        "a key stored for a person with no accepted row"
    )
    assert not again.keystore.holds(gone), "a key cached that nobody stored"
    assert again.keystore.holds(back) and again.keystore.holds(new), "control: accepted people's keys cached"
    assert await _opened(pool, settings, start) == [
        (r["person_key"], r["personal"]["employer_name"]) for r in rows[2:]
    ]
