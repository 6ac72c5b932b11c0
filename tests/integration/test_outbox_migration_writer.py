"""Migration 040 loses no event accepted while it runs: an outbox row written by a transaction that
commits during the migration gets its mark in ``outbox_pending`` (else the relay never publishes it).
The row's transaction is open when the migration fills the marks (so the fill does not see it) and
commits before the trigger exists; then only a lock on the outbox taken before the fill keeps it out."""

from __future__ import annotations

from infra.config import Settings
from tests.helpers import before_migration, migrate_while_held


async def test_a_row_committed_while_migration_040_runs_is_pending_after_it(
    live_stack: None, settings: Settings
) -> None:
    async with before_migration(settings, "040") as db:
        # An acceptance in flight: its outbox row written, not committed yet.
        accepting = db.writer.transaction()
        await accepting.start()
        row = await db.writer.fetchval(
            "INSERT INTO outbox (topic, key, headers, value, event_id) "
            "VALUES ('t', 'k', '{}', 'v', 'accepted-during-040') RETURNING id"
        )
        await migrate_while_held(db, accepting.commit)
        marked = await db.migrating.fetchval("SELECT count(*) FROM outbox_pending WHERE id = $1", row)
        assert marked == 1, "an event accepted while migration 040 ran has no mark: never published"
