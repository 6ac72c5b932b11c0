"""What a refused request leaves behind in ``accept_events`` (migration 042): nothing. A unit refused for
its client (revoked, or removed from the register), its idempotency key (taken by another unit), a
person erased or a data key stored meanwhile has no events, no holders, no fences — and no data key made
for it: a key row for a person with no accepted data is a key for nobody, and one more place a person's
existence is written down. Also: a revocation waits for an accepting call already open, and a client
removed (not revoked) between the group commit's read and its accepting call has nothing accepted."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from contracts.envelope import Event, Family
from infra.auth import AuthError, revoke_client
from infra.config import Settings
from infra.crypto import KeyStore
from producers.outbox import accept_sealed
from producers.submission import Submission, to_event
from tests import factories
from tests.helpers import office_publisher, wait_for


def _sealed(keystore: KeyStore, subs: list[Submission]) -> tuple[list[Event], dict[str, bytes]]:
    """Events sealed under fresh keys (none stored yet), and the fresh keys, wrapped."""
    sealing = keystore.sealing_keys([], [s.person_key for s in subs])
    return [to_event(s, sealing.keys[s.person_key]) for s in subs], sealing.fresh


async def _keys(conn: asyncpg.Connection, people: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT person_key FROM person_data_keys WHERE person_key = ANY($1::text[])", people
    )
    return {r[0] for r in rows}


async def test_a_refused_units_fresh_data_key_is_not_stored(pool: asyncpg.Pool, settings: Settings) -> None:
    """Every way ``accept_events`` refuses a unit, in one call; each refused unit's people have a fresh key
    sealed for them and no other unit: none of those keys may be stored. A person in a refused unit and in
    a kept one keeps their key (the kept unit's events are sealed under it)."""
    keystore = KeyStore.from_settings(settings)
    revoked_client, _ = await office_publisher(pool, "refused-keys-revoked")
    live_client, _ = await office_publisher(pool, "refused-keys-live")
    p = {
        name: factories.person_key()
        for name in ("revoked", "sibling", "raced", "lost", "won", "shared", "kept")
    }
    units: list[list[Event]] = []
    fresh: dict[str, bytes] = {}
    for people in (
        ["revoked"],  # 0: its client is revoked
        ["sibling", "raced"],  # 1: "raced" got a key stored meanwhile: the whole unit is sealed again
        ["won", "shared"],  # 2: kept, and wins its idempotency key
        ["lost"],  # 3: the same idempotency key: unit 2 took it
        ["shared"],  # 4: its client is revoked, but "shared" is in unit 3 too
        ["kept"],  # 5: kept
    ):
        events, keys = _sealed(keystore, [factories.placement(p[name]) for name in people])
        units.append(events)
        fresh |= keys
    organisation, same = "office:1102", f"same-{p['won']}"
    async with pool.acquire() as conn:
        assert await revoke_client(conn, revoked_client)
        await conn.execute(
            "INSERT INTO person_data_keys (person_key, version, wrapped) VALUES ($1, 1, '\\x00')", p["raced"]
        )
        verdicts = await accept_sealed(
            conn,
            units,
            fresh,
            [(2, organisation, same, b"h2", "placement"), (3, organisation, same, b"h2", "placement")],
            clients=[revoked_client, live_client, live_client, live_client, revoked_client, live_client],
            origin="test",
            namespace=settings.topic_namespace,
        )
        stored = await _keys(conn, list(p.values()))
    assert verdicts.kept == {2, 5} and verdicts.won == {2} and verdicts.conflicted == {p["raced"]}, (
        "control: the refusals happened"
    )
    assert stored == {p["raced"], p["won"], p["shared"], p["kept"]}, (
        "a key was stored for someone whose every unit was refused"
    )


async def test_a_revoked_requests_fresh_key_is_neither_stored_nor_cached(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the group commit: a revocation between the group's read and its accepting call refuses the
    request (401), and the data key made for its person is neither stored nor kept in the adapter's memory
    (a cached key nobody stored would be used to open, or to seal, under a key the database does not hold).
    """
    from producers.adapters import service as adapter_service
    from producers.adapters.authorization import Adapter
    from producers.adapters.csv_chunks import FamilyRows, Row
    from producers.adapters.service import AdapterService, _Unit

    person = factories.person_key()
    client_id, principal = await office_publisher(pool, "refused-key-cached")
    real_seal = adapter_service.seal_units

    async def revoked_after_the_read(*args: Any, **kwargs: Any) -> Any:
        async with pool.acquire() as conn:
            assert await revoke_client(conn, client_id)
        return await real_seal(*args, **kwargs)

    monkeypatch.setattr(adapter_service, "seal_units", revoked_after_the_read)
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    row = FamilyRows(Family.PLACEMENT).judge_body(factories.placement(person).data)
    assert isinstance(row, Row)
    with pytest.raises(AuthError) as refused:
        await service.committer.commit(_Unit(principal, Family.PLACEMENT, [row], None))
    assert refused.value.status == 401
    async with pool.acquire() as conn:
        assert await _keys(conn, [person]) == set(), "the refused request's fresh key was stored"
    assert not service.keystore.holds(person), "the refused request's fresh key is cached"


async def test_a_revocation_waits_for_an_accepting_call_already_open(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """``accept_events`` reads its units' clients FOR SHARE (migration 035): an operator's revocation made
    while the call is open (here held open, after that read, by a lock on an expired idempotency record
    it must delete) waits until the call commits, so nothing accepted commits after a revocation. The
    order is read from ``pg_stat_activity`` and ``pg_locks``, not from a time."""
    keystore = KeyStore.from_settings(settings)
    client_id, principal = await office_publisher(pool, "revoked-while-open")
    person = factories.person_key()
    events, fresh = _sealed(keystore, [factories.placement(person)])
    key = f"open-{person}"
    async with pool.acquire() as holder, pool.acquire() as caller, pool.acquire() as revoker:
        await holder.execute(
            "INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids, expires_at)"
            " VALUES ($1, $2, '\\x00', 'placement', '{old}', now() - interval '1 day')",
            principal.organisation,
            key,
        )
        hold = holder.transaction()
        await hold.start()
        await holder.execute(
            "SELECT 1 FROM idempotency_keys WHERE organisation = $1 AND key = $2 FOR UPDATE",
            principal.organisation,
            key,
        )
        caller_pid, revoker_pid = caller.get_server_pid(), revoker.get_server_pid()
        call = asyncio.ensure_future(
            accept_sealed(
                caller, [events], fresh, [(0, principal.organisation, key, b"h", "placement")],
                clients=[client_id], origin="test", namespace=settings.topic_namespace,
            )
        )  # fmt: skip
        revocation: asyncio.Future[bool] | None = None
        try:
            # The call has read its client and waits for the held record.
            await wait_for(
                lambda: holder.fetchval(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", caller_pid
                ),
                until=lambda waiting: waiting == "Lock",
            )
            revocation = asyncio.ensure_future(revoke_client(revoker, client_id))
            # Until the revocation has committed or waits for a lock.
            while not revocation.done():
                if await holder.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", revoker_pid
                ):
                    break
                await asyncio.sleep(0.01)
            committed_first = revocation.done()
            waits_for = await holder.fetchval(
                "SELECT $1 = ANY(pg_blocking_pids($2))", caller_pid, revoker_pid
            )
        finally:
            await hold.rollback()
            verdicts = await call
            if revocation is not None:
                assert await revocation
    assert not committed_first, "a revocation committed while an accepting call that read its client was open"
    assert waits_for, "the revocation waited for something other than the accepting call"
    assert verdicts.kept == {0} and not verdicts.revoked


async def test_a_client_removed_between_the_groups_read_and_its_accepting_call_has_nothing_accepted(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a revocation in that window, but the operator deletes the client's row: the request is refused
    401 as an unknown client (never a 5xx), nothing of it is accepted and no key is made for it."""
    from producers.adapters import service as adapter_service
    from producers.adapters.authorization import Adapter
    from producers.adapters.csv_chunks import FamilyRows, Row
    from producers.adapters.service import AdapterService, _Unit

    person = factories.person_key()
    client_id, principal = await office_publisher(pool, "removed-in-group")
    real_seal = adapter_service.seal_units

    async def removed_after_the_read(*args: Any, **kwargs: Any) -> Any:
        async with pool.acquire() as conn:
            assert await conn.execute("DELETE FROM clients WHERE client_id = $1", client_id) == "DELETE 1"
        return await real_seal(*args, **kwargs)

    monkeypatch.setattr(adapter_service, "seal_units", removed_after_the_read)
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    row = FamilyRows(Family.PLACEMENT).judge_body(factories.placement(person).data)
    assert isinstance(row, Row)
    answer = await asyncio.gather(
        service.committer.commit(_Unit(principal, Family.PLACEMENT, [row], None)), return_exceptions=True
    )
    assert isinstance(answer[0], AuthError), answer
    assert (answer[0].status, answer[0].reason) == (401, "unknown client or wrong secret")
    async with pool.acquire() as conn:
        written = await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", person.encode())
        assert await _keys(conn, [person]) == set()
    assert written == 0


async def test_a_key_taken_back_lets_a_call_waiting_on_it_store_its_own(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A call inserts a fresh key for a unit it then refuses (its idempotency key went to another unit of
    the call) and deletes it before committing. A second call inserting a key for the same person meanwhile
    waits on the first's insert; once the first commits, the row it took back is no conflict: the second
    call stores its own key and is accepted (not told to seal again under a key that is gone). The first
    call is held open after its insert by a lock on an expired idempotency record it must delete; the
    order is read from ``pg_stat_activity``."""
    keystore = KeyStore.from_settings(settings)
    winner, person = factories.person_key(), factories.person_key()
    first, first_keys = _sealed(keystore, [factories.placement(winner)])
    lost, lost_keys = _sealed(keystore, [factories.placement(person)])
    second, second_keys = _sealed(keystore, [factories.placement(person)])
    organisation, key = "office:1102", f"taken-back-{person}"
    async with pool.acquire() as holder, pool.acquire() as caller, pool.acquire() as other:
        await holder.execute(
            "INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids, expires_at)"
            " VALUES ($1, $2, '\\x00', 'placement', '{old}', now() - interval '1 day')",
            organisation,
            key,
        )
        hold = holder.transaction()
        await hold.start()
        await holder.execute(
            "SELECT 1 FROM idempotency_keys WHERE organisation = $1 AND key = $2 FOR UPDATE",
            organisation,
            key,
        )
        idem = [(0, organisation, key, b"h", "placement"), (1, organisation, key, b"h", "placement")]
        call = asyncio.ensure_future(
            accept_sealed(
                caller, [first, lost], first_keys | lost_keys, idem, origin="test",
                namespace=settings.topic_namespace,
            )
        )  # fmt: skip
        waiting: asyncio.Future[Any] | None = None
        try:
            caller_pid = caller.get_server_pid()
            await wait_for(  # the first call inserted its keys and waits for the held record
                lambda: holder.fetchval(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", caller_pid
                ),
                until=lambda waiting: waiting == "Lock",
            )
            waiting = asyncio.ensure_future(
                accept_sealed(other, [second], second_keys, origin="test", namespace=settings.topic_namespace)
            )
            other_pid = other.get_server_pid()
            # Until the second call waits on the first's insert of the person's key.
            await wait_for(
                lambda: holder.fetchval("SELECT $1 = ANY(pg_blocking_pids($2))", caller_pid, other_pid),
                until=bool,
            )
        finally:
            await hold.rollback()
            verdicts = await call
            later = await waiting if waiting is not None else None
    assert verdicts.kept == {0} and verdicts.won == {0}, "control: the first call refused the unit it keyed"
    assert later is not None and later.kept == {0} and not later.conflicted
    async with pool.acquire() as conn:
        wrapped = await conn.fetchval("SELECT wrapped FROM person_data_keys WHERE person_key = $1", person)
    assert bytes(wrapped) == second_keys[person], "the person's key is the second call's own"


async def test_a_client_removed_before_its_retry_is_answered_from_the_record_gets_a_401(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retried request (its idempotency key stored) is answered from the stored record after the group
    commit's read. A client removed in between (not revoked: its row deleted) found no row there, and
    the request ended on an assertion (a 500); it is refused 401 as an unknown client, as the group's
    read refuses it, and nothing is replayed."""
    from producers.adapters.authorization import Adapter
    from producers.adapters.service import AdapterService

    client_id, principal = await office_publisher(pool, "removed-before-replay")
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    body = factories.placement(factories.person_key()).data
    key = f"retried-{client_id}"
    first = await service.accept_events(principal, Family.PLACEMENT, [body], key, batch=False)
    replay = service._replay

    async def removed_first(conn: asyncpg.Connection, *args: Any) -> Any:
        await conn.execute("DELETE FROM clients WHERE client_id = $1", client_id)
        return await replay(conn, *args)

    monkeypatch.setattr(service, "_replay", removed_first)
    with pytest.raises(AuthError) as refused:
        await service.accept_events(principal, Family.PLACEMENT, [body], key, batch=False)
    assert (refused.value.status, refused.value.reason) == (401, "unknown client or wrong secret")
    assert first.event_ids and not first.replayed


async def test_a_retry_whose_record_expired_since_the_groups_read_is_accepted_anew(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry's idempotency record, taken at the group commit's read, expires before the request is
    answered from it (records last 7 days; the read and the answer are moments apart, but a moment is
    enough at the boundary). The request then found no record and ended on an assertion (a 500); an
    expired record is gone for every purpose, so the request is accepted anew, as it would be a moment
    later."""
    from producers.adapters.authorization import Adapter
    from producers.adapters.service import AdapterService

    client_id, principal = await office_publisher(pool, "expired-before-replay")
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    body = factories.placement(factories.person_key()).data
    key = f"expiring-{client_id}"
    first = await service.accept_events(principal, Family.PLACEMENT, [body], key, batch=False)
    replay = service._replay
    expired: list[bool] = []

    async def expired_first(conn: asyncpg.Connection, *args: Any) -> Any:
        if not expired:
            expired.append(True)
            await conn.execute(
                "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
                "WHERE organisation = $1 AND key = $2",
                principal.organisation,
                key,
            )
        return await replay(conn, *args)

    monkeypatch.setattr(service, "_replay", expired_first)
    again = await service.accept_events(principal, Family.PLACEMENT, [body], key, batch=False)
    assert expired == [True], "control: the record expired between the group's read and the answer"
    assert not again.replayed and again.event_ids != first.event_ids
