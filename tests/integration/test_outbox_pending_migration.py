"""Migration 040 carries what was pending: every row the relay had not stamped has its mark in
``outbox_pending`` (the relay publishes it), no row it had stamped has one (never published twice)."""

from __future__ import annotations

import uuid

import asyncpg

from infra.config import Settings
from infra.db import _migration_files, init_connection


async def test_rows_pending_before_the_migration_are_pending_after_it(
    live_stack: None, settings: Settings
) -> None:
    database = f"ittai_test_m040{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        conn = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + f"/{database}")
        try:
            await init_connection(conn)
            files = _migration_files()
            for name, sql in files:
                if name >= "040":
                    break
                await conn.execute(sql)
            ids = await conn.fetch(
                "INSERT INTO outbox (topic, key, headers, value, event_id, published_at) "
                "SELECT 't', 'k', '{}', 'v', 'e' || n, CASE WHEN n % 3 = 0 THEN now() END "
                "FROM generate_series(1, 30) AS n RETURNING id, published_at IS NULL AS pending"
            )
            (sql,) = [sql for name, sql in files if name.startswith("040_")]
            await conn.execute(sql)
            marks = {r["id"] for r in await conn.fetch("SELECT id FROM outbox_pending")}
            assert marks == {r["id"] for r in ids if r["pending"]}
            await conn.execute(
                "INSERT INTO outbox (topic, key, headers, value, event_id) VALUES ('t', 'k', '{}', 'v', 'x')"
            )
            assert await conn.fetchval("SELECT count(*) FROM outbox_pending") == len(marks) + 1
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
