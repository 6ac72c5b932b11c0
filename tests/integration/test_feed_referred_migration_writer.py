"""Migration 049 fills ``feed_registrations.referred_at`` from the referrals kept, then creates the triggers
that keep it. A feed batch writing a referral (and no registration) while it runs is in neither: the
fill's snapshot does not see it, and it was written before the trigger existed. Unless the migration
locks ``feed_referrals`` before the fill, that registration keeps no referral time for good (review10 F2).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from infra.config import Settings
from infra.db import _migration_files, init_connection

AT = datetime(2008, 5, 2, tzinfo=UTC)


async def test_a_referral_committed_while_migration_049_runs_is_kept_with_its_registration(
    live_stack: None, settings: Settings
) -> None:
    database = f"ittai_test_m049w{uuid.uuid4().hex[:8]}"
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
                if name >= "049":
                    break
                await migrating.execute(sql)
            (sql,) = [sql for name, sql in files if name.startswith("049_")]
            await migrating.execute(
                "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, "
                "team_support, personal, arrived_at) VALUES ('r', 'p', '960053', '960053-01', '2008-05-01', "
                "false, 'null', $1)",
                AT,
            )
            # A feed batch in flight with the person's referral (and no registration): not committed yet.
            batch = writer.transaction()
            await batch.start()
            await writer.execute(
                "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at) "
                "VALUES ('f', 'p', '960053', '960053-01', '2008-05-10', $1)",
                AT,
            )
            migration = asyncio.ensure_future(migrating.execute(sql))
            pid = migrating.get_server_pid()
            # Until the migration waits for a lock (the batch's), or is done.
            while not migration.done() and not await admin.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
            ):
                await asyncio.sleep(0.01)
            await batch.commit()
            await migration
            kept = await migrating.fetchval("SELECT referred_at FROM feed_registrations WHERE event_id = 'r'")
            assert kept == AT, "a referral written while migration 049 ran is kept by no registration"
        finally:
            await writer.close()
            await migrating.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
