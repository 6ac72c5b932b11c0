"""The consumer runtime every consumer runs on: batches in, one PostgreSQL transaction out.

Why not FastStream's subscriber here: its ack policies commit offsets to Kafka, and the effect of a
batch must be committed *together with* the offsets that produced it, in PostgreSQL. So the runtime
drives aiokafka (the client FastStream wraps) directly:

* positions live in ``consumer_offsets`` and are restored on every partition assignment, so a
  redelivered or replayed record never takes effect twice (exactly-once effect);
* each batch: decode → dead-letter the poison → ``handler.handle`` + dead-letter register + positions in
  one transaction → best-effort Kafka commit (only so that ordinary lag tools see progress);
* transient failures (database or broker unreachable) retry the same batch with capped exponential
  backoff and are never dead-lettered; a handler that rejects one event (a bug or a data conflict) is
  isolated by replaying the batch one event at a time, and only that event is dead-lettered;
* SIGTERM finishes the batch in hand, commits it, and leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from consumers.deadletter import DeadLetter, DeadLetterPublisher
from contracts.envelope import Event, PoisonMessage, decode
from hub import metrics
from hub.config import Settings
from hub.logging import get_logger

log = get_logger("consumer")

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    KafkaError,
)


@dataclass(frozen=True, slots=True)
class Consumed:
    """A decoded event with where it was read from."""

    event: Event
    topic: str
    partition: int
    offset: int
    value: bytes  # the record's JSON bytes as received, for consumers that store them verbatim


class BatchHandler(Protocol):
    """A consumer's effect. ``handle`` runs inside the batch's transaction and must not commit."""

    name: str
    topics: Sequence[str]

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None: ...


class HandlerRejected(Exception):
    """Raised by a handler for an event it can never apply; the event is dead-lettered with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _RestorePositions(ConsumerRebalanceListener):
    def __init__(self, runtime: ConsumerRuntime, consumer: AIOKafkaConsumer) -> None:
        self._runtime = runtime
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # The batch in flight must commit (effect + positions) before another member may take its
        # partitions, or both would apply it.
        await self._runtime.flush()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runtime.restore_positions(self._consumer, assigned)


@dataclass
class _Batch:
    records: list[ConsumerRecord]
    good: list[Consumed]
    poison: list[DeadLetter]
    started: float


class ConsumerRuntime:
    def __init__(
        self,
        handler: BatchHandler,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        group_id: str | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.pool = pool
        self.group_id = group_id or handler.name
        self._consumer: AIOKafkaConsumer | None = None
        self._deadletters = DeadLetterPublisher(settings, consumer=handler.name)
        self._stop = asyncio.Event()
        self._inflight: asyncio.Task[None] | None = None
        self.processed = 0
        self.dead_lettered = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self._start_with_retry()
        assert self._consumer is not None
        log.info("consumer started", consumer=self.handler.name, topics=list(self.handler.topics))
        try:
            # Two-stage pipeline: batch N commits in PostgreSQL (a task) while batch N+1 is fetched and
            # decoded here, so decoding (our CPU) overlaps the database's work on the other core.
            while not self._stop.is_set():
                fetched = await self._consumer.getmany(
                    timeout_ms=self.settings.batch_timeout_ms, max_records=self.settings.batch_max_records
                )
                records = [r for part in fetched.values() for r in part]
                if not records:
                    await self.flush()
                    continue
                batch = self._decode(records)
                await self.flush()
                self._inflight = asyncio.create_task(self._finish(batch))
            await self.flush()
        finally:
            if self._inflight is not None and not self._inflight.done():
                self._inflight.cancel()  # only on an error path: uncommitted work is redelivered
            await self._consumer.stop()
            await self._deadletters.stop()
            log.info(
                "consumer stopped",
                consumer=self.handler.name,
                processed=self.processed,
                dead_lettered=self.dead_lettered,
            )

    async def _start_with_retry(self) -> None:
        backoff = 0.2
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                fetch_max_bytes=32 * 1024 * 1024,
            )
            consumer.subscribe(list(self.handler.topics), listener=_RestorePositions(self, consumer))
            try:
                await consumer.start()
                await self._deadletters.start()
                self._consumer = consumer
                return
            except KafkaError as exc:
                await consumer.stop()
                log.warning(
                    "kafka unavailable, retrying", consumer=self.handler.name, error=type(exc).__name__
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)

    async def restore_positions(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        stored = await self._with_retry(self._load_positions)
        fresh = []
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, offset)
        if fresh:  # one offset lookup for all: one per partition costs ~0.5 s each
            await consumer.seek_to_beginning(*fresh)
        log.info("partitions assigned", consumer=self.handler.name, partitions=len(assigned))

    async def _load_positions(self) -> dict[tuple[str, int], int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1",
                self.handler.name,
            )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    # -- one batch ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until the batch in flight (if any) has committed; re-raise its failure."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    def _decode(self, records: list[ConsumerRecord]) -> _Batch:
        batch = _Batch(records=records, good=[], poison=[], started=time.perf_counter())
        for rec in records:
            try:
                event = decode(rec.key, rec.headers, rec.value)
            except PoisonMessage as poison:
                batch.poison.append(DeadLetter.of(rec, poison.reason))
            else:
                batch.good.append(Consumed(event, rec.topic, rec.partition, rec.offset, rec.value))
        return batch

    async def _finish(self, batch: _Batch) -> None:
        records = batch.records
        try:
            await self._with_retry(partial(self._commit_batch, batch.good, batch.poison, records))
        except HandlerRejected:
            await self._isolate(batch)
        self.processed += len(batch.good)
        self.dead_lettered += len(batch.poison)
        metrics.EVENTS_CONSUMED.labels(self.handler.name).inc(len(records))
        metrics.BATCH_SECONDS.labels(self.handler.name).observe(time.perf_counter() - batch.started)
        await self._commit_kafka(records)

    async def _commit_batch(
        self, good: Sequence[Consumed], poison: Sequence[DeadLetter], records: Sequence[ConsumerRecord]
    ) -> None:
        if poison:
            await self._deadletters.publish(poison)  # before the positions that pass them are saved
        async with self.pool.acquire() as conn, conn.transaction():
            if good:
                await self.handler.handle(conn, good)
            if poison:
                await self._deadletters.register(conn, poison)
            await self._save_positions(conn, records)

    async def _isolate(self, batch: _Batch) -> None:
        """Replay the batch one record at a time so only the event the handler rejects is dead-lettered."""
        by_offset = {(c.topic, c.partition, c.offset): c for c in batch.good}
        poison = {(d.topic, d.partition, d.offset): d for d in batch.poison}
        for rec in batch.records:
            key = (rec.topic, rec.partition, rec.offset)
            consumed = by_offset.get(key)
            letters = [poison[key]] if key in poison else []
            good = [consumed] if consumed else []
            try:
                await self._with_retry(partial(self._commit_batch, good, letters, [rec]))
            except HandlerRejected as rejected:
                letter = DeadLetter.of(rec, f"handler rejected: {rejected.reason}")
                await self._with_retry(partial(self._commit_batch, [], [letter], [rec]))
                batch.good.remove(consumed)  # type: ignore[arg-type]
                batch.poison.append(letter)

    async def _save_positions(self, conn: asyncpg.Connection, records: Sequence[ConsumerRecord]) -> None:
        last: dict[tuple[str, int], ConsumerRecord] = {}
        for rec in records:
            tp = (rec.topic, rec.partition)
            if tp not in last or rec.offset > last[tp].offset:
                last[tp] = rec
        await conn.executemany(
            "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, last_event_time, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (consumer, topic, partition) DO UPDATE "
            "SET next_offset = EXCLUDED.next_offset, last_event_time = EXCLUDED.last_event_time, "
            "updated_at = now()",
            [(self.handler.name, t, p, rec.offset + 1, _record_time(rec)) for (t, p), rec in last.items()],
        )

    async def _commit_kafka(self, records: Sequence[ConsumerRecord]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # positions are in PostgreSQL; this commit only feeds lag tools
            log.info("kafka commit skipped", consumer=self.handler.name, error=type(exc).__name__)

    # -- retry ---------------------------------------------------------------------------------

    async def _with_retry(self, action: Callable[[], Awaitable[T]]) -> T:
        backoff = 0.1
        while True:
            try:
                return await action()
            except TRANSIENT_ERRORS as exc:
                if self._stop.is_set():
                    # Shutting down: leave the batch uncommitted; it is redelivered on restart.
                    log.warning("abandoning batch at shutdown", consumer=self.handler.name)
                    raise
                log.warning(
                    "transient failure, retrying",
                    consumer=self.handler.name,
                    error=type(exc).__name__,
                    backoff_s=round(backoff, 2),
                )
                metrics.TRANSIENT_RETRIES.labels(self.handler.name).inc()
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _record_time(rec: ConsumerRecord) -> datetime | None:
    from datetime import UTC

    if rec.timestamp is None or rec.timestamp < 0:
        return None
    return datetime.fromtimestamp(rec.timestamp / 1000, UTC)
