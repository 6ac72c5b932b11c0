"""What an erasure's signature binds it to: this deployment (environment and topic namespace).

A signature proves the operator's key made the erasure; it must also prove for which hub. Were staging and
production to share a key, an erasure signed for staging, copied into production's topic by anyone with
write access there, would erase the person in production too. The signed statement names the
deployment, so such a copy is dead-lettered by the shared view and the feed (``P9: signature: …``) and
the person stays.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from consumers.catchup import end_offsets, run_until
from consumers.feed.projection import FeedProjection
from consumers.runtime import BatchHandler, ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import Family
from infra.config import Settings
from infra.signing import erasure_signer
from infra.topics import ensure_topics
from producers.submission import to_event
from tests import factories
from tests.integration.test_hostile_consumers import _accept, _publish_raw, _raw


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def isolated(settings: Settings) -> AsyncIterator[Settings]:
    own = settings.model_copy(update={"topic_namespace": f"s{uuid.uuid4().hex[:10]}"})
    await ensure_topics(own)
    yield own


async def _catch_up(pool: asyncpg.Pool, settings: Settings) -> None:
    handlers: list[BatchHandler] = [SharedViewHandler(settings), FeedProjection(settings)]
    for handler in handlers:
        runtime = ConsumerRuntime(
            handler, settings, pool, group_id=f"{handler.name}.{settings.topic_namespace}"
        )
        await run_until(runtime, pool, await end_offsets(settings, handler.topics), timeout_s=120)


async def _letters(pool: asyncpg.Pool, settings: Settings) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT consumer, reason FROM dead_letters WHERE source_topic = $1 ORDER BY id",
            settings.topic(Family.ERASURE),
        )


async def _rows(pool: asyncpg.Pool, person: str) -> dict[str, int]:
    async with pool.acquire() as conn:
        return {
            table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE person_key = $1", person)
            for table in ("sv_persons", "sv_consents", "feed_consents", "sv_erasures")
        }


async def test_an_erasure_signed_for_another_namespace_is_refused(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    """Namespace A's operator signs an erasure (same key as B's: the worst case, keys shared); copied into
    namespace B's topic it is dead-lettered by both of B's consumers, naming P9 and the signature and no
    value, and the person stays in B. B's own erasure of another person, signed for B, erases."""
    b = isolated
    a = b.model_copy(update={"topic_namespace": f"a{uuid.uuid4().hex[:10]}"})
    kept, gone = factories.person_key(), factories.person_key()
    await _accept(
        pool, b, [sub for pk in (kept, gone) for sub in (factories.registration(pk), factories.consent(pk))]
    )
    await _catch_up(pool, b)
    before = len(await _letters(pool, b))

    replayed = _raw(b, to_event(factories.erasure(kept, signer=erasure_signer(a)), None))
    genuine = _raw(b, to_event(factories.erasure(gone, signer=erasure_signer(b)), None))
    await _publish_raw(b, [replayed, genuine])
    await _catch_up(pool, b)

    assert await _rows(pool, gone) == {
        "sv_persons": 0,
        "sv_consents": 0,
        "feed_consents": 0,
        "sv_erasures": 1,
    }
    stayed = await _rows(pool, kept)
    assert stayed["sv_erasures"] == 0 and all(stayed[t] > 0 for t in ("sv_persons", "feed_consents")), stayed
    letters = (await _letters(pool, b))[before:]
    assert {r["consumer"] for r in letters} == {"shared-view", "placement-feed"} and len(letters) == 2
    for letter in letters:
        reason = letter["reason"]
        assert "P9: signature: " in reason, reason
        assert kept not in reason and a.topic_namespace not in reason and b.topic_namespace not in reason
