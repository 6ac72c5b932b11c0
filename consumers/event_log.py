"""Walking-skeleton consumer: records every valid event in ``event_log`` (personal fields stay sealed).

The log is keyed by event id, so an event the outbox re-sent after a crash is recorded once.

Erasure (``ittai.erasure.v1``) is recorded like any event and changes nothing here: the log is the record
of what travelled, verbatim, and an erased person's personal blocks in it are ciphertext no key opens any
more (the key was deleted in the erasure's transaction). Nothing else in a row identifies anyone.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from consumers.runtime import Consumed
from infra.config import Settings
from infra.db import copy_to_stage


class EventLogHandler:
    name = "event-log"

    def __init__(self, settings: Settings) -> None:
        self.topics: Sequence[str] = settings.event_topics

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        # The data column keeps the record's JSON bytes as received (validated on decode; PostgreSQL
        # checks them again as json). Each batch is one binary COPY straight into the table. An event
        # already recorded (a re-send) makes that COPY fail on the key: then, and only then, the batch
        # goes through a staging table and one INSERT … ON CONFLICT DO NOTHING. The savepoint costs a
        # round trip per batch; the staging path cost PostgreSQL twice the work of every batch.
        # A row is the event's first six fields and the record's place and bytes: two slices of tuples
        # (``_COLUMNS`` is in that order), no attribute read per column.
        rows = [c[0][:6] + c[1:] for c in batch]
        try:
            async with conn.transaction():
                await conn.copy_records_to_table("event_log", columns=_COLUMNS, records=rows)
        except asyncpg.UniqueViolationError:
            await copy_to_stage(conn, "event_log_stage", _STAGE, rows)
            await conn.execute(_INSERT)


# The order of ``Event``'s first six fields, then ``Consumed``'s after the event (held by a test).
_COLUMNS = (
    "event_id",
    "source",
    "type",
    "subject",
    "event_time",
    "family",
    "topic",
    "partition",
    "offset",
    "data",
)
_STAGE = (
    "event_id text, source text, type text, subject text, event_time timestamptz, family text, topic text, "
    'partition int, "offset" bigint, data json'
)
_INSERT = (
    'INSERT INTO event_log (event_id, source, type, subject, event_time, family, topic, partition, "offset", '
    'data) SELECT event_id, source, type, subject, event_time, family, topic, partition, "offset", '
    "data FROM event_log_stage ON CONFLICT (event_id) DO NOTHING"
)
