"""The decode differential through real Kafka and the real consumers (the runtime's decode, each handler).

``tests/unit/test_decode_differential.py`` holds the runtime's decode equal to the whole way record by
record; here its hostile records (repeated, renamed, empty, NUL, huge and non-UTF-8 headers; repeated keys,
NaN, integers past 2**63, surrogate escapes, trailing bytes, BOMs, deep nesting in values) travel through
the broker first — aiokafka's own reading of keys, header names and values on the way — and the event
log, the shared view and the placement feed (which act on the decoder's parse, ``keep_parsed``) consume
them, each in one run (a consumer that stopped fails the test: a left-out defaulted field stopped the
feed). For each record, at its own offset: where the whole way (``decode``) refuses it, every consumer
dead-letters it with exactly that reason; where it accepts it, no consumer refuses it for a decode reason
(one may on its own later rule: ``ce_source`` re-checked, a NUL PostgreSQL's text cannot hold), and the
event log records it unless it refused it. Derandomized: the same records every run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.catchup import run_until_caught_up
from consumers.event_log import EventLogHandler
from consumers.feed.projection import FeedProjection
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import Event, PoisonMessage, decode
from devtools.stack import namespaces
from infra.config import Settings
from infra.db import create_pool, drop_database, recreate_database
from infra.kafka import client_options
from infra.topics import ensure_topics
from tests.unit.test_decode_differential import _hostile_headers, _hostile_values

RECORDS = 160
_MOST_BYTES = 500_000  # under the broker's record limit (a 1 MB string is the unit fuzz's)


def _drawn() -> list[tuple[Event, tuple[bytes | None, list[Any], bytes | None]]]:
    """Records of the five families (no erasure: one that verifies would put its person on the session's
    erasure register, and the unit fuzz has them)."""
    out: list[tuple[Event, tuple[bytes | None, list[Any], bytes | None]]] = []

    @settings(
        max_examples=RECORDS,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(_hostile_headers(erasures=False), _hostile_values(erasures=False)))
    def draw(case: tuple[Event, tuple[bytes | None, list[Any], bytes | None]]) -> None:
        out.append(case)

    draw()
    return out


def _sendable(key: bytes | None, headers: list[Any], value: bytes | None) -> bool:
    names_encode = all(_utf8(name) for name, _ in headers)
    size = len(value or b"") + len(key or b"") + sum(len(v or b"") for _, v in headers)
    return names_encode and size < _MOST_BYTES


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _fresh_id(event: Event, headers: list[Any]) -> tuple[list[Any], str]:
    """Each record its own event id (the samples repeat): one the event log keys its row by."""
    fresh = os.urandom(16).hex()
    return [(n, fresh.encode() if v == event.id.encode() else v) for n, v in headers], fresh


def _whole(key: bytes | None, headers: list[Any], value: bytes | None, fresh: str) -> tuple[str, str | None]:
    """The event id the whole way reads (``fresh``, or another valid one a repeated header left there)
    and its refusal, or None where it accepts the record."""
    try:
        return decode(key, headers, value).id, None
    except PoisonMessage as poison:
        return fresh, poison.reason


@pytest_asyncio.fixture(loop_scope="session")
async def scratch(live_stack: None, settings: Settings) -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    """A database and a topic namespace of the test's own. The records it accepts (the simulator's
    authorities and sites, hostile variants of them) must not reach the session's database: the feed
    lists every site it has met for an authority, and a site met here gave test_feed's authority a
    revision 2 it never asked for. (A namespace of its own too: a scratch database claimed under the
    session's namespace would drop the session's database on release: test_bench_feed_rows.)"""
    tag = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={"pg_database": f"ittai_test_ddk{tag}", "topic_namespace": f"ddk{tag}"})
    lease = namespaces.claim(own, database=own.pg_database)
    assert lease is not None and lease.database == own.pg_database, "a lease of the scratch database alone"
    await recreate_database(own)
    await ensure_topics(own)
    pool = await create_pool(own)
    try:
        yield own, pool
    finally:
        await pool.close()
        await drop_database(own, missing_ok_if_busy=True)
        await namespaces.release(own, [lease])


async def test_hostile_records_through_kafka_are_judged_by_the_consumer_as_by_the_whole_way(
    scratch: tuple[Settings, asyncpg.Pool],
) -> None:
    settings, pool = scratch
    sent: list[
        tuple[str, int, int, str, str | None]
    ] = []  # topic, partition, offset, id, whole way's refusal
    producer = AIOKafkaProducer(**client_options(settings), acks="all", max_request_size=1_048_576)
    await producer.start()
    try:
        for event, (key, headers, value) in _drawn():
            if not _sendable(key, headers, value):
                continue
            headers, fresh = _fresh_id(event, headers)
            topic = settings.topic(event.family)
            meta = await producer.send_and_wait(topic, value, key=key, headers=headers, partition=0)
            sent.append((topic, meta.partition, meta.offset, *_whole(key, headers, value, fresh)))
    finally:
        await producer.stop()
    assert len(sent) > RECORDS // 2
    assert sum(1 for *_, refusal in sent if refusal is None) >= 10  # some accepted, many refused
    assert sum(1 for *_, refusal in sent if refusal is not None) >= 10

    handlers = (EventLogHandler(settings), SharedViewHandler(settings), FeedProjection(settings))
    for handler in handlers:
        # one run each: ``run_until`` re-raises whatever stopped the consumer
        await run_until_caught_up(handler, settings, pool, timeout_s=180)

    async with pool.acquire() as conn:
        letters = {
            (r["consumer"], r["source_topic"], r["source_partition"], r["source_offset"]): r["reason"]
            for r in await conn.fetch(
                "SELECT consumer, source_topic, source_partition, source_offset, reason FROM dead_letters "
                "WHERE source_topic = ANY($1::text[])",
                settings.event_topics,
            )
        }
        logged = {
            r["event_id"]: (r["topic"], r["partition"], r["offset"])
            for r in await conn.fetch(
                'SELECT event_id, topic, partition, "offset" FROM event_log WHERE event_id = ANY($1::text[])',
                [event_id for *_, event_id, _ in sent],
            )
        }
    # Where two accepted records carry one id (a repeated ce_id header left another sample's), the log
    # keeps one of them.
    positions: dict[str, list[tuple[str, int, int]]] = {}
    for topic, partition, offset, event_id, refusal in sent:
        if refusal is None:
            positions.setdefault(event_id, []).append((topic, partition, offset))
    for topic, partition, offset, event_id, refusal in sent:
        where = (topic, partition, offset)
        said = {h.name: letters.get((h.name, *where)) for h in handlers}
        if refusal is not None:  # every consumer, at decode, for the whole way's reason
            assert said == dict.fromkeys(said, refusal), (where, refusal, said)
            assert where not in logged.values()
            continue
        # Accepted at decode: applied, or refused by a consumer's own later rule (ce_source, a NUL for
        # PostgreSQL's text), never for a decode reason.
        for reason in said.values():
            assert reason is None or reason.startswith(_AFTER_DECODE), (where, said)
        if said["event-log"] is None:
            assert logged.get(event_id) in positions[event_id], where


_AFTER_DECODE = ("handler rejected: ", "database refused a value: ")
