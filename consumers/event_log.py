"""Walking-skeleton consumer: records every valid event in ``event_log`` (personal fields stay sealed).

The log is keyed by event id, so an event the outbox re-sent after a crash is recorded once. Like every
consumer it re-checks each event's ``ce_source`` against its data first (``consumers.provenance``): a
record is not trusted because it is on the topic, so one whose source does not own its codes, or an
erasure from anywhere but the hub's operator side, is dead-lettered with the rule, not recorded.

Erasure (``ittai.erasure.v1``) is recorded like any event and changes nothing here: the log is the record
of what travelled, verbatim, and an erased person's personal blocks in it are ciphertext no key opens any
more (the key was deleted in the erasure's transaction). Nothing else in a row identifies anyone.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import asyncpg

from consumers.provenance import check_sources
from consumers.runtime import Consumed
from infra.config import Settings
from infra.db import stage_ddl


class EventLogHandler:
    name = "event-log"

    def __init__(self, settings: Settings) -> None:
        self.topics: Sequence[str] = settings.event_topics

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        check_sources(batch)  # P2/P4/P9 again: a record is not trusted because it is on the topic
        # The data column keeps the record's JSON bytes as received (validated on decode; PostgreSQL
        # checks them again as json). Each batch is one binary COPY straight into the table. An event
        # already recorded (a re-send) makes that COPY fail on the key: then, and only then, the batch
        # goes through a staging table and one INSERT … ON CONFLICT DO NOTHING. The savepoint costs a
        # round trip per batch; the staging path cost PostgreSQL twice the work of every batch.
        payload = memoryview(copy_payload(batch))  # a view: asyncpg reads ``bytes`` as a file's path
        try:
            async with conn.transaction():
                await conn.copy_to_table("event_log", source=payload, columns=COLUMNS, format="binary")
        except asyncpg.UniqueViolationError:
            await conn.execute(stage_ddl("event_log_stage", _STAGE))
            await conn.copy_to_table("event_log_stage", source=payload, columns=COLUMNS, format="binary")
            await conn.execute(_INSERT)


# The rows are written in PostgreSQL's binary COPY format by this module, not by asyncpg's per-value
# encoders (3.4–4.5 µs of client CPU per row of ten values, measured on a loaded machine): a row is a
# fixed head (id, subject, time) packed at once, the bytes of its source, type, family, topic and
# partition, which repeat across a stream and are built once, and its offset and value. What
# goes in is what asyncpg would write: text as UTF-8, int4, int8, json as its text (json's binary form),
# and timestamptz as microseconds since 2000-01-01 UTC — every event's time is aware and within 2000–2099
# (``contracts.types.in_supported_range``, checked by both decode paths), so no sentinel or overflow rule
# applies. Connections and codecs are untouched (session 7 reverted a per-connection codec: a pooled
# connection carries it on to every other user).
COLUMNS = (
    "event_id",
    "subject",
    "event_time",
    "source",
    "type",
    "family",
    "topic",
    "partition",
    "offset",
    "data",
)
_FIELDS = len(COLUMNS)  # each row's field count, counted once
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # no flags, no header extension
_TRAILER = struct.pack(">h", -1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_DAY = _PG_EPOCH.toordinal()
_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_SECOND = timedelta(seconds=1)
_OFFSETS: dict[tzinfo | None, int] = {}  # a fixed offset's seconds (a few: +09:00, Z, …)
_HEADS: dict[tuple[int, int], struct.Struct] = {}  # by (id length, subject length): 32 and 32 on the hub
_TAIL = struct.Struct(">iqi")  # the offset's length and value, the value's length
# By (source, type, topic, partition): a few hundred sources × their types × six partitions; bounded.
_REPEATING: dict[tuple[str, str, str, int], bytes] = {}
_REPEATING_MAX = 16384


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">i", len(raw)) + raw


def _head(id_length: int, subject_length: int) -> struct.Struct:
    head = _HEADS.get((id_length, subject_length))
    if head is None:
        head = _HEADS[(id_length, subject_length)] = struct.Struct(f">hi{id_length}si{subject_length}siq")
    return head


_HEAD = _head(32, 32)  # an event id and a person key: 32 hex each


def _repeating(key: tuple[str, str, str, int], family: str) -> bytes:
    """The columns from ``source`` to ``partition`` of a row, remembered."""
    source, type_, topic, partition = key
    part = _text(source) + _text(type_) + _text(family) + _text(topic) + struct.pack(">ii", 4, partition)
    if len(_REPEATING) >= _REPEATING_MAX:
        _REPEATING.clear()
    _REPEATING[key] = part
    return part


def _fixed_offset(time: datetime) -> int | None:
    """The seconds of ``time``'s offset if it is a fixed one (every decoded time's; remembered), else None."""
    zone = time.tzinfo
    if type(zone) is not timezone:
        return None
    seconds = zone.utcoffset(None) // _ONE_SECOND
    if len(_OFFSETS) < 64:  # the offsets decoded times carry: a handful
        _OFFSETS[zone] = seconds
    return seconds


def copy_payload(batch: Sequence[Consumed]) -> bytes:
    """The batch's rows as one binary COPY of ``COLUMNS``."""
    parts = [_SIGNATURE]
    repeating, offsets = _REPEATING, _OFFSETS
    for event, topic, partition, offset, value in batch:
        event_id, subject = event.id.encode(), event.subject.encode()
        # Microseconds since 2000-01-01 UTC from the time's own fields and its fixed offset: a quarter of
        # the CPU of subtracting the epoch (which normalises both offsets) and dividing the timedelta.
        time = event.time
        seconds = offsets.get(time.tzinfo)
        if seconds is None:
            seconds = _fixed_offset(time)
        if seconds is None:
            micros = (time - _PG_EPOCH) // _ONE_MICROSECOND
        else:
            days = time.toordinal() - _PG_EPOCH_DAY
            clock = time.hour * 3_600 + time.minute * 60 + time.second
            micros = (days * 86_400 + clock - seconds) * 1_000_000 + time.microsecond
        key = (event.source, event.type, topic, partition)
        part = repeating.get(key)
        if part is None:
            part = _repeating(key, event.family.value)
        if len(event_id) == 32 == len(subject):  # the hub's: its lengths are the head's constants
            head = _HEAD.pack(_FIELDS, 32, event_id, 32, subject, 8, micros)
        else:
            head = _head(len(event_id), len(subject)).pack(
                _FIELDS, len(event_id), event_id, len(subject), subject, 8, micros
            )
        parts += (head, part, _TAIL.pack(8, offset, len(value)), value)
    parts.append(_TRAILER)
    return b"".join(parts)


_STAGE = (
    "event_id text, subject text, event_time timestamptz, source text, type text, family text, topic text, "
    'partition int, "offset" bigint, data json'
)
_INSERT = (
    'INSERT INTO event_log (event_id, source, type, subject, event_time, family, topic, partition, "offset", '
    'data) SELECT event_id, source, type, subject, event_time, family, topic, partition, "offset", '
    "data FROM event_log_stage ON CONFLICT (event_id) DO NOTHING"
)
