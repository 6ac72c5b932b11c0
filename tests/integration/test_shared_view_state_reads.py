"""What a shared-view batch reads of its people's state: records and withdrawal fences only for people with a
consent record, kept or arriving in the batch (issue 14: a replay's event batches, before any consent,
read neither). These cases hold only if both are read for each person that needs them."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from consumers.runtime import Consumed
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.store import load_views
from contracts.envelope import Event, decode, encode
from infra.config import Settings
from infra.crypto import KeyStore
from producers.submission import to_event
from tests import factories


def _record(settings: Settings, event: Event, offset: int) -> Consumed:
    key, headers, value = encode(event)
    decoded = decode(key, headers, value, fast=True, keep_parsed=True)
    return Consumed(decoded, settings.topic(decoded.family), 0, offset, value)


async def test_a_batch_reads_the_fence_of_a_person_whose_first_consent_it_brings_and_the_records_of_kept_ones(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    keystore = KeyStore.from_settings(settings)
    fenced, kept, newcomer, nobody, withdrew = (factories.person_key() for _ in range(5))
    everyone = [fenced, kept, newcomer, nobody, withdrew]
    async with pool.acquire() as conn:
        keys = await keystore.keys_for(conn, everyone)

    async def withdrawn(person: str) -> None:
        """The person withdrew on 2025-04-05: the fence is written with the withdrawal's acceptance (its event
        has not reached this consumer), and a form signed before it grants nothing from then on (P7)."""
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO withdrawal_fences (person_key, signed_at, event_id) VALUES ($1, $2, $3)",
                person,
                datetime.fromisoformat("2025-04-05T10:00:00+09:00"),
                uuid.uuid4().hex,
            )

    await withdrawn(fenced)  # before anything: their first consent, in the second batch, is signed before it

    def event(submission: factories.Submission) -> Event:
        return to_event(submission, keys[submission.data["person_key"]])

    handler = SharedViewHandler(settings)
    offset = iter(range(1, 100))
    async with pool.acquire() as conn:
        async with conn.transaction():  # everyone's registration; ``kept`` and ``withdrew`` consent now
            await handler.handle(
                conn,
                [
                    *(_record(settings, event(factories.registration(p)), next(offset)) for p in everyone),
                    _record(settings, event(factories.consent(kept)), next(offset)),
                    _record(settings, event(factories.consent(withdrew)), next(offset)),
                ],
            )
        assert {v.person_key for v in await load_views(conn, everyone)} == {kept, withdrew}
        await withdrawn(withdrew)
        # The first consents of two (one signed behind its person's fence); a referral each of the kept one,
        # the one who withdrew since (their record goes: read, with their fence, though the batch brings no
        # consent of theirs) and the one who never consented.
        async with conn.transaction():
            await handler.handle(
                conn,
                [
                    _record(settings, event(factories.consent(fenced)), next(offset)),  # signed 2025-04-03
                    _record(settings, event(factories.consent(newcomer)), next(offset)),
                    *(
                        _record(settings, event(factories.referral(p)), next(offset))
                        for p in (kept, nobody, withdrew)
                    ),
                ],
            )
        views = {v.person_key: v for v in await load_views(conn, everyone)}
        assert set(views) == {kept, newcomer}
        assert len(views[kept].referrals) == 1  # the kept record extended
        assert views[newcomer].registered_on is not None  # the newcomer's held registration revealed
        held = await conn.fetch(
            "SELECT person_key, family FROM sv_events_applied WHERE person_key = ANY($1::text[]) "
            "AND applied_at IS NULL",
            everyone,
        )
        assert sorted((r["person_key"], r["family"]) for r in held) == sorted(
            [(fenced, "registration"), (nobody, "registration"), (nobody, "referral"), (withdrew, "referral")]
        )
