"""Poison messages of every kind land in the dead-letter topic with their reason; good ones still land."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from consumers.event_log import EventLogHandler
from consumers.runtime import ConsumerRuntime
from contracts.envelope import Family, encode
from infra.config import Settings
from infra.crypto import seal
from infra.kafka import client_options
from producers.submission import to_event
from tests import factories
from tests.helpers import read_topic, wait_for


def _headers(**over: str | None) -> list[tuple[str, bytes]]:
    base = {
        "ce_specversion": "1.0",
        "ce_id": "0" * 32,
        "ce_source": "/hellowork/offices/1301",
        "ce_type": "jp.ittai.registration.v1",
        "ce_subject": "",
        "ce_time": "2025-04-03T10:00:00+09:00",
        "content-type": "application/json",
    }
    base.update(over)
    return [(k, v.encode()) for k, v in base.items() if v is not None]


def _one_per_position(letters: list[ConsumerRecord]) -> list[ConsumerRecord]:
    """The dead-letter topic is written at least once: a batch found stale after a rebalance (another
    member, or this one before its seek, already saved a later position) has published its letters before
    its transaction learns that, and its re-read publishes them again. The register keeps one per source
    position; repeats on the topic must be the same letter (same bytes, same reason) at the same position."""
    first: dict[tuple[bytes, bytes], ConsumerRecord] = {}
    for r in letters:
        h = dict(r.headers)
        at = (h["dlq_source_partition"], h["dlq_source_offset"])
        if at in first:
            seen = first[at]
            same = {k: v for k, v in seen.headers if k != "dlq_time"}
            assert (r.key, r.value, {k: v for k, v in r.headers if k != "dlq_time"}) == (
                seen.key,
                seen.value,
                same,
            )
        else:
            first[at] = r
    return list(first.values())


async def test_poison_of_each_kind_is_dead_lettered_and_consumer_goes_on(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    import os

    topic = settings.topic(Family.REGISTRATION)
    good_before = to_event(factories.registration(factories.person_key()), os.urandom(32))
    good_after = to_event(factories.registration(factories.person_key()), os.urandom(32))
    pk = factories.person_key()
    valid_value = orjson.loads(encode(good_before)[2])
    valid_value["person_key"] = pk
    bad_code = dict(valid_value, authority="112039", site="112039-01")
    sealed = seal(os.urandom(32), pk, {"name": "x", "birth_date": "2000-01-01"}).model_dump()
    valid_value["personal"] = sealed

    poison = {
        "undecodable": (_headers(ce_subject=pk, ce_id="1" * 32), b"\x00\x01 not json {"),
        "schema": (_headers(ce_subject=pk, ce_id="2" * 32), orjson.dumps(bad_code)),
        "unknown_type": (
            _headers(ce_subject=pk, ce_id="3" * 32, ce_type="jp.ittai.payment.v1"),
            orjson.dumps(valid_value),
        ),
        "unknown_version": (
            _headers(ce_subject=pk, ce_id="4" * 32, ce_type="jp.ittai.registration.v2"),
            orjson.dumps(valid_value),
        ),
        "missing_header": (_headers(ce_subject=pk, ce_id="5" * 32, ce_time=None), orjson.dumps(valid_value)),
    }
    expected_reason = {
        "undecodable": "value: not valid JSON",
        "schema": "authority: Value error, check digit (sixth digit) does not match the first five",
        "unknown_type": "header ce_type: not a known type and version",
        "unknown_version": "header ce_type: not a known type and version",
        "missing_header": "header ce_time: missing",
    }

    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    sent = []  # (partition, offset) of each poison record: the session's topic holds other modules' too
    try:
        key, headers, value = encode(good_before)
        await producer.send_and_wait(topic, value, key=key, headers=headers)
        for hdrs, val in poison.values():
            meta = await producer.send_and_wait(topic, val, key=pk.encode(), headers=hdrs)
            sent.append((meta.partition, meta.offset))
        key, headers, value = encode(good_after)
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()

    runtime = ConsumerRuntime(EventLogHandler(settings), settings, pool, group_id="rt-poison")
    task = asyncio.create_task(runtime.run())
    async with pool.acquire() as conn:
        await wait_for(
            lambda: conn.fetchval(
                "SELECT count(*) FROM event_log WHERE event_id = ANY($1::text[])",
                [good_before.id, good_after.id],
            ),
            until=lambda n: n == 2,
        )
        register = await wait_for(
            lambda: conn.fetch(
                "SELECT * FROM dead_letters WHERE consumer = 'event-log' AND source_topic = $1 "
                "AND (source_partition, source_offset) IN (SELECT * FROM unnest($2::int[], $3::bigint[]))",
                topic,
                [p for p, _ in sent],
                [o for _, o in sent],
            ),
            until=lambda rows: len(rows) >= 5,
        )
    runtime.stop()
    await task

    letters = _one_per_position(
        [r for r in await read_topic(settings, settings.deadletter_topic) if r.key == pk.encode()]
    )
    assert len(letters) == 5
    by_id = {
        dict(r.headers)["ce_id"].decode(): dict(r.headers) for r in letters if "ce_id" in dict(r.headers)
    }
    for n, kind in enumerate(poison, start=1):
        hdrs = by_id[str(n) * 32]
        reason = hdrs["dlq_reason"].decode()
        assert expected_reason[kind] in reason, (kind, reason)
        assert hdrs["dlq_source_topic"].decode() == topic
        assert int(hdrs["dlq_source_offset"]) >= 0
        assert "dlq_time" in hdrs and "dlq_source_partition" in hdrs
    # the original bytes are kept for redrive
    undecodable = next(r for r in letters if dict(r.headers)["ce_id"] == b"1" * 32)
    assert undecodable.value == b"\x00\x01 not json {"
    assert len(register) == 5
    assert all(r["reason"] for r in register)
