"""What an erasure's signature binds it to, and how the operator's keys rotate.

A signature proves the operator's key made the erasure; it must also prove for which hub. Were staging and
production to share a key, an erasure signed for staging, copied into production's topic by anyone with
write access there, would erase the person in production too. The signed statement names the
deployment, so such a copy is dead-lettered by the shared view and the feed (``P9: signature: …``) and
the person stays.

Keys rotate by id: an erasure signed by an older key is honoured while that key is listed
(``HUB_ERASURE_VERIFY_KEYS``) and refused once it is removed; a replay then dead-letters it again, and the
person stays erased because the erasure register (PostgreSQL), not the topic, is what the view skips.
Erasures in the older forms (no signature; no key id) are refused the same way, their effect standing in
the register.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson
from pydantic import SecretStr

from consumers.catchup import end_offsets, run_until
from consumers.feed.projection import FeedProjection
from consumers.runtime import BatchHandler, ConsumerRuntime
from consumers.shared_view.erasure import erase_person
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import Family
from infra.config import Settings
from infra.crypto import KeyStore
from infra.signing import KEY_NOT_LISTED, erasure_signer, new_signing_key, verify_entry_of
from producers.submission import to_event
from tests import factories
from tests.helpers import catch_up_view_and_feed
from tests.integration.test_hostile_consumers import Record, _accept, _publish_raw, _raw


async def _replay(pool: asyncpg.Pool, settings: Settings) -> int:
    """The shared view and the feed read this namespace's topics again from the start, as a rebuild does
    (``hub replay shared-view`` empties the whole view first: other modules' people share this database,
    so only this namespace's positions are forgotten). Returns the events the view skipped as an erased
    person's."""
    view = SharedViewHandler(settings)
    handlers: list[BatchHandler] = [view, FeedProjection(settings)]
    for handler in handlers:
        async with pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM consumer_offsets WHERE consumer = $1 AND starts_with(topic, $2)",
                handler.name,
                f"{settings.topic_namespace}.",
            )
        runtime = ConsumerRuntime(
            handler,
            settings,
            pool,
            group_id=f"{handler.name}.{settings.topic_namespace}.replay{uuid.uuid4().hex[:6]}",
        )
        await run_until(runtime, pool, await end_offsets(settings, handler.topics), timeout_s=120)
    return view.masked_events


async def _sealed_blocks(pool: asyncpg.Pool, person: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM feed_registrations WHERE person_key = $1 AND personal <> 'null'::jsonb",
            person,
        )


def _keys(settings: Settings, *, signing: str, listed: list[str]) -> Settings:
    return settings.model_copy(
        update={
            "erasure_signing_key": SecretStr(signing),
            "erasure_verify_keys": ",".join(verify_entry_of(k) for k in listed),
        }
    )


def _erasure_by(settings: Settings, person: str) -> Record:
    return _raw(settings, to_event(factories.erasure(person, signer=erasure_signer(settings)), None))


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
    pool: asyncpg.Pool, isolated_per_test: Settings
) -> None:
    """Namespace A's operator signs an erasure (same key as B's: the worst case, keys shared); copied into
    namespace B's topic it is dead-lettered by both of B's consumers, naming P9 and the signature and no
    value, and the person stays in B. B's own erasure of another person, signed for B, erases."""
    b = isolated_per_test
    a = b.model_copy(update={"topic_namespace": f"a{uuid.uuid4().hex[:10]}"})
    kept, gone = factories.person_key(), factories.person_key()
    await _accept(
        pool, b, [sub for pk in (kept, gone) for sub in (factories.registration(pk), factories.consent(pk))]
    )
    await catch_up_view_and_feed(pool, b)
    before = len(await _letters(pool, b))

    replayed = _raw(b, to_event(factories.erasure(kept, signer=erasure_signer(a)), None))
    genuine = _raw(b, to_event(factories.erasure(gone, signer=erasure_signer(b)), None))
    await _publish_raw(b, [replayed, genuine])
    await catch_up_view_and_feed(pool, b)

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


async def test_verify_keys_rotate_and_a_retired_keys_erasures_are_refused_but_stay_erased(
    pool: asyncpg.Pool, isolated_per_test: Settings
) -> None:
    """Key 1 signs; then key 2 is listed beside it and signs; then key 1 is retired. Key 1's erasure of
    ``early`` (before the rotation) and of ``lagging`` (read after it: a consumer that lagged, or a
    replay) are honoured while key 1 is listed. Once it is removed, key 1's erasure of ``late`` is
    dead-lettered naming the key id rule and the person stays; key 2's erasure of ``by_new`` is honoured.
    A replay after the retirement dead-letters key 1's erasures again, and ``early`` and ``lagging``
    stay out of the view and the feed's consents and sealed blocks: they are on the erasure register,
    which both read."""
    key1, key2 = new_signing_key(), new_signing_key()
    before = _keys(isolated_per_test, signing=key1, listed=[key1])
    rotating = _keys(isolated_per_test, signing=key2, listed=[key1, key2])
    after = _keys(isolated_per_test, signing=key2, listed=[key2])
    early, lagging, late, by_new = (factories.person_key() for _ in range(4))
    everyone = [early, lagging, late, by_new]
    await _accept(
        pool,
        isolated_per_test,
        [s for pk in everyone for s in (factories.registration(pk), factories.consent(pk))],
    )
    await catch_up_view_and_feed(pool, before)
    letters_before = len(await _letters(pool, isolated_per_test))

    await _publish_raw(isolated_per_test, [_erasure_by(before, early)])
    await catch_up_view_and_feed(pool, before)
    lagging_by_key1 = _erasure_by(before, lagging)  # signed before the rotation, read after it
    await _publish_raw(isolated_per_test, [lagging_by_key1])
    await catch_up_view_and_feed(pool, rotating)
    for person in (early, lagging):
        assert await _rows(pool, person) == {
            "sv_persons": 0,
            "sv_consents": 0,
            "feed_consents": 0,
            "sv_erasures": 1,
        }
    assert len(await _letters(pool, isolated_per_test)) == letters_before, (
        "nothing refused while key 1 is listed"
    )

    await _publish_raw(isolated_per_test, [_erasure_by(before, late), _erasure_by(after, by_new)])
    await catch_up_view_and_feed(pool, after)
    assert await _rows(pool, by_new) == {
        "sv_persons": 0,
        "sv_consents": 0,
        "feed_consents": 0,
        "sv_erasures": 1,
    }
    stayed = await _rows(pool, late)
    assert stayed["sv_erasures"] == 0 and stayed["sv_persons"] > 0 and stayed["feed_consents"] > 0, stayed
    letters = (await _letters(pool, isolated_per_test))[letters_before:]
    assert sorted(r["consumer"] for r in letters) == ["placement-feed", "shared-view"], letters
    assert all(KEY_NOT_LISTED in r["reason"] for r in letters)

    masked = await _replay(pool, after)
    assert masked >= 4, "the events of early and lagging are skipped as an erased person's"
    async with pool.acquire() as conn:
        in_view = set(
            await conn.fetchval(
                "SELECT coalesce(array_agg(person_key), '{}') FROM sv_persons WHERE person_key = ANY($1::text[])",
                everyone,
            )
        )
    assert in_view == {late}
    for person in (early, lagging):  # the feed re-read their consents and registrations: dropped again
        assert await _rows(pool, person) == {
            "sv_persons": 0,
            "sv_consents": 0,
            "feed_consents": 0,
            "sv_erasures": 1,
        }
        assert await _sealed_blocks(pool, person) == 0
    # One letter a record and consumer (the register keeps one): the replay added early's and lagging's.
    refused = [
        r
        for r in (await _letters(pool, isolated_per_test))[letters_before:]
        if r["consumer"] == "shared-view"
    ]
    assert len(refused) == 3 and all(KEY_NOT_LISTED in r["reason"] for r in refused), refused


async def test_erasures_in_the_older_forms_are_refused_and_the_erased_stay_erased(
    pool: asyncpg.Pool, isolated_per_test: Settings
) -> None:
    """An erasure written before erasures were signed carries neither signature nor key id; one written
    before keys had ids carries a signature but no key id. Neither proves anything now, so both are
    dead-lettered by the shared view and the feed, the reason naming the missing field, and change
    nothing: a person on no register stays. A person the operator erased (``erase_person``: key deleted,
    register written) stays erased, also through a rebuild of the view and the feed that refuses those
    records again: both read the register."""
    settings = isolated_per_test
    erased, stays = factories.person_key(), factories.person_key()
    await _accept(
        pool,
        settings,
        [s for pk in (erased, stays) for s in (factories.registration(pk), factories.consent(pk))],
    )
    await catch_up_view_and_feed(pool, settings)
    async with pool.acquire() as conn:
        await erase_person(
            conn, KeyStore.from_settings(settings), erased, requested_by="test",
            namespace=settings.topic_namespace, signer=erasure_signer(settings),
        )  # fmt: skip
    letters_before = len(await _letters(pool, settings))

    def older(person: str, *, drop: tuple[str, ...]) -> Record:
        topic, key, headers, value = _erasure_by(settings, person)
        data = {k: v for k, v in orjson.loads(value).items() if k not in drop}
        return topic, key, headers, orjson.dumps(data)

    unsigned = ("signature", "key_id")
    no_key_id = ("key_id",)
    await _publish_raw(
        settings,
        [
            older(stays, drop=unsigned),
            older(stays, drop=no_key_id),
            older(erased, drop=unsigned),
            older(erased, drop=no_key_id),
        ],
    )
    await catch_up_view_and_feed(pool, settings)
    stayed = await _rows(pool, stays)
    assert stayed["sv_erasures"] == 0 and stayed["sv_persons"] > 0 and stayed["feed_consents"] > 0, stayed
    letters = (await _letters(pool, settings))[letters_before:]
    assert sorted(r["consumer"] for r in letters) == ["placement-feed"] * 4 + ["shared-view"] * 4, letters
    for letter in letters:
        assert "key_id" in letter["reason"], letter["reason"]
        assert stays not in letter["reason"] and erased not in letter["reason"]

    await _replay(pool, settings)
    assert await _sealed_blocks(pool, erased) == 0
    assert await _rows(pool, erased) == {
        "sv_persons": 0,
        "sv_consents": 0,
        "feed_consents": 0,
        "sv_erasures": 1,
    }
    assert (await _rows(pool, stays))["sv_persons"] > 0
