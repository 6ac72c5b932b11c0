"""Records whose shape the fast decoder's structural pass accepts, but which break a contract rule, are
still dead-lettered by the runtime — with the contract's reason — and the consumer goes on."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import asyncpg
import msgspec
import orjson
from aiokafka import AIOKafkaProducer

from consumers.event_log import EventLogHandler
from consumers.runtime import ConsumerRuntime
from contracts import wire
from contracts.envelope import MODELS, Event, Family, encode
from infra.config import Settings
from infra.kafka import client_options
from infra.topics import ensure_topics
from producers.submission import to_event
from tests import factories
from tests.helpers import read_topic, wait_for


def _structurally_sound(family: Family, value: bytes) -> bool:
    """msgspec's structural pass alone (the contract's types, none of its patterns or validators)."""
    try:
        msgspec.json.decode(value, type=wire.struct_for(MODELS[family]))
    except msgspec.ValidationError:
        return False
    return True


def _broken(event: Event, **over: Any) -> bytes:
    data = orjson.loads(encode(event)[2])
    for path, value in over.items():
        node = data
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return orjson.dumps(data)


async def test_rule_breaking_records_of_a_valid_shape_are_dead_lettered(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    # topics of its own: the dead-letter register and topic other tests count stay untouched
    settings = settings.model_copy(update={"topic_namespace": f"f{uuid.uuid4().hex[:10]}"})
    await ensure_topics(settings)
    pk = factories.person_key()
    key = os.urandom(32)
    reg = to_event(factories.registration(pk), key)
    con = to_event(factories.consent(pk), key)
    ret = to_event(factories.retention(pk, uuid.uuid4().hex), key)
    good = to_event(factories.referral(pk), key)
    cases: dict[str, tuple[Event, bytes, str]] = {
        # a site the authority does not run (a model validator)
        "site": (reg, _broken(reg, site="112038-01"), "is not run by authority"),
        # a wrong check digit (a validator of the code type)
        "check digit": (reg, _broken(reg, authority="131040"), "check digit"),
        # a person key with a final newline: Python's `$` would let it through, the contract's does not
        "newline": (reg, _broken(reg, person_key=pk + "\n"), "person_key"),
        # an office recipient with a 5-digit code (the recipient's validator)
        "recipient": (con, _broken(con, recipients=[{"kind": "office", "code": "13010"}]), "recipients"),
        # a withdrawal that still carries scopes (the consent's coherence rule)
        "withdrawal": (con, _broken(con, action="withdrawn"), "withdrawal carries no scopes"),
        # left without a date
        "retention": (ret, _broken(ret, status="left"), "left_on"),
        # a signing time without an offset
        "naive time": (con, _broken(con, captured__signed_at="2025-04-03T10:00:00"), "signed_at"),
        # an occupation group outside 01–15 of a valid shape
        "occupation": (reg, _broken(reg, desired_occupation__group="16"), "desired_occupation"),
        # what the quick checks before the patterns' regexes must not pass: a nonce of the right length
        # with a letter outside ASCII, a ciphertext with base64 padding, an id in capitals, a form
        # version with a control character
        "nonce": (reg, _broken(reg, personal__nonce="AAAAAAAAAAAAAAA\u00e9"), "personal.nonce"),
        "ciphertext": (reg, _broken(reg, personal__ct=reg.data.personal.ct + "="), "personal.ct"),
        "capitals": (con, _broken(con, consent_id=con.data.consent_id.upper()), "consent_id"),
        "control": (con, _broken(con, form_version="common\x01form"), "form_version"),
    }
    # the same for the envelope's quick path: a time that Python's fromisoformat reads but the envelope
    # refuses (a control character between date and time), an id in capitals
    header_cases: dict[str, tuple[Event, str, bytes, str]] = {
        "time": (good, "ce_time", b"2025-04-01\x0009:00:00+09:00", "header ce_time: contains a control"),
        "id": (good, "ce_id", uuid.uuid4().hex.upper().encode(), "header ce_id: does not match"),
    }
    topic_of = {e.family: settings.topic(e.family) for e, _, _ in cases.values()}
    ids: dict[str, str] = {}
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for name, (event, value, _) in cases.items():
            assert _structurally_sound(event.family, value), name
            k, headers, _ = encode(event)
            ids[name] = uuid.uuid4().hex
            headers = [(h, ids[name].encode() if h == "ce_id" else v) for h, v in headers]
            await producer.send_and_wait(topic_of[event.family], value, key=k, headers=headers)
        for name, (event, header, bad, _) in header_cases.items():
            k, headers, value = encode(event)
            ids[name] = bad.decode() if header == "ce_id" else uuid.uuid4().hex
            headers = [(h, ids[name].encode() if h == "ce_id" else v) for h, v in headers]
            headers = [(h, bad if h == header else v) for h, v in headers]
            await producer.send_and_wait(settings.topic(event.family), value, key=k, headers=headers)
        k, headers, value = encode(good)
        await producer.send_and_wait(settings.topic(Family.REFERRAL), value, key=k, headers=headers)
    finally:
        await producer.stop()

    runtime = ConsumerRuntime(EventLogHandler(settings), settings, pool, group_id="rt-fast-decode")
    task = asyncio.create_task(runtime.run())

    async def reasons() -> dict[str, str]:
        found = {}
        for r in await read_topic(settings, settings.deadletter_topic):
            h = dict(r.headers)
            if h.get("ce_id", b"").decode() in ids.values():
                found[h["ce_id"].decode()] = h["dlq_reason"].decode()
        return found

    try:
        # every record committed (applied or dead-lettered): then the verdicts are all in
        await wait_for(
            lambda: asyncio.sleep(0, runtime.processed + runtime.dead_lettered),
            until=lambda n: n == len(cases) + len(header_cases) + 1,
        )
        letters = await reasons()
        async with pool.acquire() as conn:
            logged = await conn.fetchval(
                "SELECT count(*) FROM event_log WHERE event_id = ANY($1::text[])", [*ids.values(), good.id]
            )
    finally:
        runtime.stop()
        await task
    assert logged == 1  # the good one
    assert set(letters) == set(ids.values())
    for name, (_, _, reason) in cases.items():
        assert reason in letters[ids[name]], (name, letters[ids[name]])
    for name, (_, _, _, reason) in header_cases.items():
        assert reason in letters[ids[name]], (name, letters[ids[name]])
