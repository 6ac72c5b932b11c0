"""Migration 049 fills ``feed_registrations.referred_at`` from the referrals kept, then creates the triggers
that keep it. A feed batch writing a referral (and no registration) while it runs is in neither: the
fill's snapshot does not see it, and it was written before the trigger existed. Unless the migration
locks ``feed_referrals`` before the fill, that registration keeps no referral time for good (review10 F2).
"""

from __future__ import annotations

from datetime import UTC, datetime

from infra.config import Settings
from tests.helpers import before_migration, migrate_while_held

AT = datetime(2008, 5, 2, tzinfo=UTC)


async def test_a_referral_committed_while_migration_049_runs_is_kept_with_its_registration(
    live_stack: None, settings: Settings
) -> None:
    async with before_migration(settings, "049") as db:
        await db.migrating.execute(
            "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, "
            "team_support, personal, arrived_at) VALUES ('r', 'p', '960053', '960053-01', '2008-05-01', "
            "false, 'null', $1)",
            AT,
        )
        # A feed batch in flight with the person's referral (and no registration): not committed yet.
        batch = db.writer.transaction()
        await batch.start()
        await db.writer.execute(
            "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at) "
            "VALUES ('f', 'p', '960053', '960053-01', '2008-05-10', $1)",
            AT,
        )
        await migrate_while_held(db, batch.commit)
        kept = await db.migrating.fetchval("SELECT referred_at FROM feed_registrations WHERE event_id = 'r'")
        assert kept == AT, "a referral written while migration 049 ran is kept by no registration"
