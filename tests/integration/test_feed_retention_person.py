"""A retention follow-up is about its own person's placement. The feed keeps a placement's checkpoints by
placement id ("the checkpoint sent last wins"): a retention of one person naming another person's
placement id replaced that person's checkpoint, so a client holding person X, knowing person Y's
placement id, re-wrote Y's retention in Y's site authority's feed. A checkpoint is now kept with its own
person (migration 045): X's is kept beside Y's and counts for nothing (test_feed_retention_order), and Y's
checkpoint stays as reported for Y. (It was dead-lettered until migration 046: a placement is now kept
with its person too, and a refusal by the placement's person would let a placement squatting Y's id,
read first, have Y's own checkpoints refused.)"""

from __future__ import annotations

import asyncpg

from contracts.envelope import Family
from infra.config import Settings
from tests import factories
from tests.browser.flows import publish
from tests.helpers import catch_up_view_and_feed


async def test_a_retention_naming_another_persons_placement_leaves_that_persons_checkpoint(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    y, x = factories.person_key(), factories.person_key()
    placed = factories.placement(y)
    placement_id = placed.data["placement_id"]
    await publish(
        isolated, pool,
        [factories.registration(y), placed, factories.retention(y, placement_id, status="employed")],
        origin="test",
    )  # fmt: skip
    await catch_up_view_and_feed(pool, isolated)
    forged = factories.retention(
        x, placement_id, status="left", left_on="2025-06-01", checked_on="2025-06-12"
    )
    await publish(isolated, pool, [factories.registration(x), forged], origin="test")
    await catch_up_view_and_feed(pool, isolated)
    async with pool.acquire() as conn:
        kept = await conn.fetchrow(
            "SELECT person_key, status FROM feed_retention WHERE placement_id = $1 AND checkpoint_months = 1 "
            "AND person_key = $2",
            placement_id,
            y,
        )
        letters = await conn.fetch(
            "SELECT consumer, reason FROM dead_letters WHERE source_topic = $1",
            isolated.topic(Family.RETENTION),
        )
    assert (kept["person_key"], kept["status"]) == (y, "employed"), "another person's retention replaced Y's"
    assert not [r["reason"] for r in letters if "feed" in r["consumer"]]
