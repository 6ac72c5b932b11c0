"""Transactional outbox: accepting an event is one row in PostgreSQL; a relay publishes it to Kafka.

Writers call ``enqueue`` inside their own transaction, so an event is accepted exactly when whatever
accepted it commits — whether or not the broker is up. The relay takes pending rows in id order under
an advisory lock (one relay at a time keeps the order), publishes them with an idempotent ``acks=all``
producer, and stamps them published. A crash between Kafka's acknowledgement and the stamp re-sends a
batch; consumers key their effects by event id, so a re-sent event takes effect once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from contracts.envelope import Event, encode, topic_for
from infra import metrics
from infra.config import Settings
from infra.kafka import start_producer
from infra.logging import get_logger

log = get_logger("outbox")

_RELAY_LOCK = 7_201_102
NOTIFY_CHANNEL = "ittai_outbox"


async def enqueue(conn: asyncpg.Connection, events: Sequence[Event], *, origin: str, namespace: str) -> int:
    """Add events to the outbox in the caller's transaction; returns how many were added."""
    if not events:
        return 0
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
    for event in events:
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
    await conn.execute(
        "INSERT INTO outbox (topic, key, headers, value, event_id, origin) "
        "SELECT * FROM unnest($1::text[], $2::bytea[], $3::jsonb[], $4::bytea[], $5::text[], $6::text[])",
        *columns,
    )
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    for family, count in Counter(event.family.value for event in events).items():
        metrics.EVENTS_ACCEPTED.labels(origin, family).inc(count)
    return len(events)


class OutboxRelay:
    """Publishes pending outbox rows in order. Run one per database (the advisory lock enforces it)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self.published = 0

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        async with self.pool.acquire() as lock_conn:
            await lock_conn.execute("SELECT pg_advisory_lock($1)", _RELAY_LOCK)
            await lock_conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                await self._loop()
            finally:
                await lock_conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", _RELAY_LOCK)
                if self._producer is not None:
                    await self._producer.stop()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                sent = await self.publish_pending()
                backoff = 0.2
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("broker unavailable, outbox keeps events", error=type(exc).__name__)
                metrics.TRANSIENT_RETRIES.labels("outbox-relay").inc()
                await self._drop_producer()
                await self._wait(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)
                continue
            if sent == 0:
                await self._wait(self.settings.outbox_poll_interval_s * 5)

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await start_producer(
                self.settings, linger_ms=5, max_batch_size=256 * 1024, request_timeout_ms=15000
            )
        return self._producer

    async def _drop_producer(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.stop()
            self._producer = None

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, topic, key, headers, value FROM outbox "
                "WHERE published_at IS NULL ORDER BY id LIMIT $1",
                self.settings.outbox_batch_size,
            )
            if not rows:
                metrics.OUTBOX_BACKLOG.set(0)
                return 0
            producer = await self._ensure_producer()
            futures = []
            for row in rows:
                headers = [(h, v.encode()) for h, v in row["headers"].items()]
                futures.append(
                    await producer.send(row["topic"], value=row["value"], key=row["key"], headers=headers)
                )
            await asyncio.gather(*futures)
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
            )
            for topic, count in Counter(row["topic"] for row in rows).items():
                metrics.OUTBOX_PUBLISHED.labels(topic).inc(count)
            self.published += len(rows)
            return len(rows)

    async def drain(self, timeout_s: float = 60.0) -> int:
        """Publish everything pending now (used by the simulator and tests); returns rows published."""
        total = 0
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            sent = await self.publish_pending()
            total += sent
            if sent == 0:
                return total
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"outbox not drained within {timeout_s}s")

    async def close(self) -> None:
        await self._drop_producer()
