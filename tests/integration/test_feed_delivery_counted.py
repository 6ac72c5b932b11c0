"""A feed's individual list weighs exactly the placements its revision counted (``count_month``, at the
revision's horizon), never another person's placement that only shares a listed id (migration 046 keeps
both). Delivery read every placement of a listed id at one of the authority's sites or of a person the
authority ever referred: a squatter's placement sent after the horizon, placed in another month, or of a
person the authority referred after the horizon or after the month's end was weighed too (listed, or
counted as withheld) in a feed that never counted it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from consumers.feed.builder import count_month
from consumers.feed.delivery import Delivery, deliver
from domain.calendar import parse_month
from infra.config import Settings
from infra.crypto import KeyStore
from tests import factories

MONTH = "2003-01"  # no other test's facts: count_month below reads the whole month
HORIZON = datetime(2003, 2, 11, tzinfo=UTC)
BEFORE, AFTER = datetime(2003, 1, 20, tzinfo=UTC), datetime(2003, 2, 20, tzinfo=UTC)
OTHER_SITE = f"{factories.OTHER_AUTHORITY}-01"
THIRD_AUTHORITY = "332089"  # Soja


# Each case: the squatter's placement (site, placed_on, arrived_at), its referrals by (authority,
# referred_on, arrived_at), and whether the authority's revision at HORIZON counts it.
CASES = {
    "at_its_site_in_time": ((factories.SITE, "2003-01-15", BEFORE), [], True),
    "at_its_site_sent_after_the_horizon": ((factories.SITE, "2003-01-15", AFTER), [], False),
    "at_its_site_placed_another_month": ((factories.SITE, "2003-02-03", BEFORE), [], False),
    "referred_by_it_in_time": ((OTHER_SITE, "2003-01-15", BEFORE), [(factories.AUTHORITY, "2003-01-05", BEFORE)], True),
    "referred_by_it_after_the_horizon": ((OTHER_SITE, "2003-01-15", BEFORE), [(factories.AUTHORITY, "2003-01-05", AFTER)], False),
    "referred_by_it_after_the_month": ((OTHER_SITE, "2003-01-15", BEFORE), [(factories.AUTHORITY, "2003-02-02", BEFORE)], False),
    "referred_by_another_authority": ((OTHER_SITE, "2003-01-15", BEFORE), [(THIRD_AUTHORITY, "2003-01-05", BEFORE)], False),
    "at_another_site_not_referred": ((OTHER_SITE, "2003-01-15", BEFORE), [], False),
}  # fmt: skip


def _weighed(delivery: Delivery) -> int:
    """Placements the delivery read: listed, or counted as withheld (whatever the reason)."""
    return (
        len(delivery.individuals)
        + delivery.withheld_no_consent
        + delivery.withheld_no_agreement
        + delivery.withheld_erased
    )


_PLACEMENT = (
    "INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, occupation, "
    "classification_version, employment_type, sex, age_band, attributes, personal, arrived_at) "
    "VALUES ($1, $2, $3, left($3, 6), $4::text::date, 'hello_work_referral', '08', 'MHLW-2022', 'part_time', "
    "'female', '35-39', '{}', '{}', $5)"
)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_an_individual_list_weighs_a_shared_ids_placement_only_where_the_revision_counts_it(
    pool: asyncpg.Pool, settings: Settings, case: str
) -> None:
    (site, placed_on, arrived_at), referrals, counted = CASES[case]
    x, y, placement_id = factories.person_key(), factories.person_key(), f"shared-{uuid.uuid4().hex}"
    async with pool.acquire() as conn:
        only_here = conn.transaction()  # rolled back: the session's other feed tests read every revision
        await only_here.start()
        try:
            # X's placement, at the authority's site: counted. Y's reuses its id.
            await conn.execute(_PLACEMENT, placement_id, x, factories.SITE, "2003-01-10", BEFORE)
            await conn.execute(_PLACEMENT, placement_id, y, site, placed_on, arrived_at)
            await conn.executemany(
                "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at) "
                "VALUES ($1, $2, $3, $3 || '-01', $4::text::date, $5)",
                [(f"r-{uuid.uuid4().hex}", y, a, on, at) for a, on, at in referrals],
            )
            ids = (
                await count_month(conn, parse_month(MONTH), HORIZON, only=[factories.AUTHORITY])
            ).placement_ids
            assert ids[factories.AUTHORITY].count(placement_id) == (
                2 if counted else 1
            )  # the rule, as counted
            await conn.execute(
                "INSERT INTO feed_revisions (authority, month, revision, horizon, body, suppressed, placement_ids) "
                "VALUES ($1, $2, 1, $3, '{}', '{}', $4)",
                factories.AUTHORITY,
                MONTH,
                HORIZON,
                ids[factories.AUTHORITY],
            )
            delivery = await deliver(conn, KeyStore.from_settings(settings), factories.AUTHORITY, MONTH)
        finally:
            await only_here.rollback()
    assert _weighed(delivery) == (2 if counted else 1)
