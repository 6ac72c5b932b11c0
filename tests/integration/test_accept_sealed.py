"""``outbox.accept_sealed`` (migration 021's ``accept_events``): the accepting transaction in one round
trip — data keys, the erasure fence (P9), idempotency keys, outbox rows, holders (P3) and withdrawal
fences (P7) — each request (unit) accepted or refused whole.

It replaced a transaction of six to eight statements whose data keys committed in a transaction of their
own; these tests hold what that transaction guaranteed, unit by unit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson
import pytest

from contracts.envelope import Event, Family
from contracts.events import Sealed
from infra.auth import AuthError, OrgKind, Role, add_client, authenticate, revoke_client
from infra.config import Settings
from infra.crypto import KeyStore, open_sealed
from infra.db import AdvisoryLock
from producers.adapters.sites import add_sites
from producers.outbox import accept_sealed
from producers.submission import Submission, to_event
from tests import factories
from tests.helpers import wait_for


def _sealed(keystore: KeyStore, subs: list[Submission]) -> tuple[list[Event], dict[str, bytes]]:
    """Events sealed under fresh keys (none stored yet), and the fresh keys, wrapped."""
    sealing = keystore.sealing_keys([], [s.person_key for s in subs])
    return [to_event(s, sealing.keys[s.person_key]) for s in subs], sealing.fresh


async def test_one_statement_decides_every_unit(pool: asyncpg.Pool, settings: Settings) -> None:
    keystore = KeyStore.from_settings(settings)
    erased, kept, taken, first, second, raced = (factories.person_key() for _ in range(6))
    units: list[list[Event]] = []
    fresh: dict[str, bytes] = {}
    for person in (erased, kept, taken, first, second, raced):
        events, keys = _sealed(keystore, [factories.registration(person), factories.placement(person)])
        units.append(events)
        fresh |= keys
    organisation = "office:1102"
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 'test')", erased)
        await conn.execute(
            "INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids) "
            "VALUES ($1, 'taken', '\\x00', 'registration', '{earlier}')",
            organisation,
        )
        # A key stored for ``raced`` after its events were sealed (a concurrent acceptance).
        await conn.execute(
            "INSERT INTO person_data_keys (person_key, version, wrapped) VALUES ($1, 1, '\\x00')", raced
        )
        # The driver learns the function's parameter types on a connection's first call (its own queries).
        warm_up, warm_keys = _sealed(keystore, [factories.registration(factories.person_key())])
        await accept_sealed(conn, [warm_up], warm_keys, origin="test", namespace=settings.topic_namespace)
        statements: list[str] = []

        def logged(record: asyncpg.connection.LoggedQuery) -> None:
            statements.append(record.query)

        conn.add_query_logger(logged)
        try:
            verdicts = await accept_sealed(
                conn,
                units,
                fresh,
                [
                    (2, organisation, "taken", b"h2", "registration"),
                    (3, organisation, "same", b"h3", "registration"),
                    (4, organisation, "same", b"h4", "registration"),
                ],
                origin="test",
                namespace=settings.topic_namespace,
            )
        finally:
            await asyncio.sleep(0)  # the driver calls query loggers soon after, not during, the query
            conn.remove_query_logger(logged)
        assert len(statements) == 1, statements
        assert verdicts.kept == {1, 3}
        assert verdicts.erased == {erased} and verdicts.conflicted == {raced} and verdicts.won == {3}

        ids = [e.id for e in units[1] + units[3]]
        rows = await conn.fetch(
            "SELECT event_id, key FROM outbox WHERE event_id = ANY($1::text[]) ORDER BY id",
            [e.id for u in units for e in u],
        )
        assert [r["event_id"] for r in rows] == ids, "only the kept units' events, in the order given"
        assert [bytes(r["key"]) for r in rows] == [kept.encode()] * 2 + [first.encode()] * 2
        stored = await conn.fetch(
            "SELECT person_key, wrapped FROM person_data_keys WHERE person_key = ANY($1::text[])",
            [erased, kept, taken, first, second, raced],
        )
        # No key for the erased, nor for a unit refused (its idempotency key taken: ``taken``, ``second``);
        # the raced person keeps the key stored first.
        assert {r["person_key"]: bytes(r["wrapped"]) for r in stored} == {
            kept: fresh[kept],
            first: fresh[first],
            raced: b"\x00",
        }
        record = await conn.fetchval(
            "SELECT event_ids FROM idempotency_keys WHERE organisation = $1 AND key = 'same'", organisation
        )
        assert record == [e.id for e in units[3]], "the first unit with a key wins it, with its own events"
        holders = await conn.fetch(
            "SELECT DISTINCT person_key FROM person_holders WHERE person_key = ANY($1::text[])",
            [erased, kept, taken, first, second, raced],
        )
        assert {r[0] for r in holders} == {kept, first}, "only kept registrations make holders"


async def test_withdrawal_fences_move_only_with_kept_units(pool: asyncpg.Pool, settings: Settings) -> None:
    keystore = KeyStore.from_settings(settings)
    kept, refused = factories.person_key(), factories.person_key()
    units = []
    for person in (kept, refused):
        events, _ = _sealed(keystore, [factories.consent(person, action="withdrawn", version=2)])
        units.append(events)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 'test')", refused)
        verdicts = await accept_sealed(conn, units, {}, origin="test", namespace=settings.topic_namespace)
        fences = await conn.fetch(
            "SELECT person_key, event_id FROM withdrawal_fences WHERE person_key = ANY($1::text[])",
            [kept, refused],
        )
    assert verdicts.kept == {0}
    assert {(r[0], r[1]) for r in fences} == {(kept, units[0][0].id)}


async def test_an_erasure_committed_while_the_call_waits_for_its_lock_wins(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """P9 under a concurrent erasure: the erasure holds the acceptance lock exclusively while it writes the
    register; the accepting call waits for it, then reads the register (after its statement began) and
    refuses the person, storing no key of theirs. No timing: the test waits until PostgreSQL shows the
    call waiting for the lock."""
    keystore = KeyStore.from_settings(settings)
    person, other = factories.person_key(), factories.person_key()
    mine, keys = _sealed(keystore, [factories.registration(person)])
    theirs, other_keys = _sealed(keystore, [factories.registration(other)])
    async with pool.acquire() as eraser, pool.acquire() as conn:
        tx = eraser.transaction()
        await tx.start()
        await eraser.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.ACCEPTANCE_ERASURE)
        await eraser.execute("INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 'test')", person)
        pid = conn.get_server_pid()
        call = asyncio.create_task(
            accept_sealed(
                conn, [mine, theirs], keys | other_keys, origin="test", namespace=settings.topic_namespace
            )
        )
        while not await eraser.fetchval(
            "SELECT true FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted", pid
        ):
            await asyncio.sleep(0.01)
        assert not call.done()
        await tx.commit()
        verdicts = await call
        assert verdicts.erased == {person} and verdicts.kept == {1}
        assert await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", person) == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", mine[0].id) == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", theirs[0].id) == 1


async def test_a_request_whose_person_got_a_data_key_meanwhile_is_sealed_again_and_accepted(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group commit reads the stored data keys, seals with a fresh key where none is stored, and the
    accepting call stores it. Another process storing a key for the same person in between (step by
    step here, no timing) leaves events sealed under a key nobody holds: the call refuses that request
    ("conflicted"), the group commit puts it first in line again, and the next group seals it under the
    stored key. The answer is the accepted event's id, and its block opens with the stored key."""
    from producers.adapters import service as adapter_service
    from producers.adapters.authorization import Adapter
    from producers.adapters.csv_chunks import FamilyRows, Row
    from producers.adapters.service import AdapterService, _Unit

    person = factories.person_key()
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "test")])
        _, token = await add_client(
            conn,
            name="t",
            org_kind=OrgKind.OFFICE,
            org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )
        principal = await authenticate(conn, f"Bearer {token}")

    real_seal = adapter_service.seal_units
    other = KeyStore.from_settings(settings)  # another process's key store
    stored: list[bytes] = []

    async def a_key_is_stored_first(*args: Any, **kwargs: Any) -> Any:
        if not stored:  # the first group only: it read no key for the person
            async with pool.acquire() as conn:
                stored.append((await other.keys_for(conn, [person]))[person])
        return await real_seal(*args, **kwargs)

    monkeypatch.setattr(adapter_service, "seal_units", a_key_is_stored_first)
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    row = FamilyRows(Family.REGISTRATION).judge_body(factories.registration(person).data)
    assert isinstance(row, Row)
    answer = await service.committer.commit(_Unit(principal, Family.REGISTRATION, [row], None))

    assert len(stored) == 1, "control: a key was stored between the group's read and its accepting call"
    assert isinstance(answer, list) and len(answer) == 1, answer
    async with pool.acquire() as conn:
        value = await conn.fetchval("SELECT value FROM outbox WHERE event_id = $1", answer[0])
        wrapped = await conn.fetchval("SELECT wrapped FROM person_data_keys WHERE person_key = $1", person)
    assert other._unwrap_key(person, wrapped) == stored[0], "the key stored first is the person's key"
    sealed = Sealed.model_validate(orjson.loads(value)["personal"])
    assert open_sealed(stored[0], person, sealed)["name"] == "髙橋 花子"


_ACCEPT_KEYS_ONLY = (  # accept_events with idempotency keys only (units with no events: nothing else moves)
    "SELECT * FROM accept_events('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', $1, $2, $3, $4, $5,"
    " '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', 'test', 'test_accept_keys_only')"
)


async def test_expired_idempotency_records_are_locked_in_key_order(pool: asyncpg.Pool) -> None:
    """Two calls each dropping the other's expired records must take their locks in one order, or each
    waits on the other (a deadlock: a group of requests fails). Migration 021 locked them in the order its
    plan met them: here the keys' order as given, "b" before "a". A call waiting for "b" must hold "a"."""
    organisation = "office:1102"
    a, b = (f"{c}-{uuid.uuid4().hex}" for c in "ab")
    async with pool.acquire() as holder, pool.acquire() as caller, pool.acquire() as third:
        for key in (b, a):  # "b" first in the table too
            await holder.execute(
                "INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids, expires_at)"
                " VALUES ($1, $2, '\\x00', 'consent', '{old}', now() - interval '1 day')",
                organisation,
                key,
            )
        hold = holder.transaction()
        await hold.start()
        await holder.execute(
            "SELECT 1 FROM idempotency_keys WHERE organisation = $1 AND key = $2 FOR UPDATE", organisation, b
        )
        pid = await caller.fetchval("SELECT pg_backend_pid()")
        call = asyncio.create_task(
            caller.fetchrow(
                _ACCEPT_KEYS_ONLY, [1, 2], [organisation] * 2, [b, a], [b"\x01"] * 2, ["consent"] * 2
            )
        )
        await wait_for(
            lambda: third.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid),
            until=lambda waiting: waiting == "Lock",
        )
        try:
            async with third.transaction():
                with pytest.raises(asyncpg.exceptions.LockNotAvailableError):  # the call holds "a"
                    await third.execute(
                        "SELECT 1 FROM idempotency_keys WHERE organisation = $1 AND key = $2 FOR UPDATE NOWAIT",
                        organisation,
                        a,
                    )
        finally:
            await hold.rollback()
            await call
        stored = await third.fetch(
            "SELECT key, event_ids FROM idempotency_keys WHERE organisation = $1 AND key = ANY($2::text[])",
            organisation,
            [a, b],
        )
    assert {r["key"]: r["event_ids"] for r in stored} == {a: [], b: []}  # the expired records replaced


async def test_a_client_revoked_between_the_groups_read_and_its_accepting_call_has_nothing_accepted(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group commit reads its clients' revocations, then authorises and seals (CPU), then calls the
    accepting statement. A revocation committed in between (step by step here, no timing) must still
    refuse the request: ``CredentialCache`` promises that a revoked credential never gets an event
    accepted after its revocation commits. The accepting call took its events without looking again."""
    from producers.adapters import service as adapter_service
    from producers.adapters.authorization import Adapter
    from producers.adapters.csv_chunks import FamilyRows, Row
    from producers.adapters.service import AdapterService, _Unit

    person = factories.person_key()
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "test")])
        client_id, token = await add_client(
            conn,
            name="revoked-in-group",
            org_kind=OrgKind.OFFICE,
            org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )
        principal = await authenticate(conn, f"Bearer {token}")

    real_seal = adapter_service.seal_units
    revoked: list[bool] = []

    async def revoked_after_the_read(*args: Any, **kwargs: Any) -> Any:
        if not revoked:  # the group's clients were read: the operator revokes now, and commits
            async with pool.acquire() as conn:
                revoked.append(await revoke_client(conn, client_id))
        return await real_seal(*args, **kwargs)

    monkeypatch.setattr(adapter_service, "seal_units", revoked_after_the_read)
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    row = FamilyRows(Family.PLACEMENT).judge_body(factories.placement(person).data)
    assert isinstance(row, Row)
    answer = await asyncio.gather(
        service.committer.commit(_Unit(principal, Family.PLACEMENT, [row], None)), return_exceptions=True
    )

    assert revoked == [True], "control: the revocation committed between the group's read and its call"
    async with pool.acquire() as conn:
        written = await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", person.encode())
    assert written == 0, "an event was accepted after its client's revocation committed"
    assert isinstance(answer[0], AuthError) and answer[0].status == 401, answer
