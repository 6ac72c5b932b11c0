"""The runtime's decode of a batch: each record's value is parsed once, and the parse is kept only for a
handler that takes its events' data as plain values (``plain_data``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import asyncpg
import orjson
from aiokafka.structs import ConsumerRecord

from consumers.runtime import Consumed, ConsumerRuntime, incoming, spans_of
from contracts.envelope import encode
from infra.config import Settings
from producers.submission import to_event
from tests import factories


class _Handler:
    name = "decode-test"
    topics: Sequence[str] = ()

    def __init__(self, plain_data: bool) -> None:
        self.plain_data = plain_data

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        raise AssertionError("not committed here")


def _record(
    offset: int, key: bytes, headers: list[tuple[str, bytes]], value: bytes
) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("t", 0, offset, 0, 0, key, value, None, len(key), len(value), tuple(headers))


def _records() -> list[ConsumerRecord[Any, Any]]:
    pk = factories.person_key()
    events = [
        to_event(factories.registration(pk), os.urandom(32)),
        to_event(factories.consent(pk), None),
        to_event(factories.referral(pk), os.urandom(32)),
    ]
    records = [_record(i, *encode(e)) for i, e in enumerate(events)]
    # a number orjson does not read, in a field no contract reads: refused, whatever the handler
    key, headers, value = encode(to_event(factories.consent(pk), None))
    records.append(_record(len(records), key, headers, value[:-1] + b',"note":1e400}'))
    return records


async def test_a_plain_data_handler_gets_the_decoders_parse_and_a_storing_one_none(
    settings: Settings,
) -> None:
    records = _records()
    for plain in (True, False):
        runtime = ConsumerRuntime(_Handler(plain), settings, cast(asyncpg.Pool, None))
        batch = await runtime._decode(records, spans_of(records))
        assert [d.offset for d in batch.poison] == [3]
        assert batch.poison[0].reason == "value: not valid JSON"
        assert [c.offset for c in batch.good] == [0, 1, 2]
        for c in batch.good:
            assert incoming(c).data == orjson.loads(c.value)
            if plain:
                assert incoming(c).data is c.event.parsed  # the decoder's own parse, not a second one
            else:
                assert c.event.parsed is None  # not held for a handler that stores the bytes


def test_a_records_time_past_what_a_datetime_holds_is_no_time_not_an_error() -> None:
    """A record's Kafka timestamp is its producer's (CreateTime): a broker that takes any (Kafka 3.x's
    default, or ``log.message.timestamp.after.max.ms`` raised) hands over one past year 9999, and turning
    it into the position's time raised out of the batch's commit, ending the consumer on every restart
    (review11 F5). Such a time is no time, as a negative one is."""
    from aiokafka.structs import ConsumerRecord

    from consumers.runtime import _record_time

    def record(timestamp: int) -> ConsumerRecord:
        return ConsumerRecord("t", 0, 0, timestamp, 0, b"k", b"v", None, 1, 1, ())

    assert _record_time(record(2**62)) is None
    assert _record_time(record(253402300800000)) is None  # 10000-01-01
    assert _record_time(record(-1)) is None
    assert _record_time(record(1_700_000_000_000)) is not None
