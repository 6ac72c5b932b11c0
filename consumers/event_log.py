"""Walking-skeleton consumer: records every valid event in ``event_log`` (personal fields stay sealed).

The insert is keyed by event id, so an event the outbox re-sent after a crash is recorded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from consumers.runtime import Consumed
from infra.config import Settings


class EventLogHandler:
    name = "event-log"

    def __init__(self, settings: Settings) -> None:
        self.topics: Sequence[str] = settings.event_topics

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        # One row tuple per record in one pass, turned into column arrays by zip (C), and one
        # INSERT … SELECT unnest(…): one round trip per batch. The data column takes the record's JSON
        # verbatim (validated on decode), cast to jsonb by PostgreSQL.
        rows = [
            (
                e.id,
                e.family.value,
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
        ]
        await conn.execute(_INSERT, *map(list, zip(*rows, strict=True)))


_INSERT = (
    'INSERT INTO event_log (event_id, family, type, source, subject, event_time, topic, partition, "offset", '
    "data) SELECT i, f, t, s, sub, tm, tp, p, o, d::jsonb FROM unnest($1::text[], $2::text[], $3::text[], "
    "$4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::int[], $9::bigint[], $10::text[]) "
    "AS u(i, f, t, s, sub, tm, tp, p, o, d) ON CONFLICT (event_id) DO NOTHING"
)
