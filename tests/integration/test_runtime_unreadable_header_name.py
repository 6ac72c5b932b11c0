"""A record whose header name is not UTF-8 (review11 F2).

Kafka's protocol carries a header's name as bytes; aiokafka decodes it as UTF-8 while it unpacks a fetch
and raises ``UnicodeDecodeError`` out of ``getmany``, not a record the runtime could dead-letter. Anyone
who may write an event topic (a leaked adapter credential) could so stop every consumer of it for good: a
restarted consumer reads the same record again. The runtime dead-letters that record (its bytes cannot be
read, so the letter carries its position and the reason) and goes on, with the records around it applied.
"""

from __future__ import annotations

import asyncio
import os
import struct

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, codec
from aiokafka.producer import message_accumulator
from aiokafka.producer import producer as producer_module
from aiokafka.record import default_records

from consumers.catchup import end_offsets, run_until
from consumers.event_log import EventLogHandler
from consumers.monitoring.kafka_probe import KafkaProbe
from consumers.runtime import ConsumerRuntime
from contracts.envelope import Family, encode
from infra.config import Settings
from infra.crypto import KeyStore
from infra.erasure_follower import ErasureFollower
from infra.kafka import client_options
from infra.signing import erasure_signer
from producers.submission import to_event
from tests import factories
from tests.helpers import publish_records, wait_for

UNREADABLE = "record: not readable by the Kafka client (a header name in its record batch is not UTF-8)"
UNREADABLE_CODEC = (
    "record: not readable by the Kafka client (its record batch's compression is not one it reads)"
)


class _NotUtf8(str):
    """A header name that the producer writes as bytes that are not UTF-8."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"ce_\xff\xfe"


async def _publish_with_a_bad_header_name(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    records: list[tuple[bytes, list[tuple[str, bytes]], bytes]],
    family: Family = Family.REFERRAL,
    partition: int | None = None,
    topic: str | None = None,
) -> None:
    """These records onto one partition (one person), in one record batch, through aiokafka's pure-Python
    batch builder, which encodes header names with ``str.encode`` (its C builder would refuse the name)."""
    for module in (message_accumulator, producer_module):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", default_records._DefaultRecordBatchBuilderPy)
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=500)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic or settings.topic(family), value, key=key, headers=headers, partition=partition
            )
            for key, headers, value in records
        ]
        for f in futures:
            await f
    finally:
        await producer.stop()
        monkeypatch.undo()


async def test_a_record_whose_header_name_is_not_utf8_is_dead_lettered_and_the_consumer_goes_on(
    pool: asyncpg.Pool, isolated_per_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rogue producer's batch: a record with such a header name and one after it, which aiokafka cannot
    read either (it decodes the batch's records in order, those before the position too). Both are
    dead-lettered at their offsets; the records around that batch (another producer's) are applied."""
    settings = isolated_per_test
    person = factories.person_key()
    topic = settings.topic(factories.referral(person).family)
    before, bad, same_batch, after = (
        encode(to_event(factories.referral(person), os.urandom(32))) for _ in range(4)
    )
    key, headers, value = bad
    await publish_records(settings, [(topic, *before)])
    await _publish_with_a_bad_header_name(
        settings, monkeypatch, [(key, [*headers, (_NotUtf8("x"), b"1")], value), same_batch]
    )
    await publish_records(settings, [(topic, *after)])

    handler = EventLogHandler(settings)
    ends = await end_offsets(settings, handler.topics)
    await run_until(ConsumerRuntime(handler, settings, pool), pool, ends, timeout_s=60)

    ids = [dict(h)["ce_id"].decode() for _, h, _ in (before, bad, same_batch, after)]
    async with pool.acquire() as conn:
        logged = {
            r[0] for r in await conn.fetch("SELECT event_id FROM event_log WHERE event_id = ANY($1)", ids)
        }
        letters = await conn.fetch(
            "SELECT source_offset, reason FROM dead_letters WHERE consumer = $1 AND source_topic = $2 "
            "ORDER BY source_offset",
            handler.name,
            topic,
        )
    assert logged == {ids[0], ids[3]}
    assert [(r["source_offset"], r["reason"]) for r in letters] == [(1, UNREADABLE), (2, UNREADABLE)]


async def _value(value: object) -> object:
    return value


async def test_the_erasure_follower_goes_on_past_such_a_record_and_forgets_what_it_may_have_missed(
    pool: asyncpg.Pool, isolated_per_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure follower reads the erasure topic the same way: such a record there ended its task (the
    service unready, erasures no longer followed). It takes its place at the topic's end again, emptying
    the process's key caches (an erasure after the record may not have been seen), and follows on."""
    settings = isolated_per_test
    keystore = KeyStore.from_settings(settings)
    before, after = factories.person_key(), factories.person_key()
    follower = ErasureFollower(settings)
    following = asyncio.create_task(follower.run())
    try:
        await wait_for(lambda: _value(follower.ready.is_set()), until=bool)
        async with pool.acquire() as conn:
            await keystore.keys_for(conn, [before])
        key, headers, value = encode(
            to_event(factories.erasure(before, signer=erasure_signer(settings)), None)
        )
        await _publish_with_a_bad_header_name(
            settings, monkeypatch, [(key, [*headers, (_NotUtf8("x"), b"1")], value)], Family.ERASURE, 0
        )
        await wait_for(lambda: _value(keystore.holds(before)), until=lambda held: not held)
        await wait_for(lambda: _value(follower.ready.is_set()), until=bool)
        assert not following.done(), "the follower ended"

        async with pool.acquire() as conn:
            await keystore.keys_for(conn, [after])
        erasure = to_event(factories.erasure(after, signer=erasure_signer(settings)), None)
        await publish_records(settings, [(settings.topic(Family.ERASURE), *encode(erasure))])
        await wait_for(lambda: _value(keystore.holds(after)), until=lambda held: not held)
        assert follower.forgotten == 1 and not following.done()
    finally:
        follower.stop()
        await asyncio.wait_for(following, timeout=30)


async def test_the_consoles_scan_of_the_dead_letter_topic_reads_past_such_a_record(
    pool: asyncpg.Pool, isolated_per_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console indexes the dead-letter topic (``DeadLetterDesk.sync`` by ``KafkaProbe.scan``) on every
    dead-letter page and sampling tick: such a record there made the page a 500 and the desk blind to every
    letter after it. The scan reads the records around it and passes it (it is no letter of the runtime's)."""
    settings = isolated_per_test
    topic = settings.deadletter_topic
    person = factories.person_key()
    before, bad, after = (encode(to_event(factories.referral(person), os.urandom(32))) for _ in range(3))
    key, headers, value = bad
    await publish_records(settings, [(topic, *before)])
    partition = await _partition_of(settings, topic, key)
    await _publish_with_a_bad_header_name(
        settings,
        monkeypatch,
        [(key, [*headers, (_NotUtf8("x"), b"1")], value)],
        partition=partition,
        topic=topic,
    )
    await publish_records(settings, [(topic, *after)])

    probe = KafkaProbe(settings)
    try:
        records = await probe.scan(topic, {})
    finally:
        await probe.close()
    assert [(r.partition, r.offset) for r in records] == [(partition, 0), (partition, 2)]
    assert [r.value for r in records] == [before[2], after[2]]


async def _partition_of(settings: Settings, topic: str, key: bytes) -> int:
    """The partition the records of ``key`` went to (the first one published)."""
    probe = KafkaProbe(settings)
    try:
        (found,) = {r.partition for r in await probe.scan(topic, {}) if r.key == key}
    finally:
        await probe.close()
    return found


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _snappy(data: bytes, **_: object) -> bytes:
    """``data`` compressed as Kafka's snappy (xerial framing, one raw block): literals, and each run of one
    byte as copies at offset 1 — enough to make a padded record smaller, which the producer requires."""
    raw = bytearray(_varint(len(data)))

    def literal(chunk: bytes) -> None:
        for k in range(0, len(chunk), 65536):
            part = chunk[k : k + 65536]
            raw.extend(bytes([61 << 2]) + struct.pack("<H", len(part) - 1) + part)

    i = start = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        if j - i >= 8:
            literal(data[start : i + 1])
            for left in range(j - i - 1, 0, -64):
                raw.extend(bytes([((min(64, left) - 1) << 2) | 2]) + struct.pack("<H", 1))
            start = j
        i = j
    literal(data[start:])
    return b"\x82SNAPPY\x00" + struct.pack("!iii", 1, 1, len(raw)) + bytes(raw)


async def test_a_record_batch_compressed_by_a_codec_the_consumer_lacks_is_dead_lettered_and_it_goes_on(
    pool: asyncpg.Pool, isolated_per_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rogue producer's record in snappy, whose library this process does not have (the broker takes it):
    aiokafka raises UnsupportedCodecError (a KafkaError) out of getmany, which ended the consumer as the
    header name did. Dead-lettered the same way; the records around it (another producer's) are applied."""
    assert not codec.has_snappy(), "control: no snappy library here"
    settings = isolated_per_test
    person = factories.person_key()
    topic = settings.topic(Family.REFERRAL)
    before, bad, after = (encode(to_event(factories.referral(person), os.urandom(32))) for _ in range(3))
    await publish_records(settings, [(topic, *before)])
    await _publish_in_snappy(settings, monkeypatch, topic, bad)
    await publish_records(settings, [(topic, *after)])

    handler = EventLogHandler(settings)
    ends = await end_offsets(settings, handler.topics)
    await run_until(ConsumerRuntime(handler, settings, pool), pool, ends, timeout_s=60)

    ids = [dict(h)["ce_id"].decode() for _, h, _ in (before, bad, after)]
    async with pool.acquire() as conn:
        logged = {
            r[0] for r in await conn.fetch("SELECT event_id FROM event_log WHERE event_id = ANY($1)", ids)
        }
        letters = await conn.fetch(
            "SELECT source_offset, reason FROM dead_letters WHERE consumer = $1 AND source_topic = $2",
            handler.name,
            topic,
        )
    assert logged == {ids[0], ids[2]}
    assert [(r["source_offset"], r["reason"]) for r in letters] == [(1, UNREADABLE_CODEC)]


async def _publish_in_snappy(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    topic: str,
    record: tuple[bytes, list[tuple[str, bytes]], bytes],
    partition: int | None = None,
    *,
    copies: int = 1,
) -> None:
    """``record`` (padded so that it compresses) in a snappy record batch, by a producer given ``_snappy``
    (this process has no snappy library, nor do its consumers); ``copies`` of it, all in that one batch."""
    for module in (message_accumulator, producer_module):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", default_records._DefaultRecordBatchBuilderPy)
    monkeypatch.setattr(default_records, "snappy_encode", _snappy)
    monkeypatch.setattr(codec, "has_snappy", lambda: True)
    kind = AIOKafkaProducer._COMPRESSORS["snappy"][1]
    monkeypatch.setitem(AIOKafkaProducer._COMPRESSORS, "snappy", (lambda: True, kind))
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        compression_type="snappy",
        linger_ms=500,
        max_batch_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        key, headers, value = record
        sent = [
            await producer.send(
                topic, value, key=key, headers=[*headers, ("pad", b"a" * 4000)], partition=partition
            )
            for _ in range(copies)
        ]
        for done in sent:
            await done
    finally:
        await producer.stop()
        monkeypatch.undo()


async def test_a_rogue_record_batch_of_many_records_is_passed_by_one_search_and_one_commit(
    pool: asyncpg.Pool, isolated_per_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every record of a batch in a codec the consumer lacks is dead-lettered at its offset, as before, but
    found by one search and passed in one transaction: each record took a search (flush, positions, end
    offsets, fetches) and a commit of its own, ~56 ms a record, so a 1 MB batch of small records, hundreds
    of thousands of them, held the consumer for hours (review12 F2)."""
    settings = isolated_per_test
    person = factories.person_key()
    topic = settings.topic(Family.REFERRAL)
    before, bad, after = (encode(to_event(factories.referral(person), os.urandom(32))) for _ in range(3))
    await publish_records(settings, [(topic, *before)])
    await _publish_in_snappy(settings, monkeypatch, topic, bad, copies=40)
    await publish_records(settings, [(topic, *after)])

    searches = 0
    search = ConsumerRuntime._past_unreadable

    async def counted(runtime: ConsumerRuntime) -> None:
        nonlocal searches
        searches += 1
        await search(runtime)

    monkeypatch.setattr(ConsumerRuntime, "_past_unreadable", counted)
    handler = EventLogHandler(settings)
    ends = await end_offsets(settings, handler.topics)
    await run_until(ConsumerRuntime(handler, settings, pool), pool, ends, timeout_s=120)

    ids = [dict(h)["ce_id"].decode() for _, h, _ in (before, after)]
    async with pool.acquire() as conn:
        logged = {
            r[0] for r in await conn.fetch("SELECT event_id FROM event_log WHERE event_id = ANY($1)", ids)
        }
        letters = await conn.fetch(
            "SELECT source_offset, reason FROM dead_letters WHERE consumer = $1 AND source_topic = $2 "
            "ORDER BY source_offset",
            handler.name,
            topic,
        )
    assert logged == set(ids)
    assert [(r["source_offset"], r["reason"]) for r in letters] == [
        (n, UNREADABLE_CODEC) for n in range(1, 41)
    ]
    assert searches == 1


async def test_the_consoles_scan_reads_past_a_record_batch_in_a_codec_it_lacks(
    pool: asyncpg.Pool, isolated_per_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_per_test
    topic = settings.deadletter_topic
    person = factories.person_key()
    before, bad, after = (encode(to_event(factories.referral(person), os.urandom(32))) for _ in range(3))
    await publish_records(settings, [(topic, *before)])
    partition = await _partition_of(settings, topic, bad[0])
    await _publish_in_snappy(settings, monkeypatch, topic, bad, partition)
    await publish_records(settings, [(topic, *after)])

    probe = KafkaProbe(settings)
    try:
        records = await probe.scan(topic, {})
    finally:
        await probe.close()
    assert [(r.partition, r.offset) for r in records] == [(partition, 0), (partition, 2)]
