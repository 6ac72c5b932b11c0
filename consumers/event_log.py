"""Walking-skeleton consumer: records every valid event in ``event_log`` (personal fields stay sealed).

The insert is keyed by event id, so an event the outbox re-sent after a crash is recorded once.

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
        # Set-based: the batch is copied (binary COPY) into a staging table and inserted with one
        # INSERT … SELECT. The data column keeps the record's JSON as received (validated on decode).
        await copy_to_stage(
            conn,
            "event_log_stage",
            _STAGE,
            [
                (
                    e.id,
                    e.family,  # a StrEnum: already its text
                    e.type,
                    e.source,
                    e.subject,
                    e.time,
                    c.topic,
                    c.partition,
                    c.offset,
                    c.value.decode(),
                )
                for c in batch
                for e in (c.event,)
            ],
        )
        await conn.execute(_INSERT)


_STAGE = (
    "event_id text, family text, type text, source text, subject text, event_time timestamptz, topic text, "
    'partition int, "offset" bigint, data text'
)
_INSERT = (
    'INSERT INTO event_log (event_id, family, type, source, subject, event_time, topic, partition, "offset", '
    'data) SELECT event_id, family, type, source, subject, event_time, topic, partition, "offset", '
    "data::json FROM event_log_stage ON CONFLICT (event_id) DO NOTHING"
)
