"""The feed consumer: keeps the facts the monthly feed counts, and marks the feeds they may change.

The same shape as every consumer (``docs/ARCHITECTURE.md``): load the batch's people from the ``store``
→ plan (pure, ``domain.feed_projection``) → write the plan through the ``store``, all in the runtime's
transaction. A fact already kept (an outbox re-send, a repeated id) is skipped by the plan and by the
store's ``ON CONFLICT``. Personal blocks are stored sealed, as they arrived.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from consumers.erasure import erasures_in, on_register
from consumers.feed import store
from consumers.feed.erasure import drop_erased
from consumers.provenance import check_sources
from consumers.runtime import Consumed, incoming
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
            # No check that a retention names its own person's placement: the feed keeps and counts a
            # placement and a checkpoint with their person (migrations 045, 046), so one naming another
            # person's placement counts for nothing, and a placement reusing another person's id (a
            # squatter) cannot make a person's own checkpoints be refused, in whichever order they come.
            checkpoints = sorted({e.data["placement_id"] for e in events if e.family == "retention"})
            state = await store.load(conn, persons, checkpoints)
            await store.write(conn, plan_batch(events, state))
            # Erased before (on the register), their erasure perhaps no longer verifying (a retired key, an
            # older form) where the feed re-reads the topics: what their events just stored goes again.
            erased = list(dict.fromkeys([*erased, *await on_register(conn, persons)]))
        if erased:
            await drop_erased(conn, erased)
