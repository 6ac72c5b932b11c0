"""The event log's rows in PostgreSQL's binary COPY format, written by the handler itself (no per-value
encoder of the driver): each column holds what asyncpg would have written for it. (That PostgreSQL reads
them back as the events' values is ``tests/integration/test_event_log.py``.)"""

from __future__ import annotations

import os
import struct
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from consumers.event_log import COLUMNS, copy_payload
from consumers.runtime import Consumed
from contracts.envelope import decode, encode
from producers.submission import to_event
from tests import factories


def _rows(payload: bytes) -> list[list[bytes | None]]:
    """The rows of a binary COPY, each a list of its fields' bytes, read by the format's definition."""
    assert payload[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, extension = struct.unpack_from(">ii", payload, 11)
    assert (flags, extension) == (0, 0)
    at, rows = 19, []
    while True:
        (count,) = struct.unpack_from(">h", payload, at)
        at += 2
        if count == -1:
            assert at == len(payload)
            return rows
        row: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", payload, at)
            at += 4
            row.append(None if length == -1 else payload[at : at + length])
            at += max(length, 0)
        rows.append(row)


def _consumed(time: str, topic: str, partition: int, offset: int) -> Consumed:
    event = to_event(factories.referral(factories.person_key()), os.urandom(32))
    key, headers, value = encode(event._replace(time=datetime.fromisoformat(time)))
    return Consumed(decode(key, headers, value, fast=True), topic, partition, offset, value)


def test_each_row_holds_the_events_values_as_postgresql_reads_them_in_binary() -> None:
    times = {
        "2000-01-01T09:00:00+09:00": 0,  # the first instant of the supported range
        "2000-01-01T00:00:00.000001Z": 1,
        "2025-04-03T09:15:00.123456+09:00": 796_954_500_123_456,
        "2031-12-31T23:59:59.999999-03:30": 1_009_855_799_999_999,
        "2099-12-31T23:59:59.000001+14:00": 3_155_709_599_000_001,
    }
    batch = [_consumed(text, f"t.{i % 2}", i % 3, 2**40 + i) for i, text in enumerate(times)]
    rows = _rows(copy_payload(batch))
    assert len(rows) == len(batch)
    for row, c, micros in zip(rows, batch, times.values(), strict=True):
        e = c.event
        assert dict(zip(COLUMNS, row, strict=True)) == {
            "event_id": e.id.encode(),
            "subject": e.subject.encode(),
            "event_time": struct.pack(">q", micros),
            "source": e.source.encode(),
            "type": e.type.encode(),
            "family": e.family.value.encode(),
            "topic": c.topic.encode(),
            "partition": struct.pack(">i", c.partition),
            "offset": struct.pack(">q", c.offset),
            "data": c.value,
        }
        since = e.time - datetime(2000, 1, 1, tzinfo=UTC)
        assert (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds == micros


def test_a_time_in_a_zone_with_rules_is_written_as_its_instant() -> None:
    """Decoded times have fixed offsets (remembered per offset); a time built with a zone's rules (a
    handler's own, a test's) is written by subtraction, the same instant."""
    c = _consumed("2025-04-03T09:15:00.123456+09:00", "t", 0, 1)
    for zone in (ZoneInfo("Asia/Tokyo"), ZoneInfo("America/St_Johns"), UTC, timezone(timedelta(hours=-3))):
        when = datetime(2031, 7, 1, 12, 30, 5, 42, tzinfo=zone)
        (row,) = _rows(copy_payload([c._replace(event=c.event._replace(time=when))]))
        (micros,) = struct.unpack(">q", row[COLUMNS.index("event_time")] or b"")
        since = when - datetime(2000, 1, 1, tzinfo=UTC)
        assert micros == (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def test_an_empty_batch_is_a_copy_of_no_rows() -> None:
    assert _rows(copy_payload([])) == []
