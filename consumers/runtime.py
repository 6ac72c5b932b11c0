"""The consumer runtime every consumer runs on: batches in, one PostgreSQL transaction out.

Why not FastStream's subscriber here: its ack policies commit offsets to Kafka, and the effect of a
batch must be committed *together with* the offsets that produced it, in PostgreSQL. So the runtime
drives aiokafka (the client FastStream wraps) directly:

* positions live in ``consumer_offsets`` and are restored on every partition assignment, so a
  redelivered or replayed record never takes effect twice (exactly-once effect);
* each batch: decode → dead-letter the poison → ``handler.handle`` + dead-letter register + positions in
  one transaction → best-effort Kafka commit (only so that ordinary lag tools see progress);
* transient failures (database or broker unreachable) retry the same batch with capped exponential
  backoff and are never dead-lettered; an event the handler rejects, or whose values PostgreSQL refuses
  (``EVENT_ERRORS``), is isolated by splitting the batch, and only that event is dead-lettered;
* a single-writer consumer whose batch is fenced off (``LeadershipLost``) leaves the consumer group, with
  the batch uncommitted, and joins again once its role is held again (``held``);
* SIGTERM finishes the batch in hand, commits it, and leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple, Protocol, TypeVar

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError, UnsupportedCodecError
from aiokafka.structs import ConsumerRecord

from consumers.deadletter import DeadLetter, DeadLetterPublisher
from contracts.envelope import Event, Family, PoisonMessage, decode, decode_canonical
from domain.batch import Incoming
from infra import health, metrics
from infra.config import Settings
from infra.gc import fewer_collections
from infra.kafka import UNREADABLE_BATCH, client_options
from infra.leadership import LeadershipLost
from infra.logging import get_logger
from infra.tracing import batch_span

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
    LeadershipLost,  # a single-writer consumer waits until it leads again (infra.leadership; ``held``)
)


class Consumed(NamedTuple):
    """A decoded event with where it was read from (a named tuple: one is built per record)."""

    event: Event
    topic: str
    partition: int
    offset: int
    value: bytes  # the record's JSON bytes as received, for consumers that store them verbatim


# ``Consumed(...)`` less its Python frame (``namedtuple.__new__`` is generated Python): one per record.
_consumed = tuple.__new__

_FAMILY_NAMES = {f: f.value for f in Family}  # an enum's ``.value`` is a property call, per event


def incoming(c: Consumed) -> Incoming:
    """The event as planning functions take it (``domain.batch``): plain data, the JSON as received
    (``orjson``: what the view stores and rebuilds from, so a record extended from it equals one rebuilt).
    The decoder's own parse where the handler asked for it (``plain_data``), so a record is parsed once;
    it is read-only (``Mapping``): a batch retried after a transient failure hands it to the handler again."""
    e = c.event
    parsed = e.parsed
    if parsed is None:  # not kept (built by a test or a bench, or decoded for another handler)
        parsed = orjson.loads(c.value)
    return Incoming(e.id, _FAMILY_NAMES[e.family], e.subject, e.time, parsed)


def group_id_for(name: str, settings: Settings, role: str = "live") -> str:
    """The one group-id rule. Positions live in PostgreSQL under the consumer's name; the Kafka group only
    spreads partitions, so it is per topic namespace (and per role: live, replay, bench), never shared
    across them — a group shared by unrelated consumers makes every start wait for the others to
    rebalance."""
    return f"{name}.{settings.topic_namespace}.{role}"


class BatchHandler(Protocol):
    """A consumer's effect. ``handle`` runs inside the batch's transaction and must not commit.

    A handler that takes its events' data as plain values (``incoming``) says so with a true class
    attribute ``plain_data``: the decoder's parse of each value is then kept for it (``Event.parsed``)."""

    name: str
    topics: Sequence[str]

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None: ...


def _committed_hook(handler: BatchHandler) -> Callable[[], None] | None:
    """The handler's optional ``committed()``, called once the transaction that ran its last ``handle``
    has committed. What a handler counts of a batch is counted there, never in ``handle``: ``handle``
    runs again for the same records after a transient failure, in the halves of an isolation, and a
    stale batch's transaction is rolled back after it ran (a count kept in ``handle`` said twice)."""
    hook = getattr(handler, "committed", None)
    return hook if callable(hook) else None


class _Abandoned(Exception):
    """A transient failure while shutting down: the batch stays uncommitted and is redelivered."""


class _Lost(Exception):
    """The role was lost under a batch (``held`` given): it stays uncommitted and the member leaves."""


class StaleBatch(Exception):
    """The batch's partitions were processed past it elsewhere; its transaction is rolled back."""


# One statement per batch: update rows whose position is not past the batch, insert missing ones, and
# return how many partitions advanced (a row updated concurrently is re-checked by PostgreSQL).
_ADVANCE_POSITIONS = """
WITH incoming AS (
    SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::timestamptz[])
        AS t(topic, partition, first_offset, next_offset, event_time)
), updated AS (
    UPDATE consumer_offsets c
    SET next_offset = i.next_offset, last_event_time = i.event_time, updated_at = now()
    FROM incoming i
    WHERE c.consumer = $1 AND c.topic = i.topic AND c.partition = i.partition AND c.next_offset <= i.first_offset
    RETURNING 1
), inserted AS (
    INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, last_event_time)
    SELECT $1, i.topic, i.partition, i.next_offset, i.event_time FROM incoming i
    WHERE NOT EXISTS (
        SELECT 1 FROM consumer_offsets c WHERE c.consumer = $1 AND c.topic = i.topic AND c.partition = i.partition
    )
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted)
"""


# How much one fetch may bring (per partition, in all): a batch of ``batch_max_records`` in one round trip.
# The benches' raw-consume ceiling reads with the same options, so a ratio compares like with like.
FETCH_OPTIONS = {"max_partition_fetch_bytes": 4 * 1024 * 1024, "fetch_max_bytes": 32 * 1024 * 1024}
_STOP_WAIT_S = 5.0  # at a stop, for the batch in flight to roll back and for the last Kafka commit
_YIELD_EVERY = 64  # records decoded between two turns of the event loop (about a millisecond)
# A record the Kafka client cannot read is looked for this many fetches (of ``batch_max_records``) past its
# partition's stored position: it was met within about one fetch of what the runtime has handed over.
_UNREADABLE_SCAN = 8
_UNREADABLE_WAIT_MS = 500
_UNREADABLE = UNREADABLE_BATCH  # a record batch the client can never read (infra.kafka)
_UNREADABLE_REASON = (
    "record: not readable by the Kafka client (a header name in its record batch is not UTF-8)"
)
_UNREADABLE_CODEC = (
    "record: not readable by the Kafka client (its record batch's compression is not one it reads)"
)


class HandlerRejected(Exception):
    """Raised by a handler for an event it can never apply; the event is dead-lettered with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# What one event can cause that no retry will cure: the handler refuses it, or PostgreSQL refuses a value
# it carries (a NUL in text or jsonb, an integer past its column, a date out of range: SQLSTATE class 22,
# checked by PostgreSQL or by asyncpg while encoding; a violated constraint: class 23). Such an error
# rejects the event that caused it, never the consumer: it is isolated and dead-lettered. asyncpg's
# client-side DataError is an InterfaceError, otherwise taken as transient, so this is checked first.
EVENT_ERRORS: tuple[type[BaseException], ...] = (
    HandlerRejected,
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions._base.DataError,
)


def rejection_reason(exc: BaseException) -> str:
    """The dead-letter reason for an event an ``EVENT_ERRORS`` error rejected. A database message can
    quote the value it refused, so only the error's class (and SQLSTATE) is given, never its text."""
    if isinstance(exc, HandlerRejected):
        return f"handler rejected: {exc.reason}"
    sqlstate = getattr(exc, "sqlstate", None)
    code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    return f"database refused a value: {type(exc).__name__}{code}"


class _RestorePositions(ConsumerRebalanceListener):
    def __init__(self, runtime: ConsumerRuntime, consumer: AIOKafkaConsumer) -> None:
        self._runtime = runtime
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runtime.settle()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runtime.restore_positions(self._consumer, assigned)


# Per partition of a batch: (topic, partition) → (its first offset, its last record). Positions and Kafka
# commits are computed from these, once per partition, not once per record.
Spans = dict[tuple[str, int], tuple[int, ConsumerRecord]]


def spans_of(records: Iterable[ConsumerRecord]) -> Spans:
    """The spans of records in any order (``getmany`` gives each partition's in order: ``_fetched_spans``)."""
    spans: Spans = {}
    for rec in records:
        tp = (rec.topic, rec.partition)
        span = spans.get(tp)
        if span is None:
            spans[tp] = (rec.offset, rec)
        else:
            first, last = span
            spans[tp] = (min(first, rec.offset), rec if rec.offset > last.offset else last)
    return spans


@dataclass
class _Batch:
    records: list[ConsumerRecord]
    spans: Spans
    good: list[Consumed]
    poison: list[DeadLetter]
    started: float
    # Letters already on the dead-letter topic: a batch split to isolate a bad event commits its poison
    # again with each part, and each letter is published once.
    published: set[tuple[str, int, int]] = field(default_factory=set)


class ConsumerRuntime:
    def __init__(
        self,
        handler: BatchHandler,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        group_id: str | None = None,
        fence: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        held: Callable[[asyncio.Event], Awaitable[bool]] | None = None,
        role: str = "live",
        person_affine: bool = False,
        consumer_options: Mapping[str, Any] | None = None,
        held_back: Iterable[tuple[str, int]] = (),
        assigned: Iterable[tuple[str, int]] | None = None,
    ) -> None:
        """``consumer_options``: more keyword arguments for its ``AIOKafkaConsumer``. ``held_back``:
        (topic, partition) pairs not read until ``release``d (paused whenever assigned; the replay's
        consents wait for their events). ``assigned``: the (topic, partition) pairs this member reads,
        given by the caller (``consumers.shared_view.replay``): then it joins no group (no join, no
        rebalance) and commits no offsets to Kafka; its positions are in PostgreSQL as always."""
        self.handler = handler
        self._committed = _committed_hook(handler)
        self._consumer_options = dict(consumer_options or {})
        self._held_back = set(held_back)
        self._assigned = None if assigned is None else [TopicPartition(t, p) for t, p in assigned]
        # Person-affine: the members of the group get the same partition numbers of every topic (Kafka's
        # range assignor; a person's events share one number on every topic, ``infra.kafka.partitions_of``),
        # so one member sees all of a person's events. aiokafka's default (round robin over every topic's
        # partitions together) does that only when the member count divides the partition count.
        self._assignors = (RangePartitionAssignor,) if person_affine else (RoundRobinPartitionAssignor,)
        self.settings = settings
        self.pool = pool
        self.group_id = group_id or group_id_for(handler.name, settings, role)
        self._fence = fence  # single-writer consumers: proves leadership inside each batch's transaction
        # With ``held`` (the role's ``wait_held``), a fenced batch makes the member leave the group until
        # the role is held again: a member that stayed would keep its partitions, retrying a batch it may
        # never commit, and the run now holding the role would not get them until Kafka evicted it.
        self._held = held
        self._lost = False
        self._consumer: AIOKafkaConsumer | None = None
        self._deadletters = DeadLetterPublisher(settings, consumer=handler.name)
        self._stop = asyncio.Event()
        self._inflight: asyncio.Task[None] | None = None
        # Kafka commits (for lag tools only) go on beside the pipeline: the newest offset per partition
        # waits here, and one task at a time sends them, so no batch waits for the broker's answer.
        self._kafka_pending: dict[TopicPartition, int] = {}
        # The connection batches commit on, held from one batch to the next: given back to the pool after
        # every batch, it was reset there (one more round trip per batch, while the next batch waits).
        # One that failed is given back (the pool discards a broken one) and another taken.
        self._conn: asyncpg.Connection | None = None
        self._kafka_commits: asyncio.Task[None] | None = None
        # aiokafka runs rebalance callbacks in its coordinator task, at any moment, not inside getmany.
        # ``_hand`` is held from "records in hand" until "their batch is scheduled"; a rebalance takes
        # it too, so it sees every batch either not started or committed. ``_generation`` changes on
        # every assignment: records fetched under an older one are put back (the consumer is rewound to
        # the first of them, which is the restored position), or they could be applied twice.
        self._hand = asyncio.Lock()
        self._generation = 0
        self._stale = False  # a batch was fenced off: re-read positions before the next one
        self._unreadable_at: TopicPartition | None = None  # where a record the client cannot read was last
        self.processed = 0
        self.dead_lettered = 0
        self._keep_parsed = bool(getattr(handler, "plain_data", False))

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def release(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read these held-back partitions from now on (resumed where assigned to this member)."""
        released = self._held_back.intersection(partitions)
        self._held_back -= released
        if self._consumer is not None and released:
            self._consumer.resume(
                *(tp for tp in self._consumer.assignment() if (tp.topic, tp.partition) in released)
            )

    @fewer_collections()  # the collector's policy for streaming work (infra.gc: ~10% of a consumer's CPU)
    async def run(self) -> None:
        while await self._member():  # the role was lost: out of the group until it is held again
            assert self._held is not None
            log.info("left the group until the role is held again", consumer=self.handler.name)
            if not await self._held(self._stop):
                return

    async def _member(self) -> bool:
        """One membership of the group, until stopped (False) or fenced off with ``held`` (True)."""
        self._lost = self._stale = False
        self._kafka_pending = {}
        if not await self._start_with_retry():
            return False  # stopped before Kafka was reachable
        assert self._consumer is not None
        log.info("consumer started", consumer=self.handler.name, topics=list(self.handler.topics))
        try:
            # Two-stage pipeline: batch N commits in PostgreSQL (a task) while batch N+1 is fetched and
            # decoded here, so decoding (our CPU) overlaps the database's work on the other core. The
            # decoding yields to the loop now and then, so the commit's round trips go on meanwhile.
            while not self._stop.is_set() and not self._lost:
                generation = self._generation
                try:
                    fetched = await self._consumer.getmany(
                        timeout_ms=self.settings.batch_timeout_ms, max_records=self.settings.batch_max_records
                    )
                except _UNREADABLE:  # a record batch the client cannot read (``_past_unreadable``)
                    await self._past_unreadable()
                    continue
                records = [r for part in fetched.values() for r in part]
                async with self._hand:
                    if records and generation != self._generation:
                        self._rewind(records)
                        records = []
                    batch = await self._decode(records, _fetched_spans(fetched)) if records else None
                    await self.flush()
                    if self._stale:
                        await self._resync()
                        continue
                    if batch is not None:
                        self._inflight = asyncio.create_task(self._finish(batch))
            await self.flush()
        except _Abandoned:
            pass  # a clean stop: what was not committed is redelivered to the next run
        except _Lost:
            pass  # nothing of the batch was applied; whoever holds the role now reads it again
        finally:
            if self._inflight is not None and not self._inflight.done():
                self._inflight.cancel()  # only on an error path: uncommitted work is redelivered
                # Its transaction ends before its connection goes back; but a rollback on a dead connection
                # may never end, and the stop does not wait for it (``_give_back`` closes that connection).
                await asyncio.wait({self._inflight}, timeout=_STOP_WAIT_S)
            if self._kafka_commits is not None:  # the last positions, for lag tools; never a hang
                try:
                    await asyncio.wait_for(self._kafka_commits, timeout=_STOP_WAIT_S)
                except asyncio.CancelledError:
                    pass
                except Exception as exc:  # whatever it raised, the stops below still run (the type only)
                    log.warning(
                        "last kafka commit not sent", consumer=self.handler.name, error=type(exc).__name__
                    )
            await self._consumer.stop()
            await self._deadletters.stop()
            await self._give_back()
            log.info(
                "consumer stopped",
                consumer=self.handler.name,
                processed=self.processed,
                dead_lettered=self.dead_lettered,
            )
        return self._lost

    async def _start_with_retry(self) -> bool:
        backoff = 0.2
        while not self._stop.is_set():
            consumer = AIOKafkaConsumer(
                **client_options(self.settings),
                group_id=self.group_id if self._assigned is None else None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **FETCH_OPTIONS,
                partition_assignment_strategy=self._assignors,
                **self._consumer_options,
            )
            if self._assigned is None:
                consumer.subscribe(list(self.handler.topics), listener=_RestorePositions(self, consumer))
            else:
                consumer.assign(self._assigned)
            try:
                await consumer.start()
                await self._deadletters.start()
                self._consumer = consumer
                if self._assigned is not None:  # what a group's assignment would do, once
                    try:
                        await self.restore_positions(consumer, set(self._assigned))
                    except _Abandoned:  # stopped while the database was away: nothing was read
                        self._consumer = None
                        await consumer.stop()
                        await self._deadletters.stop()
                        return False
                return True
            except (KafkaError, OSError, TimeoutError) as exc:
                await consumer.stop()
                await self._deadletters.stop()
                log.warning(
                    "kafka unavailable, retrying", consumer=self.handler.name, error=type(exc).__name__
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)
        return False

    def _rewind(self, records: list[ConsumerRecord]) -> None:
        assert self._consumer is not None
        first: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            first[tp] = min(first.get(tp, rec.offset), rec.offset)
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    async def _resync(self) -> None:
        """After a fenced batch: seek every assigned partition back to its stored position."""
        assert self._consumer is not None
        self._stale = False
        self._generation += 1
        await self._seek_to_stored(self._consumer, self._consumer.assignment())

    async def settle(self) -> None:
        """Let every batch in hand commit (effect + positions) before a rebalance proceeds: another
        member may take these partitions next, and would otherwise apply the batch again."""
        async with self._hand:
            await self.flush()

    async def restore_positions(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        async with self._hand:
            await self.flush()
            self._generation += 1
            # offsets of partitions now someone else's are not this member's to commit
            self._kafka_pending = {tp: o for tp, o in self._kafka_pending.items() if tp in assigned}
            await self._seek_to_stored(consumer, assigned)
            # A partition's pause does not outlive an assignment; aiokafka never returns a paused
            # partition's records, even ones fetched before the pause.
            consumer.pause(*(tp for tp in assigned if (tp.topic, tp.partition) in self._held_back))

    async def _seek_to_stored(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
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

    # -- a record the Kafka client cannot read ---------------------------------------------------

    async def _past_unreadable(self) -> None:
        """Dead-letter the record that made ``getmany`` raise, and go on.

        aiokafka decodes each header's name as UTF-8 as it unpacks a fetch, and a name that is not (Kafka
        carries bytes; anyone who may write the topic can put them there) raises ``UnicodeDecodeError``
        out of ``getmany``, as a batch compressed by a codec it lacks raises ``UnsupportedCodecError``: no record to dead-letter, and a consumer that let it end the run would meet it
        again after every restart. The records drained before it from other partitions were taken past
        (aiokafka moved their positions) without being handed over, so every partition goes back to its
        stored position first. Then each partition is read on its own to find the one that raises, and
        that one a record a call up to it: the records before it are applied as a batch, and the record
        itself is dead-lettered at its offset with no key or headers and an empty value (none can be read;
        the desk refuses to redrive a letter without a key), its position passed in the same transaction.
        So are the records after it that a read from their own offset cannot reach either (the rest of
        its record batch, which aiokafka decodes from the batch's start: a batch is one producer's, so
        only its own records): each found by one fetch here (``_unreachable_after``), all in the same
        transaction, where each took a search and a transaction of its own (a rogue batch of 300 small
        records held a consumer 17 s; a 1 MB one holds hundreds of thousands)."""
        consumer = self._consumer
        assert consumer is not None
        async with self._hand:
            await self.flush()
            await self._resync()
            generation = self._generation
        start = {tp: await consumer.position(tp) for tp in consumer.assignment()}
        ends = await consumer.end_offsets(list(start))
        found: TopicPartition | None = None
        cause: Exception | None = None
        # The partition met last first: a rogue batch's records are passed one search each.
        for tp in sorted(start, key=lambda tp: (tp != self._unreadable_at, tp)):
            at = start[tp]
            try:
                for _ in range(_UNREADABLE_SCAN):  # it was met within about a fetch of the stored position
                    if at >= ends[tp] or not (
                        got := await self._read_on(tp, self.settings.batch_max_records)
                    ):
                        break
                    at = got[-1].offset + 1
            except _UNREADABLE as exc:
                found, cause = tp, exc
                break
        readable: list[ConsumerRecord] = []
        if found is not None:
            consumer.seek(found, start[found])  # a fresh fetch from there
            try:  # a record a call: a call that raises hands over none of the records before the culprit
                while got := await self._read_on(found, 1):
                    readable += got
            except _UNREADABLE as exc:
                cause = exc
            else:
                found = None  # not met again (the topic changed): read on as usual
        culprits: list[tuple[int, Exception | None]] = []
        if found is not None:
            offset = readable[-1].offset + 1 if readable else start[found]
            culprits = [(offset, cause)]
            room = self.settings.batch_max_records - len(readable) - 1
            culprits += await self._unreachable_after(found, offset, ends[found], room)
        assigned = consumer.assignment()
        async with self._hand:
            if generation != self._generation:
                return  # a rebalance restored the positions meanwhile: read on from there
            for tp, offset in start.items():
                if tp in assigned and tp != found:
                    consumer.seek(tp, offset)
            if found is None:
                return
            self._unreadable_at = found
            consumer.seek(found, culprits[-1][0] + 1)
            batch = await self._decode(readable, spans_of(readable))
            for offset, why in culprits:
                culprit = ConsumerRecord(
                    found.topic, found.partition, offset, -1, 0, None, b"", None, -1, 0, ()
                )
                batch.records.append(culprit)
                reason = _UNREADABLE_CODEC if isinstance(why, UnsupportedCodecError) else _UNREADABLE_REASON
                batch.poison.append(DeadLetter.of(culprit, reason))
            batch.spans[(found.topic, found.partition)] = (
                readable[0].offset if readable else culprits[0][0],
                batch.records[-1],
            )
            log.warning("record not readable by the Kafka client", consumer=self.handler.name,
                        topic=found.topic, partition=found.partition, offset=culprits[0][0],
                        records=len(culprits))  # fmt: skip
            self._inflight = asyncio.create_task(self._finish(batch))

    async def _unreachable_after(
        self, tp: TopicPartition, culprit: int, end: int, most: int
    ) -> list[tuple[int, Exception]]:
        """The offsets after ``culprit`` (up to ``most`` of them, before ``end``) from which a read raises
        as well, in a row, each with what it raised: one fetch each. A read from an offset raises exactly
        where aiokafka meets an unreadable record in that offset's record batch at or before it, so each
        is what a search of its own found, one search after another."""
        assert self._consumer is not None
        found: list[tuple[int, Exception]] = []
        at = culprit + 1
        # A rebalance may take the partition meanwhile (the hand is not held here): seeking it would
        # raise, and the search is then left to whoever holds it (``generation`` says so afterwards).
        while len(found) < most and at < end and tp in self._consumer.assignment():
            self._consumer.seek(tp, at)
            try:
                await self._read_on(tp, 1)
            except _UNREADABLE as exc:
                found.append((at, exc))
                at += 1
                continue
            break  # readable from here (or nothing more to read now): read on as usual
        return found

    async def _read_on(self, tp: TopicPartition, most: int) -> list[ConsumerRecord]:
        """Up to ``most`` records of ``tp`` from its position; none only at its end (a few waits long)."""
        assert self._consumer is not None
        for _ in range(3):
            if self._stop.is_set():  # a stop does not wait for the search: the record is met again next run
                return []
            got = await self._consumer.getmany(tp, timeout_ms=_UNREADABLE_WAIT_MS, max_records=most)
            if got.get(tp):
                return got[tp]
        return []

    # -- one batch ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until the batch in flight (if any) has committed; re-raise its failure."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _decode(self, records: list[ConsumerRecord], spans: Spans) -> _Batch:
        batch = _Batch(records=records, spans=spans, good=[], poison=[], started=time.perf_counter())
        good, poison = batch.good, batch.poison
        dropped: list[str] = []  # why a record's trace context was dropped (the event is applied)
        keep = self._keep_parsed
        canonical = decode_canonical
        first: ConsumerRecord | None = None
        for start in range(0, len(records), _YIELD_EVERY):
            if start:
                await asyncio.sleep(0)  # let the batch in flight take its next step in PostgreSQL
            for rec in records[start : start + _YIELD_EVERY]:
                key, headers, value = rec.key, rec.headers, rec.value
                try:
                    # The hub's own records in a few C calls; any other record the whole way, which
                    # alone gives reasons (``decode(fast=True)`` tries the first way again: the same verdict).
                    event = canonical(key, headers, value, dropped, keep) or decode(
                        key, headers, value, fast=True, dropped=dropped, keep_parsed=keep
                    )
                except PoisonMessage as refused:
                    poison.append(DeadLetter.of(rec, refused.reason))
                    continue
                except Exception as exc:  # a decoder bug: the record is refused, the consumer goes on
                    poison.append(DeadLetter.of(rec, "record: not readable by the hub's decoder"))
                    get_logger("consumer").error(  # the type alone: the message may quote the value
                        "decode failed", consumer=self.handler.name, error=type(exc).__name__
                    )
                    continue
                good.append(_consumed(Consumed, (event, rec.topic, rec.partition, rec.offset, value)))
                if first is None and dropped:  # only an accepted event adds to ``dropped``: this one did
                    first = rec
        if first is not None:  # one line per batch, never the value
            get_logger("consumer").warning(  # looked up here (rare): a cached logger ignores capture
                "trace context dropped",
                consumer=self.handler.name,
                events=len(dropped),
                reasons=sorted(set(dropped)),
                first=f"{first.topic}[{first.partition}]@{first.offset}",
            )
        return batch

    async def _finish(self, batch: _Batch) -> None:
        records = batch.records
        try:
            try:
                await self._with_retry(
                    partial(self._commit_batch, batch.good, batch.poison, batch.spans, batch.published)
                )
            except EVENT_ERRORS:
                await self._isolate(batch, batch.records)
        except StaleBatch as stale:
            # Nothing of this batch was applied; the loop re-reads positions before going on.
            log.warning("stale batch discarded", consumer=self.handler.name, detail=str(stale))
            self._stale = True
            return
        self.processed += len(batch.good)
        self.dead_lettered += len(batch.poison)
        metrics.EVENTS_CONSUMED.labels(self.handler.name).inc(len(records))
        metrics.BATCH_SECONDS.labels(self.handler.name).observe(time.perf_counter() - batch.started)
        self._commit_kafka(batch.spans)

    async def _commit_batch(
        self,
        good: Sequence[Consumed],
        poison: Sequence[DeadLetter],
        spans: Spans,
        published: set[tuple[str, int, int]] | None = None,
    ) -> None:
        unpublished = [
            d for d in poison if published is None or (d.topic, d.partition, d.offset) not in published
        ]
        if unpublished:
            await self._deadletters.publish(unpublished)  # before the positions that pass them are saved
            if published is not None:
                published.update((d.topic, d.partition, d.offset) for d in unpublished)
        traced = [
            (c.event.traceparent, c.event.id, c.event.tracestate)
            for c in good
            if c.event.traceparent is not None
        ]
        with batch_span(self.handler.name, traced, events=len(good), dead_letters=len(poison)):
            if self._conn is None:
                self._conn = await self.pool.acquire()
            conn = self._conn
            try:
                async with conn.transaction():
                    if self._fence is not None:
                        await self._fence(conn)
                    if not self.settings.consumer_sync_commit:
                        await conn.execute("SET LOCAL synchronous_commit = off")
                    if good:
                        await self.handler.handle(conn, good)
                    if poison:
                        await self._deadletters.register(conn, poison)
                    await self._save_positions(conn, spans)
            except TRANSIENT_ERRORS:
                await self._give_back()  # it may be broken: the retry takes another
                raise
            if good and self._committed is not None:
                self._committed()

    async def _give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self.pool.release(conn, timeout=5)
            except TRANSIENT_ERRORS:
                conn.terminate()  # a connection that cannot even be reset is closed

    async def _isolate(self, batch: _Batch, records: list[ConsumerRecord]) -> None:
        """Find the events of ``records`` that cannot be applied and dead-letter only those.

        The records failed together, so they are split in halves, each committed on its own (the first
        half first, so each partition's events keep their order); a half that fails again is split again,
        down to the single event at fault: about 2·log2(n) transactions for one bad event in n.
        """
        by_offset = {(c.topic, c.partition, c.offset): c for c in batch.good}
        poison = {(d.topic, d.partition, d.offset): d for d in batch.poison}
        keys = [(r.topic, r.partition, r.offset) for r in records]
        good = [by_offset[k] for k in keys if k in by_offset]
        letters = [poison[k] for k in keys if k in poison]
        try:
            await self._with_retry(
                partial(self._commit_batch, good, letters, spans_of(records), batch.published)
            )
            return
        except EVENT_ERRORS as exc:
            if len(records) > 1:
                half = len(records) // 2
                await self._isolate(batch, records[:half])
                await self._isolate(batch, records[half:])
                return
            reason = rejection_reason(exc)
        rec = records[0]
        letter = DeadLetter.of(rec, reason)
        await self._with_retry(partial(self._commit_batch, [], [letter], spans_of([rec])))
        consumed = by_offset.get(keys[0])
        if consumed is not None:
            batch.good.remove(consumed)
            batch.poison.append(letter)

    async def _save_positions(self, conn: asyncpg.Connection, spans: Spans) -> None:
        """Advance the stored positions past the batch's ``spans`` — only where they still start at or
        after them.

        The stored position is a fencing token: a member that lost its partitions in a rebalance (or a
        zombie that missed one) finds the position already moved past its batch, and its whole
        transaction rolls back (``StaleBatch``) instead of applying those events a second time.
        """
        advanced = await conn.fetchval(
            _ADVANCE_POSITIONS,
            self.handler.name,
            [t for t, _ in spans],
            [p for _, p in spans],
            [first for first, _ in spans.values()],
            [last.offset + 1 for _, last in spans.values()],
            [_record_time(last) for _, last in spans.values()],
        )
        if advanced != len(spans):
            rows = await conn.fetch(
                "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1",
                self.handler.name,
            )
            stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
            behind = [
                f"{t}[{p}] batch starts at {first}, stored position {stored.get((t, p))}"
                for (t, p), (first, _) in spans.items()
                if stored.get((t, p), -1) > first
            ]
            raise StaleBatch("already advanced by another member: " + "; ".join(behind))

    def _commit_kafka(self, spans: Spans) -> None:
        """Have Kafka's committed offsets follow the stored positions, without waiting for it."""
        if self._assigned is not None:
            return  # no group to commit for
        for (topic, partition), (_, last) in spans.items():
            self._kafka_pending[TopicPartition(topic, partition)] = last.offset + 1
        if self._kafka_commits is None or self._kafka_commits.done():
            self._kafka_commits = asyncio.create_task(self._send_kafka_commits())

    async def _send_kafka_commits(self) -> None:
        assert self._consumer is not None
        while self._kafka_pending:
            offsets, self._kafka_pending = self._kafka_pending, {}
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:  # positions are in PostgreSQL; this commit only feeds lag tools
                log.info("kafka commit skipped", consumer=self.handler.name, error=type(exc).__name__)

    # -- retry ---------------------------------------------------------------------------------

    async def _with_retry(self, action: Callable[[], Awaitable[T]]) -> T:
        backoff = 0.1
        failed: set[str] = set()
        while True:
            try:
                result = await action()
            except EVENT_ERRORS:
                _answered(failed)  # the database answered: it refused a value, which no retry cures
                raise
            except TRANSIENT_ERRORS as exc:
                if self._stop.is_set():
                    # Shutting down: leave the batch uncommitted; it is redelivered on restart. A runtime
                    # that ends makes no claim about its dependencies: readiness would otherwise keep
                    # reporting this one failing for a consumer that no longer runs in the process.
                    for name in failed:
                        health.forget(name)
                    log.warning("abandoning batch at shutdown", consumer=self.handler.name)
                    raise _Abandoned() from exc
                if isinstance(exc, LeadershipLost) and self._held is not None:
                    self._lost = True  # seen by the loop even when raised in a rebalance callback
                    raise _Lost() from exc
                component = _component(exc)
                failed.add(f"{self.handler.name}.{component}")
                health.report(f"{self.handler.name}.{component}", False, type(exc).__name__)
                log.warning(
                    "transient failure, retrying",
                    consumer=self.handler.name,
                    component=component,
                    error=type(exc).__name__,
                    backoff_s=round(backoff, 2),
                )
                metrics.TRANSIENT_RETRIES.labels(self.handler.name).inc()
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)
            except BaseException:
                _answered(failed)  # the dependency answered (the action failed for another reason)
                raise
            else:
                _answered(failed)
                return result

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once on stop (SIGTERM during an outage ends promptly)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)


def _answered(components: set[str]) -> None:
    for name in components:
        health.report(name, True)


def _component(exc: BaseException) -> str:
    """Which dependency a transient failure came from, for logs and readiness."""
    if isinstance(exc, KafkaError):
        return "kafka"
    if isinstance(exc, LeadershipLost):
        return "leadership"
    return "database"


def _fetched_spans(fetched: dict[TopicPartition, list[ConsumerRecord]]) -> Spans:
    """The spans of what ``getmany`` returned: each partition's records in offset order."""
    return {(tp.topic, tp.partition): (part[0].offset, part[-1]) for tp, part in fetched.items() if part}


def _record_time(rec: ConsumerRecord) -> datetime | None:
    from datetime import UTC

    if rec.timestamp is None or rec.timestamp < 0:
        return None
    try:  # the producer's own (CreateTime): a broker that takes any hands over times past year 9999
        return datetime.fromtimestamp(rec.timestamp / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
