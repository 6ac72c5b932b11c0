"""A placement id is its own person's: another office's placement, for its own person X, reusing person Y's
placement id, changes nothing about Y's placement or Y's retention checkpoints, in whichever order the feed
consumer reads them. The feed kept a placement by its id alone, the first report winning: X's placement
read first made the feed ignore Y's, and Y's checkpoints were then refused as "another person's
placement". A placement is now kept by (placement id, person) (migration 046), like a checkpoint (045)."""

from __future__ import annotations

import uuid

import asyncpg

from consumers.feed.delivery import deliver
from infra.config import Settings
from infra.crypto import KeyStore
from tests import factories
from tests.browser.flows import publish
from tests.helpers import catch_up_view_and_feed, factories_cohort_1


async def _added(pool: asyncpg.Pool, isolated: Settings, *, squat_first: bool) -> dict[tuple[str, ...], int]:
    """What X's placement squatting Y's id, Y's placement and Y's checkpoint add to the cohort together."""
    y, x = factories.person_key(), factories.person_key()
    placed = factories.placement(y)
    placement_id = placed.data["placement_id"]
    squat = factories.placement(x, placement_id=placement_id, placed_on="2025-05-20")
    steps = [[factories.registration(y), placed], [factories.registration(x), squat]]
    if squat_first:
        steps.reverse()
    steps.append([factories.retention(y, placement_id, status="employed")])
    # A job seeker new in 2025-06, so that the authority has a feed for the month.
    await publish(
        isolated,
        pool,
        [factories.registration(factories.person_key(), registered_on="2025-06-02")],
        origin="test",
    )
    await catch_up_view_and_feed(pool, isolated)
    before = await factories_cohort_1(pool)
    for events in steps:
        await publish(isolated, pool, events, origin="test")
        await catch_up_view_and_feed(pool, isolated)
    after = await factories_cohort_1(pool)
    return {key: n for key in before | after if (n := after[key] - before[key])}


async def test_a_placement_squatting_another_persons_id_first_leaves_that_persons_placement_counted(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    # Y's placement with Y's own checkpoint (employed), and X's placement, not reported.
    expected = {(factories.SITE, "employed"): 1, (factories.SITE, "not_reported"): 1}
    assert await _added(pool, isolated, squat_first=True) == expected


async def test_the_feed_counts_the_same_whichever_placement_of_the_id_is_consumed_first(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    assert await _added(pool, isolated, squat_first=False) == await _added(pool, isolated, squat_first=True)


async def test_an_authoritys_individual_list_holds_only_the_placements_it_counts_of_a_shared_id(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Another authority's revision lists the squatter's placement by id: its delivery reads that placement
    only, not the person Y's placement at this authority's site that has the same id."""
    y, x, placement_id = factories.person_key(), factories.person_key(), f"squat-{uuid.uuid4().hex}"
    other_site = f"{factories.OTHER_AUTHORITY}-01"
    async with pool.acquire() as conn:
        rows_only_here = conn.transaction()  # rolled back: the session's other feed tests read every revision
        await rows_only_here.start()
        await conn.executemany(
            "INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, "
            "occupation, classification_version, employment_type, sex, age_band, attributes, personal, "
            "arrived_at) VALUES ($1, $2, $3, left($3, 6), '2019-01-10', 'hello_work_referral', '08', "
            "'MHLW-2022', 'part_time', 'female', '35-39', '{}', '{}', now())",
            [(placement_id, y, factories.SITE), (placement_id, x, other_site)],
        )
        await conn.execute(
            "INSERT INTO feed_revisions (authority, month, revision, horizon, body, suppressed, placement_ids) "
            "VALUES ($1, '2019-01', 1, now(), '{}', '{}', $2)",
            factories.OTHER_AUTHORITY,
            [placement_id],
        )
        try:
            delivery = await deliver(
                conn, KeyStore.from_settings(settings), factories.OTHER_AUTHORITY, "2019-01"
            )
        finally:
            await rows_only_here.rollback()
    # X's placement alone, withheld (no consent recorded here); Y's is not this authority's to weigh
    read = len(delivery.individuals) + delivery.withheld_no_consent + delivery.withheld_no_agreement
    assert read + delivery.withheld_erased == 1
