"""The outbox's rows: how an accepted event is written to the ``outbox`` table (the relay in
``producers.outbox`` publishes them). Here, below producers and consumers, because two kinds of caller
write them: the acceptance path (``producers.outbox.enqueue``) and the hub's own operator acts that are
events too — an erasure (``consumers.shared_view.erasure``) publishes ``ittai.erasure.v1`` in the
transaction that deletes the person's data key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg

from contracts.envelope import Event, encode, topic_for
from infra import metrics
from infra.db import OUTBOX_CHANNEL
from infra.tracing import current_traceparent, current_tracestate


async def insert_events(
    conn: asyncpg.Connection, events: Sequence[Event], *, origin: str, namespace: str
) -> int:
    """Add events to the outbox in the caller's transaction; returns how many were added.

    An event carries the trace context of the request that accepted it (CloudEvents ``traceparent`` and
    ``tracestate``, stored in the row's headers): its own where the caller set one, else the span in
    progress."""
    if not events:
        return 0
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
    traceparent = current_traceparent()
    tracestate = current_tracestate() if traceparent is not None else None
    for event in events:
        if event.traceparent is None and traceparent is not None:
            event = event._replace(traceparent=traceparent, tracestate=tracestate)
        key, headers, value = encode(event)
        for column, item in zip(
            columns,
            (
                topic_for(event.family, namespace),
                key,
                {h: v.decode() for h, v in headers},
                value,
                event.id,
                origin,
            ),
            strict=True,
        ):
            column.append(item)
    # The relay's wake-up in the same statement (one round trip less per commit): a data-modifying WITH
    # runs to completion whatever the outer query reads, and a notification is sent at commit either way.
    await conn.execute(
        "WITH rows AS (INSERT INTO outbox (topic, key, headers, value, event_id, origin) "
        "SELECT * FROM unnest($1::text[], $2::bytea[], $3::jsonb[], $4::bytea[], $5::text[], $6::text[])) "
        "SELECT pg_notify($7, '')",
        *columns,
        OUTBOX_CHANNEL,
    )
    for family, count in Counter(event.family.value for event in events).items():
        metrics.EVENTS_ACCEPTED.labels(origin, family).inc(count)
    return len(events)
