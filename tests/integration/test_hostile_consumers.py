"""One accepted (or rogue) event never stops a consumer.

Records a rogue producer writes straight to the event topics — a NUL in a readable field, a NUL in a
personal field sealed under the person's real key (so only the consumer that opens it sees it), an
integer past PostgreSQL's ``integer``, foreign values in the CloudEvents headers — are dead-lettered
with a reason that names the rule, never the value; a good event published after them still reaches
every consumer (event log, shared view, placement feed), each caught up without a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from structlog.testing import capture_logs

from consumers.catchup import end_offsets, run_until
from consumers.event_log import EventLogHandler
from consumers.feed.projection import FeedProjection
from consumers.runtime import BatchHandler, ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.replay import replay
from contracts.envelope import Event, Family, decode, decode_canonical, encode
from infra.config import Settings
from infra.crypto import KeyStore, seal
from infra.kafka import client_options
from infra.topics import ensure_topics
from producers.ingest import accept
from producers.outbox import OutboxRelay
from producers.submission import Submission, to_event
from tests import factories
from tests.helpers import read_topic

Record = tuple[str, bytes, list[tuple[str, bytes]], bytes]  # topic, key, headers, value


async def _data_key(pool: asyncpg.Pool, settings: Settings, pk: str) -> bytes:
    async with pool.acquire() as conn:
        return (await KeyStore.from_settings(settings).keys_for(conn, [pk]))[pk]


def _raw(settings: Settings, event: Event, **data_over: Any) -> Record:
    """The record the hub would publish for ``event``, with ``data_over`` written into its value."""
    key, headers, value = encode(event)
    data = orjson.loads(value) | data_over
    return settings.topic(event.family), key, headers, orjson.dumps(data)


async def _publish_raw(settings: Settings, records: Sequence[Record]) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for topic, key, headers, value in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def _accept(pool: asyncpg.Pool, settings: Settings, subs: Sequence[Submission]) -> None:
    """Through the edge: validated, sealed, outbox, relay."""
    async with pool.acquire() as conn:
        await accept(
            conn, KeyStore.from_settings(settings), subs, origin="test", namespace=settings.topic_namespace
        )
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()


async def _after_rogue(
    pool: asyncpg.Pool, settings: Settings, rogue: Sequence[Record]
) -> tuple[list[Submission], str]:
    """The rogue records straight onto their topics, then a good person's registration and consent through
    the edge: the good person, who must reach every consumer past the rogue records."""
    await _publish_raw(settings, rogue)
    good_pk = factories.person_key()
    good = [factories.registration(good_pk), factories.consent(good_pk)]
    await _accept(pool, settings, good)
    return good, good_pk


async def _catch_up_all(pool: asyncpg.Pool, settings: Settings) -> list[ConsumerRuntime]:
    """Each consumer runs once until it has applied everything on its topics; a consumer that stops on
    the way fails the test (``run_until`` re-raises its error)."""
    handlers: list[BatchHandler] = [
        EventLogHandler(settings),
        SharedViewHandler(settings),
        FeedProjection(settings),
    ]
    runtimes = []
    for handler in handlers:
        ends = await end_offsets(settings, handler.topics)
        runtime = ConsumerRuntime(
            handler, settings, pool, group_id=f"{handler.name}.{settings.topic_namespace}"
        )
        await run_until(runtime, pool, ends, timeout_s=120)
        runtimes.append(runtime)
    return runtimes


async def _reaches_every_consumer(conn: asyncpg.Connection, good: Sequence[Submission], pk: str) -> None:
    ids = [s.event_id for s in good]
    assert await conn.fetchval("SELECT count(*) FROM event_log WHERE event_id = ANY($1::text[])", ids) == len(
        ids
    )
    assert await conn.fetchval("SELECT count(*) FROM sv_persons WHERE person_key = $1", pk) == 1
    assert await conn.fetchval("SELECT count(*) FROM feed_registrations WHERE person_key = $1", pk) == 1


SECRET = "Tanaka Hanako"  # what a rogue producer might put anywhere: it must never come back
HEADERS = ("ce_time", "ce_type", "ce_specversion", "ce_id", "ce_source")
ROGUE_NOTES = {  # JSON text in a field no contract reads
    "NaN in a field no contract reads": b"NaN",
    "1e400 in a field no contract reads": b"1e400",
    "a value nested 1,500 deep in a field no contract reads": b"[" * 1500 + b"]" * 1500,
}
REASONS = {  # what every consumer says, where one reason is expected
    **dict.fromkeys(ROGUE_NOTES, "value: not valid JSON"),
    "a ciphertext no base64 reads": "registration data invalid: personal.ct:",
}


async def _rogue(kind: str, pool: asyncpg.Pool, settings: Settings) -> list[Record]:
    pk = factories.person_key()
    if kind == "nul in a readable field":
        return [_raw(settings, to_event(factories.consent(pk), None), form_version=f"{SECRET}\x00")]
    if kind == "int32 overflow":
        return [_raw(settings, to_event(factories.consent(pk), None), version=2**31)]
    if kind == "nul in a personal field":
        # Sealed under the person's real key, so only the consumer that opens it (the shared view, once
        # a sharing consent arrives) meets the NUL.
        key = await _data_key(pool, settings, pk)
        personal = seal(key, pk, {"name": f"{SECRET}\x00", "birth_date": "1988-06-01"}).model_dump()
        registration = _raw(settings, to_event(factories.registration(pk), key), personal=personal)
        return [registration, *_raw_consent_for(settings, pk)]
    if kind == "a personal field on a family without one":
        # Readers ignore unknown fields, so the contract let this through; the shared view, which opens
        # every arriving block, stopped on it (indexing a list as a block) — found by the raw-topic fuzz.
        # (The person has a data key: the block is then indexed for its nonce.)
        placement_id = uuid.uuid4().hex
        key = await _data_key(pool, settings, pk)
        return [
            _raw(settings, to_event(factories.retention(pk, placement_id), key), personal=[SECRET]),
            _raw(settings, to_event(factories.retention(pk, placement_id, checkpoint_months=3), key),
                 personal={"name": SECRET}),
        ]  # fmt: skip
    if kind in ROGUE_NOTES:
        # Readers ignore unknown fields: pydantic read NaN and 1e400 (orjson, which the shared view and the
        # feed parse a value with, does not) and msgspec recursed 1,500 deep (RecursionError) — Review 7.
        key, headers, value = encode(to_event(factories.consent(pk), None))
        return [
            (
                settings.topic(Family.CONSENT),
                key,
                headers,
                value[:-1] + b',"note":' + ROGUE_NOTES[kind] + b"}",
            )
        ]
    if kind == "a ciphertext no base64 reads":
        # 25 characters of base64url's alphabet (no key needed to forge it) about a person with a data
        # key: the shared view, opening every arriving block, stopped on binascii.Error (Review 7).
        key = await _data_key(pool, settings, pk)
        record = _raw(settings, to_event(factories.registration(pk), key))
        data = orjson.loads(record[3])
        data["personal"] = dict(data["personal"], ct="A" * 25)
        return [(*record[:3], orjson.dumps(data)), *_raw_consent_for(settings, pk)]
    assert kind == "foreign header values"
    key, headers, value = encode(to_event(factories.consent(pk), None))
    records: list[Record] = []
    for header in HEADERS:
        for foreign in (SECRET, f"{SECRET}\x00"):
            swapped = [(k, foreign.encode() if k == header else v) for k, v in headers]
            records.append((settings.topic(Family.CONSENT), key, swapped, value))
    return records


@pytest.mark.parametrize(
    "kind",
    [
        "nul in a readable field",
        "nul in a personal field",
        "int32 overflow",
        "foreign header values",
        "a personal field on a family without one",
        *ROGUE_NOTES,
        "a ciphertext no base64 reads",
    ],
)
async def test_rogue_record_is_dead_lettered_and_every_consumer_goes_on(
    kind: str, pool: asyncpg.Pool, isolated: Settings
) -> None:
    settings = isolated
    rogue = await _rogue(kind, pool, settings)
    rogue_keys = {r[1].decode() for r in rogue}
    good, good_pk = await _after_rogue(pool, settings, rogue)

    await _catch_up_all(pool, settings)

    async with pool.acquire() as conn:
        await _reaches_every_consumer(conn, good, good_pk)
        # Whichever of its registration and consent came first, the registration is refused: the person
        # may be in the view on their consent, but never with the registration's fields.
        named = "SELECT count(*) FROM sv_persons WHERE person_key = ANY($1::text[]) AND name IS NOT NULL"
        assert await conn.fetchval(named, list(rogue_keys)) == 0
        reasons = await conn.fetch(  # this module's namespace: other modules' letters share the table
            "SELECT consumer, reason FROM dead_letters WHERE source_topic = ANY($1::text[])",
            settings.event_topics,
        )
    assert reasons
    for r in reasons:
        assert "Tanaka" not in r["reason"] and "\x00" not in r["reason"], r["reason"]
    letters = await read_topic(settings, settings.deadletter_topic)
    mine = [letter for letter in letters if letter.key is not None and letter.key.decode() in rogue_keys]
    assert mine
    for letter in mine:
        assert "Tanaka" not in dict(letter.headers)["dlq_reason"].decode()
    if kind in REASONS:  # refused at decode: by every consumer, for the same reason
        said = {
            (dict(m.headers)["dlq_consumer"].decode(), dict(m.headers)["dlq_reason"].decode()) for m in mine
        }
        assert {c for c, _ in said} == {"event-log", "shared-view", "placement-feed"}
        assert all(r.startswith(REASONS[kind]) for _, r in said), said
    if kind == "foreign header values":
        consumers = {r["consumer"] for r in reasons}
        assert {"event-log", "shared-view", "placement-feed"} <= consumers
        for header in HEADERS:
            assert any(r["reason"].startswith(f"header {header}:") for r in reasons), header


def _raw_consent_for(settings: Settings, pk: str) -> list[Record]:
    key, headers, value = encode(to_event(factories.consent(pk), None))
    return [(settings.topic(Family.CONSENT), key, headers, value)]


async def test_bad_event_mid_batch_costs_only_itself(pool: asyncpg.Pool, isolated: Settings) -> None:
    """Forty good registrations around one the database refuses: all forty applied, one dead-lettered."""
    settings = isolated
    pks = [factories.person_key() for _ in range(41)]
    bad = pks[20]
    bad_key = await _data_key(pool, settings, bad)
    records: list[Record] = []
    for pk in pks:
        key = bad_key if pk == bad else await _data_key(pool, settings, pk)
        event = to_event(factories.registration(pk), key)
        if pk == bad:
            personal = seal(key, pk, {"name": "a\x00b", "birth_date": "1988-06-01"}).model_dump()
            records.append(_raw(settings, event, personal=personal))
        else:
            records.append(_raw(settings, event))
        records += _raw_consent_for(settings, pk)
    good, good_pk = await _after_rogue(pool, settings, records)

    await _catch_up_all(pool, settings)

    async with pool.acquire() as conn:
        await _reaches_every_consumer(conn, good, good_pk)
        named = "SELECT count(*) FROM sv_persons WHERE person_key = ANY($1::text[]) AND name IS NOT NULL"
        assert await conn.fetchval(named, pks) == 40
        event_log = (
            "SELECT count(*) FROM event_log WHERE subject = ANY($1::text[]) AND family = 'registration'"
        )
        assert await conn.fetchval(event_log, pks) == 41  # the event log never opens personal data


async def _person_in_view(conn: asyncpg.Connection, pk: str) -> tuple[Any, ...]:
    """Everything the shared view keeps of one person: events, consents and the record."""
    events = await conn.fetch("SELECT event_id FROM sv_events WHERE person_key = $1 ORDER BY 1", pk)
    consents = await conn.fetch(
        "SELECT consent_id, version FROM sv_consents WHERE person_key = $1 ORDER BY 1", pk
    )
    record = await conn.fetchrow("SELECT name, scopes FROM sv_persons WHERE person_key = $1", pk)
    return [r[0] for r in events], [tuple(r) for r in consents], record and tuple(record)


async def test_a_rogue_personal_block_costs_its_own_event_only_in_live_and_replay(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A registration whose sealed personal block opens to a NUL in the name (a rogue producer holding
    the person's key): the shared view refuses that registration when it arrives — its opened block is
    checked against the contract — and nothing else. The person's consents, the one right after it and
    every later one, are applied; a replay from the topics builds exactly the same."""
    own = settings.model_copy(update={"topic_namespace": f"n{uuid.uuid4().hex[:10]}"})
    await ensure_topics(own)
    pk = factories.person_key()
    key = await _data_key(pool, own, pk)
    personal = seal(key, pk, {"name": f"{SECRET}\x00", "birth_date": "1988-06-01"}).model_dump()
    registration = to_event(factories.registration(pk), key)
    await _publish_raw(own, [_raw(own, registration, personal=personal), *_raw_consent_for(own, pk)])
    await _catch_up_all(pool, own)
    later = factories.consent(pk, version=1)
    await _accept(pool, own, [later])
    await _catch_up_all(pool, own)

    topics = list(own.event_topics)
    letters = (
        "SELECT source_topic FROM dead_letters WHERE consumer = 'shared-view' AND source_topic = ANY($1)"
    )
    async with pool.acquire() as conn:
        live = await _person_in_view(conn, pk)
        refused = [r[0] for r in await conn.fetch(letters, topics)]
        assert refused == [own.topic(Family.REGISTRATION)], refused
        events, consents, record = live
        assert len(consents) == 2 and later.data["consent_id"] in [c[0] for c in consents], live
        assert registration.id not in events, "the refused registration is not kept"
        assert record is not None and record[0] is None, "in the view on their consents, without a name"

        await replay(own, pool)
        assert await _person_in_view(conn, pk) == live
        assert [r[0] for r in await conn.fetch(letters, topics)] == refused


async def test_a_nul_escape_in_a_field_no_contract_reads_is_refused_by_the_shared_view(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The contract lets a field it does not know pass (readers ignore it), so a registration may carry a
    ``\\u0000`` escape there. The view stores each event's JSON as ``json`` (migration 017), which would
    keep it where ``jsonb`` refused it; the shared view refuses it itself, so the event is dead-lettered
    as before and the person's consent is still applied."""
    settings = settings.model_copy(update={"topic_namespace": f"n{uuid.uuid4().hex[:10]}"})
    await ensure_topics(settings)
    pk = factories.person_key()
    key = await _data_key(pool, settings, pk)
    registration = to_event(factories.registration(pk), key)
    await _publish_raw(
        settings, [_raw(settings, registration, note=f"{SECRET}\x00"), *_raw_consent_for(settings, pk)]
    )
    await _catch_up_all(pool, settings)
    async with pool.acquire() as conn:
        reasons = await conn.fetch(
            "SELECT reason FROM dead_letters WHERE consumer = 'shared-view' AND source_topic = $1",
            settings.topic(Family.REGISTRATION),
        )
        stored = await conn.fetchval("SELECT count(*) FROM sv_events WHERE event_id = $1", registration.id)
        in_view = await conn.fetchval("SELECT count(*) FROM sv_persons WHERE person_key = $1", pk)
    assert [r["reason"] for r in reasons] == [
        "handler rejected: data: a \\u0000 escape (PostgreSQL text cannot hold a NUL)"
    ]
    assert (stored, in_view) == (0, 1)


async def test_an_erasure_at_the_edge_of_time_is_dead_lettered_and_every_consumer_goes_on(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    """An erasure whose ``erased_at`` is ``0001-01-01T00:00:00+23:59`` (written straight to the topic: a
    listed key id is public, any signature will do) passed the contract, and turning it to UTC for the
    signature's statement raised OverflowError out of the shared view's and the feed's runs, on the same
    record after every restart. Now the contract refuses it: dead-lettered, every consumer goes on."""
    settings = isolated
    genuine = to_event(factories.erasure(factories.person_key()), None)
    key, headers, value = encode(genuine)
    start = value.index(b'"erased_at":"') + len(b'"erased_at":"')
    forged = value[:start] + b"0001-01-01T00:00:00+23:59" + value[value.index(b'"', start) :]
    good, good_pk = await _after_rogue(
        pool, settings, [(settings.topic(genuine.family), key, headers, forged)]
    )

    await _catch_up_all(pool, settings)

    async with pool.acquire() as conn:
        await _reaches_every_consumer(conn, good, good_pk)
        reasons = await conn.fetch(
            "SELECT reason FROM dead_letters WHERE source_topic = $1", settings.topic(genuine.family)
        )
    assert reasons and all("erased_at" in r["reason"] and "0001" not in r["reason"] for r in reasons)


async def test_a_record_the_decoder_fails_on_is_dead_lettered_without_its_value(
    pool: asyncpg.Pool, isolated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth (Review 7: NaN, deep nesting and a short ciphertext each raised out of a decoder):
    whatever a decoder raises, the consumer refuses that record alone with a reason that quotes nothing of
    it, logs the exception's type only, and goes on."""
    settings = isolated
    marker = f"{SECRET} decoder fault".encode()

    def failing(key: bytes | None, headers: Any, value: bytes | None, **kw: Any) -> Event:
        if value is not None and marker in value:
            raise RuntimeError(f"cannot read {value!r}")
        return decode(key, headers, value, **kw)

    def failing_first(key: bytes | None, headers: Any, value: bytes | None, *rest: Any) -> Event | None:
        if value is not None and marker in value:
            raise RuntimeError(f"cannot read {value!r}")
        return decode_canonical(key, headers, value, *rest)

    # The runtime tries the quick path itself first (``decode_canonical``), then ``decode``: either may fail.
    monkeypatch.setattr("consumers.runtime.decode", failing)
    monkeypatch.setattr("consumers.runtime.decode_canonical", failing_first)
    pk = factories.person_key()
    key, headers, value = encode(to_event(factories.consent(pk), None))
    rogue = value[:-1] + b',"note":"' + marker + b'"}'
    good, good_pk = await _after_rogue(
        pool, settings, [(settings.topic(Family.CONSENT), key, headers, rogue)]
    )

    with capture_logs() as logs:
        await _catch_up_all(pool, settings)

    async with pool.acquire() as conn:
        await _reaches_every_consumer(conn, good, good_pk)
    letters = [m for m in await read_topic(settings, settings.deadletter_topic) if m.key == pk.encode()]
    said = {
        (dict(m.headers)["dlq_consumer"].decode(), dict(m.headers)["dlq_reason"].decode()) for m in letters
    }
    assert said == {
        (consumer, "record: not readable by the hub's decoder")
        for consumer in ("event-log", "shared-view", "placement-feed")
    }
    failed = [line for line in logs if line["event"] == "decode failed"]
    assert {line["consumer"] for line in failed} == {"event-log", "shared-view", "placement-feed"}
    assert all(line["error"] == "RuntimeError" for line in failed)
    assert "Tanaka" not in repr(logs)


# Dates and times in another spelling or year, written straight to the topics (contracts.types: a day is
# YYYY-MM-DD in 2000-2099, an instant RFC 3339 with seconds and an offset; pydantic's lax mode read the
# first four, and the last two passed every reader).
FORGED_DATES: dict[str, tuple[Family, dict[str, Any], str]] = {
    "a midnight datetime for a date": (Family.CONSENT, {"valid_from": "2026-04-01T00:00:00"}, "valid_from"),
    "a Unix time for a date": (Family.PLACEMENT, {"placed_on": 1775001600}, "placed_on"),
    "a Unix time for an instant": (Family.CONSENT, {"captured": 1775001600}, "captured.signed_at"),
    "a date in year 9999": (Family.RETENTION, {"checked_on": "9999-12-31"}, "checked_on"),
    "a date in year 0001": (Family.REGISTRATION, {"registered_on": "0001-01-01"}, "registered_on"),
    "full-width digits": (Family.REFERRAL, {"referred_on": "２０２６-04-01"}, "referred_on"),
}


async def test_forged_dates_and_times_are_dead_lettered_and_every_consumer_goes_on(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    """Each forged date or time is dead-lettered by every consumer with a reason naming the field and the
    rule, never the value; an envelope time in another spelling likewise; a birth date of 0001-01-01 sealed
    under the person's real key (only the shared view opens it) is refused there, and the person's consent
    is still applied. A good person published after them reaches every consumer."""
    settings = isolated
    records: list[Record] = []
    expected: dict[str, str] = {}  # person key -> the field the reason names
    for family, over, field in FORGED_DATES.values():
        pk = factories.person_key()
        sub = next(s for s in factories.one_of_each(pk) if s.family is family)
        event = to_event(sub, await _data_key(pool, settings, pk))
        if "captured" in over:
            over = {"captured": {**sub.data["captured"], "signed_at": over["captured"]}}
        records.append(_raw(settings, event, **over))
        expected[pk] = field
    spaced = factories.person_key()  # ce_time with a space for the T: fromisoformat read it
    key, headers, value = encode(to_event(factories.consent(spaced), None))
    headers = [(n, b"2026-04-01 09:00:00+09:00" if n == "ce_time" else v) for n, v in headers]
    records.append((settings.topic(Family.CONSENT), key, headers, value))
    expected[spaced] = "ce_time"
    born = factories.person_key()  # a forged birth date, sealed under the person's real key
    data_key = await _data_key(pool, settings, born)
    personal = seal(data_key, born, {"name": SECRET, "birth_date": "0001-01-01"}).model_dump()
    records += [
        _raw(settings, to_event(factories.registration(born), data_key), personal=personal),
        *_raw_consent_for(settings, born),
    ]
    good, good_pk = await _after_rogue(pool, settings, records)

    await _catch_up_all(pool, settings)

    async with pool.acquire() as conn:
        await _reaches_every_consumer(conn, good, good_pk)
        person = await conn.fetchrow("SELECT name, scopes FROM sv_persons WHERE person_key = $1", born)
        view_letters = await conn.fetch(
            "SELECT reason FROM dead_letters WHERE consumer = 'shared-view' AND source_topic = $1",
            settings.topic(Family.REGISTRATION),
        )
    assert person is not None and person["name"] is None, "in the view on the consent, without a name"
    assert any(r["reason"].endswith("personal.birth_date: date_range") for r in view_letters), [
        r["reason"] for r in view_letters
    ]
    letters = [m for m in await read_topic(settings, settings.deadletter_topic) if m.key is not None]
    for pk, field in expected.items():
        said = {
            (dict(m.headers)["dlq_consumer"].decode(), dict(m.headers)["dlq_reason"].decode())
            for m in letters
            if m.key == pk.encode()
        }
        assert {c for c, _ in said} == {"event-log", "shared-view", "placement-feed"}, (field, said)
        for _, reason in said:
            assert field in reason and ("YYYY" in reason or "RFC 3339" in reason or "2000-01-01" in reason)
            assert not any(
                v in reason for v in ("1775001600", "9999", "0001-01-01", "２０２６", "2026-04-01")
            )
    for m in letters:
        assert SECRET not in dict(m.headers)["dlq_reason"].decode()


async def test_a_record_without_a_key_is_dead_lettered_by_every_consumer(
    pool: asyncpg.Pool, isolated_per_test: Settings
) -> None:
    """A record is keyed by its person, so that one person's events share a partition (their order, and the
    one member of a group that sees them all). A writer leaving the key out chose the partition itself:
    each consumer dead-letters that record (``key: missing``) and goes on; the person's consent is not
    applied anywhere."""
    settings = isolated_per_test  # its dead letters alone on the consent topic
    pk = factories.person_key()
    _, headers, value = encode(to_event(factories.consent(pk), None))
    good, good_pk = await _after_rogue(
        pool, settings, [(settings.topic(Family.CONSENT), None, headers, value)]
    )
    await _catch_up_all(pool, settings)
    async with pool.acquire() as conn:
        await _reaches_every_consumer(conn, good, good_pk)
        reasons = await conn.fetch(
            "SELECT consumer, reason FROM dead_letters WHERE source_topic = $1",
            settings.topic(Family.CONSENT),
        )
        applied = [
            await conn.fetchval(f"SELECT count(*) FROM {table} WHERE person_key = $1", pk)
            for table in ("sv_consents", "feed_consents")
        ]
    said = {(r["consumer"], r["reason"]) for r in reasons}
    assert {c for c, _ in said} == {"event-log", "shared-view", "placement-feed"}, said
    assert all(r.startswith("key: missing") for _, r in said), said
    assert applied == [0, 0]
