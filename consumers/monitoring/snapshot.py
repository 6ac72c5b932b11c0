"""One consistent look at the hub for operators: what the console pages and ``hub status`` show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiokafka.errors import KafkaError

from consumers.monitoring import queries
from consumers.monitoring.kafka_probe import KafkaProbe
from domain.calendar import parse_month
from domain.feed import cutoff_instant
from domain.monitoring import ConsumerFigures, TopicFigures, consumer_lag
from infra.config import Settings

RATE_WINDOWS_S = (60.0, 300.0)
CHART_MINUTES = 30.0


def monitored_topics(settings: Settings) -> list[str]:
    return [*settings.event_topics, settings.deadletter_topic, settings.feed_topic]


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    topics: tuple[TopicFigures, ...]
    consumers: tuple[ConsumerFigures, ...]
    outbox: queries.OutboxFigures
    rejections: tuple[queries.RejectionCount, ...] | None
    letters: queries.LetterCounts
    feeds: tuple[queries.FeedStatus, ...] | None
    consent: queries.ConsentStats | None
    latency: queries.Latency | None
    kafka_error: str | None = None  # Kafka could not be read: offsets and lag are missing, not zero
    # Seconds each feed of a closed month has waited for its next revision: since the cutoff, or since
    # the first event after the cutoff (None: the feed component is not installed).
    feeds_overdue_s: tuple[float, ...] | None = None
    # The slowest events from acceptance to the shared view, with their trace contexts (None: no view).
    slowest: tuple[queries.SlowEvent, ...] | None = None

    @property
    def total_lag(self) -> int:
        return sum(c.total_lag for c in self.consumers)

    def topic(self, name: str) -> TopicFigures:
        return next(t for t in self.topics if t.topic == name)


async def collect(settings: Settings, pool: asyncpg.Pool, probe: KafkaProbe) -> Snapshot:
    names = monitored_topics(settings)
    kafka_error = None
    try:
        offsets = await probe.offsets(names)
    except (KafkaError, OSError, TimeoutError) as exc:
        offsets, kafka_error = {}, type(exc).__name__
    async with pool.acquire() as conn:
        samples = await queries.samples(conn, names, minutes=CHART_MINUTES)
        topics = {t: TopicFigures(t, offsets.get(t, ()), tuple(samples.get(t, ()))) for t in names}
        rows = await queries.offset_rows(conn, names)
        outbox = await queries.outbox_figures(conn, settings.event_topics)
        rejections = await queries.rejections(conn)
        letters = await queries.letter_counts(conn, settings.event_topics)
        feeds = await queries.feed_status(conn)
        consent = await queries.consent_stats(conn)
        latency = await queries.shared_view_latency(conn)
        slowest = await queries.slowest_events(conn, settings.event_topics)
        pending = await queries.feed_pending(conn)
    now = datetime.now(UTC)
    return Snapshot(
        taken_at=now,
        topics=tuple(topics.values()),
        consumers=tuple(consumer_lag(rows, topics)),
        outbox=outbox,
        rejections=tuple(rejections) if rejections is not None else None,
        letters=letters,
        feeds=tuple(feeds) if feeds is not None else None,
        consent=consent,
        latency=latency,
        kafka_error=kafka_error,
        feeds_overdue_s=None if pending is None else overdue_seconds(pending, settings.feed_cutoff_day, now),
        slowest=tuple(slowest) if slowest is not None else None,
    )


def overdue_seconds(pending: list[queries.FeedPending], cutoff_day: int, now: datetime) -> tuple[float, ...]:
    """How long each pending feed of a closed month has waited past its cutoff (open months: not due)."""
    out = []
    for p in pending:
        cutoff = cutoff_instant(parse_month(p.month), cutoff_day)
        if now >= cutoff:
            out.append((now - max(cutoff, p.since)).total_seconds())
    return tuple(out)
