"""Consumers re-check ``ce_source`` against the data (issue 10): a record is not trusted because it is on
the topic. A rogue producer with write access to the event topics publishes, under one organisation's
``ce_source``, events whose sites, authority and office codes belong to another: every consumer (the
event log, the shared view, the placement feed) dead-letters each with a reason naming the field and the
rule (never a value), stores nothing of it, and goes on with the good events after it.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.envelope import Family
from infra.config import Settings
from infra.crypto import KeyStore
from infra.signing import Deployment, ErasureSigner, erasure_signer
from producers.holders import ErasedMeanwhile
from producers.submission import Submission, to_event
from tests import factories
from tests.helpers import catch_up_view_and_feed
from tests.integration.test_hostile_consumers import Record, _accept, _catch_up_all, _publish_raw, _raw

SHINJUKU = "/authorities/131041"
OFFICE_1301 = "/hellowork/offices/1301"
VIEW_AND_FEED = ["shared-view", "placement-feed"]
KAWAGUCHI_SITE = "112038-01"  # authority 112038, office 1102: none of it Shinjuku's or office 1301's


def _as(source: str, sub: Submission) -> Submission:
    return dataclasses.replace(sub, source=source)


async def _forged(pool: asyncpg.Pool, settings: Settings) -> dict[str, tuple[Record, str]]:
    """Each forgery with the field the consumers must name: person key -> (record, field)."""
    keystore = KeyStore.from_settings(settings)
    kawaguchi = {"authority": "112038", "site": KAWAGUCHI_SITE}
    capture_kawaguchi = {"side": "authority", "site": KAWAGUCHI_SITE, "channel": "paper_form",
                         "signed_at": "2025-04-03T10:00:00+09:00"}  # fmt: skip
    forgeries: dict[str, tuple[Submission, str]] = {}

    def add(field: str, make: Any) -> None:
        pk = factories.person_key()
        forgeries[pk] = (make(pk), field)

    # An authority's source on another authority's referral.
    add("authority", lambda pk: _as(SHINJUKU, factories.referral(pk, **kawaguchi)))
    # An office's source on another office's registration at another authority's site.
    add("office", lambda pk: _as(OFFICE_1301, factories.registration(pk, office="1102", **kawaguchi)))
    # An authority's source on a consent captured at another authority's counter.
    add("captured.site", lambda pk: _as(SHINJUKU, factories.consent(pk, captured=capture_kawaguchi)))
    # An authority's source on a consent captured by Hello Work at its own site.
    add("captured.side", lambda pk: _as(SHINJUKU, factories.consent(pk)))
    # An authority's source on a family only Hello Work publishes.
    add("ce_type", lambda pk: _as(SHINJUKU, factories.placement(pk)))
    # An authority's source on a retention checked at another authority's site.
    add("site", lambda pk: _as(SHINJUKU, factories.retention(pk, uuid.uuid4().hex, site=KAWAGUCHI_SITE)))
    # An office's source on another office's placement.
    add("office", lambda pk: _as(OFFICE_1301, factories.placement(pk, office="1102", site=KAWAGUCHI_SITE)))
    # An erasure under an authority's source (P9: only the hub's operator side erases).
    add("ce_source", lambda pk: factories.erasure(pk, source=SHINJUKU))
    records: dict[str, tuple[Record, str]] = {}
    async with pool.acquire() as conn:
        keys = await keystore.keys_for(conn, list(forgeries))
    for pk, (sub, field) in forgeries.items():
        records[pk] = (
            _raw(settings, to_event(sub, keys[pk] if sub.family is not Family.ERASURE else None)),
            field,
        )
    return records


async def test_an_event_whose_source_owns_none_of_its_data_is_dead_lettered(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    settings = isolated
    forged = await _forged(pool, settings)
    await _publish_raw(settings, [record for record, _ in forged.values()])
    good_pk = factories.person_key()  # control: consistent events, after the forgeries
    await _accept(pool, settings, [factories.registration(good_pk), factories.consent(good_pk)])

    await _catch_up_all(pool, settings)

    forged_keys = list(forged)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM sv_persons WHERE person_key = $1", good_pk) == 1
        assert await conn.fetchval("SELECT count(*) FROM event_log WHERE subject = $1", good_pk) == 2
        assert (
            await conn.fetchval("SELECT count(*) FROM feed_registrations WHERE person_key = $1", good_pk) == 1
        )
        for table in ("sv_events", "sv_consents", "feed_registrations", "feed_referrals", "feed_placements",
                      "feed_retention", "feed_consents"):  # fmt: skip
            stored = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE person_key = ANY($1::text[])", forged_keys
            )
            assert stored == 0, table
        logged = await conn.fetchval(
            "SELECT count(*) FROM event_log WHERE subject = ANY($1::text[])", forged_keys
        )
        assert logged == 0
        letters = await conn.fetch(
            "SELECT d.consumer, d.reason, d.source_topic, d.source_offset FROM dead_letters d "
            "WHERE d.source_topic = ANY($1::text[])",
            settings.event_topics,
        )
    reasons: dict[str, list[str]] = {}
    for letter in letters:
        reasons.setdefault(letter["consumer"], []).append(letter["reason"])
    for consumer in ("event-log", "shared-view", "placement-feed"):
        mine = reasons.get(consumer, [])
        assert len(mine) == len(forged), (consumer, mine)
        for _, field in forged.values():
            assert any(f"{field}:" in r and "ce_source" in r for r in mine), (consumer, field, mine)
        for reason in mine:  # the rule and the field, never a value the rogue wrote
            assert "112038" not in reason and "1102" not in reason and "131041" not in reason, reason


async def test_a_consent_id_never_crosses_from_one_person_to_another(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    """P8: consents are keyed by (person, consent_id). Consent ids travel in the topics' values; before,
    another person's consent under the same id and a higher version replaced Q's record — withdrawing
    Q's consent, or widening it — because the consumers kept records by consent id alone."""
    settings = isolated
    q, x = factories.person_key(), factories.person_key()
    shared_id = uuid.uuid4().hex
    await _accept(pool, settings, [factories.registration(q), factories.consent(q, consent_id=shared_id)])
    await catch_up_view_and_feed(pool, settings)
    await _accept(pool, settings, [factories.consent(x, consent_id=shared_id, version=9, action="withdrawn")])
    await catch_up_view_and_feed(pool, settings)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM sv_persons WHERE person_key = $1", q) == 1
        for table in ("sv_consents", "feed_consents"):
            rows = await conn.fetch(
                f"SELECT person_key, version, withdrawn FROM {table} WHERE consent_id = $1", shared_id
            )
            kept = {r["person_key"]: (r["version"], r["withdrawn"]) for r in rows}
            assert kept == {q: (1, False), x: (9, True)}, table


async def test_only_the_hubs_operator_side_erases_and_its_erasure_empties_every_consumer(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    """``ittai.erasure.v1`` (issue 10). An erasure written to the topic under a client's ``ce_source`` — even
    the authority that holds the person — would make every consumer drop someone: it is dead-lettered by
    each, naming P9 and the header, and the person stays. The operator side's erasure empties the shared
    view and the feed of the person by itself, with no help from ``erase_person``'s own transaction (a
    consumer that applied the person's events after it, or another database): rows, consents, the feed's
    sealed blocks; the person goes on the register, so later events of theirs are skipped."""
    settings = isolated
    kept, gone = factories.person_key(), factories.person_key()
    await _accept(
        pool,
        settings,
        [sub for pk in (kept, gone) for sub in (factories.registration(pk), factories.consent(pk))],
    )
    await catch_up_view_and_feed(pool, settings)
    async with pool.acquire() as conn:
        before = await conn.fetchval(
            "SELECT count(*) FROM dead_letters WHERE reason LIKE '%P9%' AND source_topic = $1 "
            "AND consumer = ANY($2::text[])",  # the module's other tests run the event log too
            settings.topic(Family.ERASURE),
            VIEW_AND_FEED,
        )
    forged = _raw(settings, to_event(factories.erasure(kept, source=SHINJUKU), None))
    genuine = _raw(settings, to_event(factories.erasure(gone, signer=erasure_signer(settings)), None))
    await _publish_raw(settings, [forged, genuine])
    await catch_up_view_and_feed(pool, settings)

    async with pool.acquire() as conn:
        for table in ("sv_persons", "sv_consents", "sv_events", "sv_reveals", "feed_consents"):
            counts = {
                pk: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE person_key = $1", pk)
                for pk in (kept, gone)
            }
            assert counts[gone] == 0 and (counts[kept] > 0 or table == "sv_events"), (table, counts)
        sealed = await conn.fetchval("SELECT personal FROM feed_registrations WHERE person_key = $1", gone)
        registered = await conn.fetchval("SELECT count(*) FROM sv_erasures WHERE person_key = $1", gone)
        letters = await conn.fetch(
            "SELECT consumer, reason FROM dead_letters WHERE source_topic = $1 AND consumer = ANY($2::text[])",
            settings.topic(Family.ERASURE),
            VIEW_AND_FEED,
        )
    assert sealed is None, "the feed keeps no sealed block of an erased person"
    assert registered == 1
    p9 = [r for r in letters if "P9" in r["reason"]]
    assert len(p9) - before == 2 and {r["consumer"] for r in p9} == {"shared-view", "placement-feed"}
    for letter in p9:
        assert "ce_source" in letter["reason"] and "131041" not in letter["reason"], letter["reason"]

    # A late event of the erased person is refused at acceptance (P9: the register the event wrote), and
    # one written to the topic directly is skipped, not stored again.
    with pytest.raises(ErasedMeanwhile):
        await _accept(pool, settings, [factories.consent(gone)])
    await _publish_raw(settings, [_raw(settings, to_event(factories.consent(gone), None))])
    await catch_up_view_and_feed(pool, settings)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM sv_consents WHERE person_key = $1", gone) == 0


async def test_an_erasure_not_signed_by_the_operator_key_is_refused(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    """A leaked Kafka password (the adapters' user may write the erasure topic: their in-process relays
    publish every outbox row) lets its holder write an erasure under the operator's ``ce_source``. Only
    the operator side's Ed25519 key signs an erasure, so each of these is dead-lettered by the shared view
    and the feed, naming P9 and the signature, and the person stays:
    signed with another key; a signature copied from a genuine erasure onto another person; a signature
    of the right length that is no signature; and no signature at all (the contract requires one)."""
    settings = isolated
    other_key, copied, garbage, unsigned, gone = (factories.person_key() for _ in range(5))
    kept = [other_key, copied, garbage, unsigned]
    await _accept(
        pool,
        settings,
        [sub for pk in [*kept, gone] for sub in (factories.registration(pk), factories.consent(pk))],
    )
    await catch_up_view_and_feed(pool, settings)
    async with pool.acquire() as conn:
        before = await conn.fetchval(
            "SELECT count(*) FROM dead_letters WHERE source_topic = $1", settings.topic(Family.ERASURE)
        )
    rogue = ErasureSigner(Ed25519PrivateKey.generate(), Deployment.of(settings))
    genuine_sub = factories.erasure(gone, signer=erasure_signer(settings))
    genuine = _raw(settings, to_event(genuine_sub, None))
    forged = [
        _raw(settings, to_event(factories.erasure(other_key, signer=rogue), None)),
        _raw(settings, to_event(factories.erasure(copied), None), signature=genuine_sub.data["signature"]),
        _raw(settings, to_event(factories.erasure(garbage), None), signature="A" * 86),
    ]
    no_signature = _raw(settings, to_event(factories.erasure(unsigned), None))
    _topic, key, headers, value = no_signature
    value = orjson.dumps({k: v for k, v in orjson.loads(value).items() if k != "signature"})
    await _publish_raw(settings, [*forged, (_topic, key, headers, value), genuine])
    await catch_up_view_and_feed(pool, settings)

    async with pool.acquire() as conn:
        for table in ("sv_persons", "sv_consents", "feed_consents"):
            rows = {
                pk: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE person_key = $1", pk)
                for pk in [*kept, gone]
            }
            assert rows[gone] == 0 and all(rows[pk] > 0 for pk in kept), (table, rows)
        assert (
            await conn.fetchval("SELECT count(*) FROM sv_erasures WHERE person_key = ANY($1::text[])", kept)
            == 0
        )
        letters = await conn.fetch(
            "SELECT consumer, reason FROM dead_letters WHERE source_topic = $1 ORDER BY id",
            settings.topic(Family.ERASURE),
        )
    letters = letters[before:]
    assert len(letters) == 8, [r["reason"] for r in letters]  # 4 forgeries x (shared view, feed)
    assert {r["consumer"] for r in letters} == {"shared-view", "placement-feed"}
    signed = [r["reason"] for r in letters if "P9: signature" in r["reason"]]
    assert len(signed) == 6, [r["reason"] for r in letters]
    assert all("signature" in r["reason"] for r in letters)
    for reason in (r["reason"] for r in letters):
        assert not any(pk in reason for pk in kept), reason
