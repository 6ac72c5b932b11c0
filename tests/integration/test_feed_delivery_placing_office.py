"""A2 in the individual list: a placement's name and employer are disclosed under an agreement between the
authority and the office that placed the person (the placement's ``office``, which its ``ce_source`` owns),
not the office the sites registry lists for the site today. A site moved to another office (``hub sites
add`` updates the registry) made delivery weigh the agreement of the new office for the old office's
placements: disclosed under an agreement the placing office never signed, and withheld under the one it
did."""

from __future__ import annotations

from datetime import date

import asyncpg

from consumers.agreements import add_agreement
from consumers.feed.delivery import Delivery, deliver
from infra.config import Settings
from infra.crypto import KeyStore
from producers.adapters.sites import add_sites
from tests import factories
from tests.browser.flows import publish
from tests.helpers import catch_up_view_and_feed

NEW_OFFICE = "1399"  # the office the site moves to


async def _delivered(conn: asyncpg.Connection, settings: Settings, placement_id: str, *, moved: bool,
                     agreed_with: str) -> Delivery:  # fmt: skip
    """The authority's list for a revision listing the placement, with the only agreement in force being
    with ``agreed_with``, and the site registered to the new office if ``moved`` (all rolled back)."""
    only_here = conn.transaction()
    await only_here.start()
    try:
        await conn.execute(
            "UPDATE sharing_agreements SET valid_until = '2015-04-01' WHERE authority = $1",
            factories.AUTHORITY,
        )
        await add_agreement(
            conn, authority=factories.AUTHORITY, offices=[agreed_with], sites=[],
            purposes=["disclose_placement"], valid_from=date(2015, 4, 1), valid_until=None, title="t",
            created_by="test",
        )  # fmt: skip
        if moved:
            await conn.execute("UPDATE sites SET office = $1 WHERE site_id = $2", NEW_OFFICE, factories.SITE)
        await conn.execute(
            "INSERT INTO feed_revisions (authority, month, revision, horizon, body, suppressed, placement_ids) "
            "VALUES ($1, '2025-05', 100000, now(), '{}', '{}', $2)",
            factories.AUTHORITY,
            [placement_id],
        )
        return await deliver(conn, KeyStore.from_settings(settings), factories.AUTHORITY, "2025-05")
    finally:
        await only_here.rollback()


async def test_a_placement_is_disclosed_under_the_placing_offices_agreement_after_its_site_moves(
    pool: asyncpg.Pool, isolated: Settings, settings: Settings
) -> None:
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "新宿")])
    pk = factories.person_key()
    placed = factories.placement(pk)
    await publish(isolated, pool, [factories.registration(pk), factories.consent(pk), placed], origin="test")
    await catch_up_view_and_feed(pool, isolated)
    pid = placed.data["placement_id"]
    async with pool.acquire() as conn:
        control = await _delivered(conn, settings, pid, moved=False, agreed_with=factories.OFFICE)
        assert control.person_keys == [pk], control  # placed by office 1301, agreement with 1301: disclosed
        moved_old = await _delivered(conn, settings, pid, moved=True, agreed_with=factories.OFFICE)
        moved_new = await _delivered(conn, settings, pid, moved=True, agreed_with=NEW_OFFICE)
    # The site now registered to 1399 changes nothing about who placed the person: office 1301.
    assert moved_old.person_keys == [pk], "withheld under the placing office's own agreement"
    assert moved_new.person_keys == [] and moved_new.withheld_no_agreement == 1, (
        "disclosed under an agreement the placing office never signed"
    )
