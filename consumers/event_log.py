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
        # Column-wise arrays and one INSERT … SELECT unnest(…): one round trip per batch. The data column
        # takes the record's JSON bytes verbatim (already validated), cast to jsonb by PostgreSQL.
        events = [c.event for c in batch]
        await conn.execute(
            'INSERT INTO event_log (event_id, family, type, source, subject, event_time, topic, partition, "offset", '
            "data) SELECT i, f, t, s, sub, tm, tp, p, o, d::jsonb FROM unnest($1::text[], $2::text[], $3::text[], "
            "$4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::int[], $9::bigint[], $10::text[]) "
            "AS u(i, f, t, s, sub, tm, tp, p, o, d) ON CONFLICT (event_id) DO NOTHING",
            [e.id for e in events],
            [e.family.value for e in events],
            [e.type for e in events],
            [e.source for e in events],
            [e.subject for e in events],
            [e.time for e in events],
            [c.topic for c in batch],
            [c.partition for c in batch],
            [c.offset for c in batch],
            [c.value.decode() for c in batch],
        )
