"""``holders.fenced_transaction``: the accepting transaction's erasure fence (P9) in one round trip less.
It must still hold the acceptance erasure lock before the register is read, yield who is erased, commit
what the block wrote and roll it back when the block raises."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from infra.db import AdvisoryLock
from producers.holders import fenced_transaction


async def test_the_fence_takes_the_lock_with_begin_then_reads_the_register(pool: asyncpg.Pool) -> None:
    erased, kept = f"消去{uuid.uuid4().hex[:8]}", f"残存{uuid.uuid4().hex[:8]}"
    statements: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 'test')", erased)

        def logged(record: asyncpg.connection.LoggedQuery) -> None:
            statements.append(record.query)

        conn.add_query_logger(logged)
        try:
            async with fenced_transaction(conn, [kept, erased, kept]) as found:
                assert conn.is_in_transaction()
                held = await conn.fetchval(
                    "SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND objid = $1",
                    int(AdvisoryLock.ACCEPTANCE_ERASURE),
                )
        finally:
            conn.remove_query_logger(logged)
        assert not conn.is_in_transaction()
    assert found == {erased}
    assert held == "ShareLock", "the erasure lock is held, shared, inside the transaction"
    # BEGIN with the lock, then the register's read (a statement of its own: it starts after the lock
    # is held), then this test's read of pg_locks, then COMMIT.
    assert len(statements) == 4, statements
    assert statements[0].startswith("BEGIN;") and "pg_advisory_xact_lock_shared" in statements[0]
    assert "sv_erasures" in statements[1] and statements[3] == "COMMIT"


async def test_what_the_block_wrote_is_committed_or_rolled_back(pool: asyncpg.Pool) -> None:
    committed, rolled_back = f"確定{uuid.uuid4().hex[:8]}", f"取消{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        async with fenced_transaction(conn, [committed]) as found:
            assert found == set()
            await conn.execute(
                "INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 't')", committed
            )
        with pytest.raises(RuntimeError):
            async with fenced_transaction(conn, [rolled_back]):
                await conn.execute(
                    "INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 't')", rolled_back
                )
                raise RuntimeError("the block failed")
        assert not conn.is_in_transaction()
        kept = await conn.fetch(
            "SELECT person_key FROM sv_erasures WHERE person_key = ANY($1::text[])", [committed, rolled_back]
        )
    assert {r[0] for r in kept} == {committed}


async def test_no_people_no_lock(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, fenced_transaction(conn, []) as found:
        locks = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
    assert found == set() and locks == 0
