"""Migration 040 loses no event accepted while it runs: an outbox row written by a transaction that
commits during the migration gets its mark in ``outbox_pending`` (else the relay never publishes it).
The row's transaction is open when the migration fills the marks (so the fill does not see it) and
commits before the trigger exists; then only a lock on the outbox taken before the fill keeps it out."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from infra.config import Settings
from infra.db import _migration_files, init_connection


async def test_a_row_committed_while_migration_040_runs_is_pending_after_it(
    live_stack: None, settings: Settings
) -> None:
    database = f"ittai_test_m040w{uuid.uuid4().hex[:8]}"
    base = settings.pg_dsn.rsplit("/", 1)[0]
    admin = await asyncpg.connect(base + "/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        migrating = await asyncpg.connect(base + f"/{database}")
        writer = await asyncpg.connect(base + f"/{database}")
        try:
            await init_connection(migrating)
            files = _migration_files()
            for name, sql in files:
                if name >= "040":
                    break
                await migrating.execute(sql)
            (sql,) = [sql for name, sql in files if name.startswith("040_")]
            # An acceptance in flight: its outbox row written, not committed yet.
            accepting = writer.transaction()
            await accepting.start()
            row = await writer.fetchval(
                "INSERT INTO outbox (topic, key, headers, value, event_id) "
                "VALUES ('t', 'k', '{}', 'v', 'accepted-during-040') RETURNING id"
            )
            migration = asyncio.ensure_future(migrating.execute(sql))
            pid = migrating.get_server_pid()
            # Until the migration waits for a lock (the acceptance's), or is done.
            while not migration.done() and not await admin.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
            ):
                await asyncio.sleep(0.01)
            await accepting.commit()
            await migration
            marked = await migrating.fetchval("SELECT count(*) FROM outbox_pending WHERE id = $1", row)
            assert marked == 1, "an event accepted while migration 040 ran has no mark: never published"
        finally:
            await writer.close()
            await migrating.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
