"""The feed consumer: keeps the facts the monthly feed counts, and marks the feeds they may change.

The same shape as every consumer (``docs/ARCHITECTURE.md``): load the batch's people from the ``store``
→ plan (pure, ``domain.feed_projection``) → write the plan through the ``store``, all in the runtime's
transaction. A fact already kept (an outbox re-send, a repeated id) is skipped by the plan and by the
store's ``ON CONFLICT``. Personal blocks are stored sealed, as they arrived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from consumers.erasure import erasures_in, on_register
from consumers.feed import store
from consumers.feed.erasure import drop_erased
from consumers.provenance import check_sources
from consumers.runtime import Consumed, HandlerRejected, incoming
from domain.batch import Incoming
from domain.feed_projection import plan_batch
from infra.config import Settings
from infra.signing import erasure_verifier


class FeedProjection:
    name = "placement-feed"
    plain_data = True  # takes its events' data through ``incoming`` (consumers.runtime)

    def __init__(self, settings: Settings) -> None:
        self.topics: Sequence[str] = settings.event_topics
        self.erasure_verifier = erasure_verifier(settings)

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        # ittai.erasure.v1 (source and signature checked), applied after the rest
        batch, erased = erasures_in(batch, self.erasure_verifier)
        if batch:
            check_sources(batch)  # P2/P4 again: a record is not trusted because it is on the topic
            events = [incoming(c) for c in batch]
            persons = sorted({e.person_key for e in events})
            checkpoints = sorted({e.data["placement_id"] for e in events if e.family == "retention"})
            if checkpoints:
                _own_placements(events, await store.placement_persons(conn, checkpoints))
            state = await store.load(conn, persons, checkpoints)
            await store.write(conn, plan_batch(events, state))
            # Erased before (on the register), their erasure perhaps no longer verifying (a retired key, an
            # older form) where the feed re-reads the topics: what their events just stored goes again.
            erased = list(dict.fromkeys([*erased, *await on_register(conn, persons)]))
        if erased:
            await drop_erased(conn, erased)


def _own_placements(events: Sequence[Incoming], kept: Mapping[str, str]) -> None:
    """A retention follow-up is about its own person's placement: one naming a placement kept (or in this
    batch) for another person is rejected. An early refusal only: such a retention read before the
    placement it names is kept as its own person's and counts for nothing (the feed keeps and counts a
    checkpoint with its person, migration 045), so either order gives the same feed. ``kept``: placement
    id -> person, as the feed keeps them; a placement's first report wins, as in the plan."""
    owners = dict(kept)
    for e in events:
        if e.family == "placement":
            owners.setdefault(e.data["placement_id"], e.person_key)
    for e in events:
        if e.family == "retention" and owners.get(e.data["placement_id"], e.person_key) != e.person_key:
            raise HandlerRejected(
                "placement_id: names another person's placement (a retention follows its own person's)"
            )
