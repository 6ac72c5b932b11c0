"""A retention naming another person's placement never counts for that placement, in whichever order the
feed consumer reads the topics. Placements and retentions are separate topics (and the two people's records
separate partitions), so a forged retention may be consumed before the placement it names: the check against
the placements kept (2ed2b6a) then finds no owner and kept it under the placement's id, where the counting
(joined by placement id) took it as the placement's own checkpoint, while a replay reading the topics in
the other order dead-lettered it: the feed differed between replay and incremental. A retention is now kept
as its own person's (migration 045) and counts only for a placement of that person."""

from __future__ import annotations

import asyncpg

from infra.config import Settings
from tests import factories
from tests.browser.flows import publish
from tests.helpers import catch_up_view_and_feed, factories_cohort_1


async def _added(
    pool: asyncpg.Pool, isolated: Settings, *, forged_first: bool
) -> list[dict[tuple[str, ...], int]]:
    """What person Y's placement adds to the cohort, with X's retention naming it read before or after it,
    then with Y's own retention: the cohort's changes after each step."""
    y, x = factories.person_key(), factories.person_key()
    placed = factories.placement(y)
    placement_id = placed.data["placement_id"]
    forged = factories.retention(
        x, placement_id, status="left", left_on="2025-06-01", checked_on="2025-06-12"
    )
    steps = [[factories.registration(y), placed], [factories.registration(x), forged]]
    if forged_first:
        steps.reverse()
    steps.append([factories.retention(y, placement_id, status="employed")])
    # A job seeker new in 2025-06, so that the authority has a feed for the month (the retention cohorts are
    # counted in the feeds of the authorities that have one).
    await publish(
        isolated,
        pool,
        [factories.registration(factories.person_key(), registered_on="2025-06-02")],
        origin="test",
    )
    await catch_up_view_and_feed(pool, isolated)
    before = await factories_cohort_1(pool)
    changes = []
    for events in steps:
        await publish(isolated, pool, events, origin="test")
        await catch_up_view_and_feed(pool, isolated)
        after = await factories_cohort_1(pool)
        changes.append({key: n for key in before | after if (n := after[key] - before[key])})
    return changes


async def test_a_retention_consumed_before_the_other_persons_placement_it_names_never_counts_for_it(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    placed, employed = {(factories.SITE, "not_reported"): 1}, {(factories.SITE, "employed"): 1}
    # The forged retention read first counts for nothing, then Y's placement counts as not reported, and
    # then as Y's own checkpoint reports it.
    assert await _added(pool, isolated, forged_first=True) == [{}, placed, employed]


async def test_the_feed_counts_the_same_whichever_of_the_two_is_consumed_first(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    placed, employed = {(factories.SITE, "not_reported"): 1}, {(factories.SITE, "employed"): 1}
    # In the other order the forged retention is kept as X's and the cohort is unchanged.
    placement_first = await _added(pool, isolated, forged_first=False)
    assert placement_first == [placed, placed, employed]
    forged_first = await _added(pool, isolated, forged_first=True)
    assert forged_first[1:] == placement_first[1:]
