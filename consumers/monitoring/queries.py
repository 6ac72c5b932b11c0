"""PostgreSQL reads behind the console: positions, outbox, rejections, samples and other teams' views.

Tables and views that other components create (``adapter_rejections``, ``v_feed_status``,
``v_consent_stats``, ``v_shared_view_latency``) may not exist in a given deployment yet: their readers
return ``None``, which the console shows as "not available". Every read is scoped to the topics of the
console's namespace, so one database can hold several namespaces (tests do).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar

import asyncpg

from domain.monitoring import LetterRow, OffsetRow, Sample

T = TypeVar("T")


async def optional(read: Callable[[], Awaitable[T]]) -> T | None:
    """``None`` when the relation or column the read needs is not there (yet)."""
    try:
        return await read()
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        return None


async def offset_rows(conn: asyncpg.Connection, topics: Sequence[str]) -> list[OffsetRow]:
    rows = await conn.fetch(
        "SELECT consumer, topic, partition, next_offset, last_event_time, updated_at FROM consumer_offsets "
        "WHERE topic = ANY($1::text[])",
        list(topics),
    )
    return [OffsetRow(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class AdapterFigures:
    """An origin of accepted events (an adapter, the simulator): ``outbox.origin``."""

    origin: str
    last_accepted: datetime | None
    backlog: int


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    backlog: int
    oldest_pending: datetime | None
    adapters: tuple[AdapterFigures, ...]


async def outbox_figures(conn: asyncpg.Connection, topics: Sequence[str]) -> OutboxFigures:
    # Distinct origins by a loose index scan on (origin, accepted_at), then the newest row of each:
    # the outbox keeps every accepted event, so a GROUP BY over it would grow without bound.
    rows = await conn.fetch(
        """
        WITH RECURSIVE origins AS (
            SELECT min(origin) AS origin FROM outbox
            UNION ALL
            SELECT (SELECT min(origin) FROM outbox WHERE origin > o.origin) FROM origins o
            WHERE o.origin IS NOT NULL
        )
        SELECT o.origin,
               (SELECT accepted_at FROM outbox x WHERE x.origin = o.origin AND x.topic = ANY($1::text[])
                ORDER BY accepted_at DESC LIMIT 1) AS last_accepted
        FROM origins o WHERE o.origin IS NOT NULL
        """,
        list(topics),
    )
    pending = await conn.fetch(
        "SELECT origin, count(*) AS n, min(accepted_at) AS oldest FROM outbox_pending JOIN outbox USING (id) "
        "WHERE topic = ANY($1::text[]) GROUP BY origin",
        list(topics),
    )
    backlog = {r["origin"]: r["n"] for r in pending}
    adapters = tuple(
        AdapterFigures(r["origin"], r["last_accepted"], backlog.get(r["origin"], 0))
        for r in rows
        if r["last_accepted"] is not None or r["origin"] in backlog
    )
    oldest = min((r["oldest"] for r in pending), default=None)
    return OutboxFigures(sum(backlog.values()), oldest, adapters)


@dataclass(frozen=True, slots=True)
class RejectionCount:
    adapter: str
    family: str
    rule: str
    count: int
    last_24h: int
    last_at: datetime
    rules: int = 1  # more than 1: the rarest rules, folded into one row


# The console lists this many rules by frequency and folds the rest into one row, so the page stays
# small and the totals stay right whatever the register holds.
MAX_REJECTION_RULES = 50


async def rejections(conn: asyncpg.Connection) -> list[RejectionCount] | None:
    async def read() -> list[RejectionCount]:
        rows = await conn.fetch(
            """
            WITH g AS (
                SELECT adapter, family, rule, count(*) AS count,
                       count(*) FILTER (WHERE at > now() - interval '24 hours') AS last_24h,
                       max(at) AS last_at
                FROM adapter_rejections GROUP BY adapter, family, rule
            ), ranked AS (
                SELECT *, row_number() OVER (ORDER BY count DESC, adapter, family, rule) AS n FROM g
            )
            SELECT adapter, family, rule, count, last_24h, last_at, 1 AS rules
            FROM ranked WHERE n <= $1
            UNION ALL
            SELECT '', '', '', sum(count)::bigint, sum(last_24h)::bigint, max(last_at), count(*)::int
            FROM ranked WHERE n > $1 HAVING count(*) > 0
            """,
            MAX_REJECTION_RULES,
        )
        return [RejectionCount(**dict(r)) for r in rows]

    return await optional(read)


@dataclass(frozen=True, slots=True)
class FeedStatus:
    authority: str
    month: str
    revision: int
    built_at: datetime | None
    late_events_waiting: int


async def feed_status(conn: asyncpg.Connection) -> list[FeedStatus] | None:
    async def read() -> list[FeedStatus]:
        rows = await conn.fetch(
            "SELECT authority, month, revision, built_at, late_events_waiting FROM v_feed_status "
            "ORDER BY authority, month"
        )
        return [
            FeedStatus(
                authority=str(r["authority"]),
                month=r["month"].isoformat()[:7] if isinstance(r["month"], date) else str(r["month"]),
                revision=int(r["revision"] or 0),
                built_at=r["built_at"],
                late_events_waiting=int(r["late_events_waiting"] or 0),
            )
            for r in rows
        ]

    return await optional(read)


@dataclass(frozen=True, slots=True)
class FeedPending:
    """A feed with events applied since its last revision (``feed_dirty``), oldest first marked when."""

    authority: str
    month: str
    since: datetime


async def feed_pending(conn: asyncpg.Connection) -> list[FeedPending] | None:
    async def read() -> list[FeedPending]:
        rows = await conn.fetch(
            "SELECT authority, month, min(marked_at) AS since FROM feed_dirty GROUP BY authority, month"
        )
        return [FeedPending(str(r["authority"]), str(r["month"]), r["since"]) for r in rows]

    return await optional(read)


@dataclass(frozen=True, slots=True)
class ConsentStats:
    active: int
    withdrawn: int
    erased: int
    withdrawal_p50_ms: float | None
    withdrawal_max_ms: float | None


async def consent_stats(conn: asyncpg.Connection) -> ConsentStats | None:
    async def read() -> ConsentStats | None:
        r = await conn.fetchrow(
            "SELECT active, withdrawn, erased, withdrawal_p50_ms, withdrawal_max_ms FROM v_consent_stats"
        )
        if r is None:
            return ConsentStats(0, 0, 0, None, None)
        return ConsentStats(
            int(r["active"] or 0),
            int(r["withdrawn"] or 0),
            int(r["erased"] or 0),
            r["withdrawal_p50_ms"],
            r["withdrawal_max_ms"],
        )

    return await optional(read)


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float | None
    p95_ms: float | None
    samples: int


async def shared_view_latency(conn: asyncpg.Connection) -> Latency | None:
    async def read() -> Latency:
        r = await conn.fetchrow("SELECT p50_ms, p95_ms, samples FROM v_shared_view_latency")
        if r is None:
            return Latency(None, None, 0)
        return Latency(r["p50_ms"], r["p95_ms"], int(r["samples"] or 0))

    return await optional(read)


@dataclass(frozen=True, slots=True)
class SlowEvent:
    """An event slow from acceptance to the shared view, with the trace context it was accepted in."""

    event_id: str
    family: str
    latency_ms: float
    traceparent: str | None  # shown as its trace id only when well-formed (``infra.tracing.trace_id``)


async def slowest_events(
    conn: asyncpg.Connection, topics: Sequence[str], *, limit: int = 10
) -> list[SlowEvent] | None:
    """The events of ``topics`` that took longest from acceptance (the outbox row) to the shared view,
    slowest first: ids, family, milliseconds and trace context; nothing of the person."""

    async def read() -> list[SlowEvent]:
        rows = await conn.fetch(
            "SELECT e.event_id, e.family, extract(epoch FROM (e.applied_at - o.accepted_at)) * 1000 AS ms, "
            "o.headers->>'ce_traceparent' AS traceparent "
            "FROM sv_events_applied e JOIN outbox o ON o.event_id = e.event_id "
            "WHERE e.applied_at IS NOT NULL AND o.topic = ANY($1::text[]) ORDER BY ms DESC LIMIT $2",
            list(topics),
            limit,
        )
        return [SlowEvent(r["event_id"], r["family"], float(r["ms"]), r["traceparent"]) for r in rows]

    return await optional(read)


# --- samples ---------------------------------------------------------------------------------------


async def record_samples(conn: asyncpg.Connection, totals: dict[str, int], *, keep_hours: float) -> None:
    await conn.executemany(
        "INSERT INTO topic_offset_samples (topic, sampled_at, end_total) VALUES ($1, now(), $2) "
        "ON CONFLICT DO NOTHING",
        list(totals.items()),
    )
    await conn.execute(
        "DELETE FROM topic_offset_samples WHERE sampled_at < now() - make_interval(secs => $1)",
        keep_hours * 3600,
    )


async def samples(
    conn: asyncpg.Connection, topics: Sequence[str], *, minutes: float
) -> dict[str, list[Sample]]:
    rows = await conn.fetch(
        "SELECT topic, sampled_at, end_total FROM topic_offset_samples WHERE topic = ANY($1::text[]) "
        "AND sampled_at > now() - make_interval(secs => $2) ORDER BY sampled_at",
        list(topics),
        minutes * 60,
    )
    out: dict[str, list[Sample]] = {t: [] for t in topics}
    for r in rows:
        out[r["topic"]].append(Sample(r["sampled_at"], r["end_total"]))
    return out


# --- dead letters ----------------------------------------------------------------------------------


async def open_letters(
    conn: asyncpg.Connection, topics: Sequence[str], *, limit: int = 500
) -> list[LetterRow]:
    rows = await conn.fetch(
        """
        SELECT d.id, d.consumer, d.source_topic, d.source_partition, d.source_offset, d.reason,
               d.dead_lettered_at, l.headers
        FROM dead_letters d
        LEFT JOIN dead_letter_resolutions r ON r.dead_letter_id = d.id
        LEFT JOIN LATERAL (
            SELECT headers FROM dead_letter_locations l
            WHERE l.source_topic = d.source_topic AND l.source_partition = d.source_partition
              AND l.source_offset = d.source_offset AND l.consumer = d.consumer
              AND l.digest = d.digest  -- the record the consumer refused, not one planted at its position
            LIMIT 1
        ) l ON true
        WHERE r.dead_letter_id IS NULL AND d.source_topic = ANY($1::text[])
        ORDER BY d.id DESC LIMIT $2
        """,
        list(topics),
        limit,
    )
    return [
        LetterRow(
            id=r["id"],
            consumer=r["consumer"],
            source_topic=r["source_topic"],
            source_partition=r["source_partition"],
            source_offset=r["source_offset"],
            reason=r["reason"],
            dead_lettered_at=r["dead_lettered_at"],
            located=r["headers"] is not None,
            headers=r["headers"] or {},
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class LetterCounts:
    open: int  # register rows: one per consumer that rejected a record
    open_messages: int  # distinct source records among them: what a redrive re-publishes
    redriven: int
    discarded: int


async def letter_counts(conn: asyncpg.Connection, topics: Sequence[str]) -> LetterCounts:
    r = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE r.dead_letter_id IS NULL) AS open, "
        "count(DISTINCT (d.source_topic, d.source_partition, d.source_offset)) "
        "FILTER (WHERE r.dead_letter_id IS NULL) AS open_messages, "
        "count(*) FILTER (WHERE r.resolution = 'redriven') AS redriven, "
        "count(*) FILTER (WHERE r.resolution = 'discarded') AS discarded "
        "FROM dead_letters d LEFT JOIN dead_letter_resolutions r ON r.dead_letter_id = d.id "
        "WHERE d.source_topic = ANY($1::text[])",
        list(topics),
    )
    assert r is not None
    return LetterCounts(r["open"], r["open_messages"], r["redriven"], r["discarded"])


@dataclass(frozen=True, slots=True)
class Action:
    id: int
    at: datetime
    client_id: str
    actor: str
    action: str
    target: str
    outcome: str
    detail: str


async def record_action(
    conn: asyncpg.Connection,
    *,
    client_id: str,
    actor: str,
    action: str,
    target: str = "",
    outcome: str,
    detail: str = "",
) -> int:
    action_id: int = await conn.fetchval(
        "INSERT INTO console_actions (client_id, actor, action, target, outcome, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        client_id,
        actor,
        action,
        target,
        outcome,
        detail,
    )
    return action_id


async def recent_actions(conn: asyncpg.Connection, *, limit: int = 200) -> list[Action]:
    rows = await conn.fetch(
        "SELECT id, at, client_id, actor, action, target, outcome, detail FROM console_actions "
        "ORDER BY id DESC LIMIT $1",
        limit,
    )
    return [Action(**dict(r)) for r in rows]
