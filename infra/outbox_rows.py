"""The outbox's rows: how an accepted event is written to the ``outbox`` table (the relay in
``producers.outbox`` publishes them). Here, below producers and consumers, because two kinds of caller
write them: the acceptance path (``producers.outbox.accept_sealed`` and a file chunk's
``accept_file_rows``, whose SQL functions take ``outbox_columns``) and the hub's own operator acts that are
events too — an erasure (``consumers.shared_view.erasure``, ``insert_events``) publishes
``ittai.erasure.v1`` in the transaction that deletes the person's data key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

import asyncpg

from contracts.envelope import Event, Family, data_value, header_texts, topic_for
from infra import metrics
from infra.db import OUTBOX_CHANNEL
from infra.tracing import current_trace_context


async def insert_events(
    conn: asyncpg.Connection, events: Sequence[Event], *, origin: str, namespace: str
) -> int:
    """Add events to the outbox in the caller's transaction; returns how many were added.

    An event carries the trace context of the request that accepted it (CloudEvents ``traceparent`` and
    ``tracestate``, stored in the row's headers): its own where the caller set one, else the span in
    progress."""
    if not events:
        return 0
    assert conn.is_in_transaction(), "outbox rows are written in the accepting transaction"
    topics, headers, values, ids = outbox_columns(events, namespace)
    keys = [event.subject.encode() for event in events]
    await conn.execute(_FROM_ARRAYS, topics, keys, headers, values, ids, origin, OUTBOX_CHANNEL)
    count_accepted(origin, events)
    return len(events)


_H = TypeVar("_H")


@overload
def outbox_columns(
    events: Sequence[Event], namespace: str, value_of: Callable[[Event], bytes] = data_value
) -> tuple[list[str], list[dict[str, str]], list[bytes], list[str]]: ...


@overload
def outbox_columns(
    events: Sequence[Event],
    namespace: str,
    value_of: Callable[[Event], bytes],
    headers_of: Callable[[Event], _H],
) -> tuple[list[str], list[_H], list[bytes], list[str]]: ...


def outbox_columns(
    events: Sequence[Event],
    namespace: str,
    value_of: Callable[[Event], bytes] = data_value,
    headers_of: Callable[[Event], Any] = header_texts,
) -> tuple[list[str], list[Any], list[bytes], list[str]]:
    """The outbox columns of ``events`` (topic, headers, value, event id; the key is the subject), with the
    trace context as ``insert_events`` documents it: for ``insert_events`` and for a caller that writes them
    in a statement of its own (``producers.outbox.accept_sealed``). ``value_of``: ``data_value``, or a
    caller's quicker spelling of its bytes (a file chunk's, ``csv_chunks.FamilyRows.value_of``);
    ``headers_of``: ``header_texts``, or a caller's spelling of them (a file chunk's JSON text,
    ``csv_chunks.HeadersJson``)."""
    traceparent, tracestate = current_trace_context()
    topics: dict[Family, str] = {}
    topic_of: list[str] = []
    headers: list[Any] = []
    values: list[bytes] = []
    ids: list[str] = []
    for event in events:
        if event.traceparent is None and traceparent is not None:
            event = event._replace(traceparent=traceparent, tracestate=tracestate)
        topic_of.append(
            topics.get(event.family) or topics.setdefault(event.family, topic_for(event.family, namespace))
        )
        headers.append(headers_of(event))
        values.append(value_of(event))
        ids.append(event.id)
    return topic_of, headers, values, ids


def count_accepted(origin: str, events: Sequence[Event]) -> None:
    for family, count in Counter(event.family.value for event in events).items():
        metrics.EVENTS_ACCEPTED.labels(origin, family).inc(count)


# The relay's wake-up in the same statement (one round trip less per commit): a data-modifying WITH runs
# to completion whatever the outer query reads, and a notification is sent at commit either way.
_FROM_ARRAYS = (
    "WITH rows AS (INSERT INTO outbox (topic, key, headers, value, event_id, origin) "
    "SELECT t.*, $6 FROM unnest($1::text[], $2::bytea[], $3::json[], $4::bytea[], $5::text[]) AS t) "
    "SELECT pg_notify($7, '')"
)
