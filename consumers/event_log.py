"""Walking-skeleton consumer: records every valid event in ``event_log`` (personal fields stay sealed).

The insert is keyed by event id, so an event the outbox re-sent after a crash is recorded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from consumers.runtime import Consumed
from hub.config import Settings


class EventLogHandler:
    name = "event-log"

    def __init__(self, settings: Settings) -> None:
        self.topics: Sequence[str] = settings.event_topics

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        cols: tuple[list[object], ...] = ([], [], [], [], [], [], [], [], [], [])
        for c in batch:
            e = c.event
            row = (
                e.id,
                e.family.value,
                e.type,
                e.source,
                e.subject,
                e.time,
                c.topic,
                c.partition,
                c.offset,
                e.data.model_dump(mode="json", exclude_none=True),
            )
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        await conn.execute(
            'INSERT INTO event_log (event_id, family, type, source, subject, event_time, topic, partition, "offset", '
            "data) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
            "$6::timestamptz[], $7::text[], $8::int[], $9::bigint[], $10::jsonb[]) ON CONFLICT (event_id) DO NOTHING",
            *cols,
        )
