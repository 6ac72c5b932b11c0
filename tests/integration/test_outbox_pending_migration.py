"""Migration 040 carries what was pending: every row the relay had not stamped has its mark in
``outbox_pending`` (the relay publishes it), no row it had stamped has one (never published twice)."""

from __future__ import annotations

from infra.config import Settings
from tests.helpers import before_migration


async def test_rows_pending_before_the_migration_are_pending_after_it(
    live_stack: None, settings: Settings
) -> None:
    async with before_migration(settings, "040") as db:
        conn = db.migrating
        ids = await conn.fetch(
            "INSERT INTO outbox (topic, key, headers, value, event_id, published_at) "
            "SELECT 't', 'k', '{}', 'v', 'e' || n, CASE WHEN n % 3 = 0 THEN now() END "
            "FROM generate_series(1, 30) AS n RETURNING id, published_at IS NULL AS pending"
        )
        await conn.execute(db.sql)
        marks = {r["id"] for r in await conn.fetch("SELECT id FROM outbox_pending")}
        assert marks == {r["id"] for r in ids if r["pending"]}
        await conn.execute(
            "INSERT INTO outbox (topic, key, headers, value, event_id) VALUES ('t', 'k', '{}', 'v', 'x')"
        )
        assert await conn.fetchval("SELECT count(*) FROM outbox_pending") == len(marks) + 1
