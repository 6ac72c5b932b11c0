"""Transactional outbox: accepting an event is one row in PostgreSQL; a relay publishes it to Kafka.

Acceptance writes an event's row in the transaction that accepts it (``accept_sealed``; a file chunk's
``accept_file_rows``), so an event is accepted exactly when that transaction commits — whether or not the
broker is up. The relay takes pending rows in id order while
it leads the ``relay`` role (``infra.leadership``: one relay at a time keeps the order, fenced by epoch),
publishes them with an idempotent ``acks=all`` producer, and deletes their marks in ``outbox_pending``
(migration 040: an outbox row is written once, by the transaction that accepts it; a row is pending while
its mark is there). Only a crash of the relay between Kafka's acknowledgement and its commit re-sends a
batch; consumers key their effects by event id, so a re-sent event takes effect once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from contracts.envelope import Event, data_value
from infra import health, metrics
from infra.config import Settings
from infra.crypto import forget_everywhere
from infra.db import OUTBOX_CHANNEL, TRANSIENT_DB_ERRORS, AdvisoryLock, connect
from infra.kafka import partitions_of, start_producer
from infra.leadership import Leadership, LeadershipLost
from infra.logging import get_logger
from infra.outbox_rows import count_accepted, outbox_columns
from infra.tracing import TRACEPARENT_HEADER, TRACESTATE_HEADER, publish_span
from producers.holders import fence_rows, holder_rows

log = get_logger("outbox")

# After a part batch: adds at most this to the time from 202 to Kafka. A batch costs the relay ~1.3 ms of
# CPU and PostgreSQL ~0.7 ms whatever its size (four round trips, a commit, a produce request), a row ~20
# and ~12 µs: at 40-row batches 57 + 30 µs a row, at 100-row batches 25-30 + 13-17 (relay micro-bench,
# loaded 2-core machine). At 2,000 single-event requests a second 20 ms would make batches of ~50 rows.
_GATHER_S = 0.05
NOTIFY_CHANNEL = OUTBOX_CHANNEL


@dataclass(frozen=True, slots=True)
class Verdicts:
    """What an accepting transaction (``accept_sealed``) decided, unit by unit."""

    kept: frozenset[int]  # units whose events are in the outbox
    erased: frozenset[str]  # people on the erasure register: every unit about one was refused (P9)
    conflicted: frozenset[str]  # people whose key was stored meanwhile: their units are to be sealed again
    won: frozenset[int]  # keyed units whose idempotency key was stored (the others' was taken)
    # Clients revoked (when; None: no longer in the register) as the call committed: their units refused.
    revoked: Mapping[str, datetime | None]
    # People whose data key as sealed with is not stored now, so not to be cached: the erased, those whose
    # key was stored meanwhile (another key), and those given a fresh key whose every unit was refused
    # (migration 042 stores no key for them).
    keyless: frozenset[str]


async def accept_sealed(
    conn: asyncpg.Connection,
    units: Sequence[Sequence[Event]],
    fresh_keys: Mapping[str, bytes],
    idempotency: Sequence[tuple[int, str, str, bytes, str]] = (),
    *,
    clients: Sequence[str | None] = (),
    origin: str,
    namespace: str,
    value_of: Callable[[Event], bytes] = data_value,
) -> Verdicts:
    """Accept sealed events in one round trip: their own transaction (``accept_events``: 021, latest 042;
    called packed, 050).

    Each unit (a request) is accepted or refused whole. ``fresh_keys`` (person -> wrapped data key) are
    the keys the events were sealed with that are not stored yet (``KeyStore.sealing_keys``): stored in
    the same transaction, each only if a unit with its person is accepted. ``idempotency`` holds (unit, organisation, key, request digest, family) for the
    keyed units. ``clients`` holds each unit's client (None, or none given: a trusted caller's, the
    simulator's or ``ingest.accept``'s). A unit is refused if its client is revoked now (read FOR SHARE: a
    revocation waits for this transaction, so none commits between its check and its events), or one of its people is on the erasure register now (read under the
    acceptance erasure lock, after authorisation's read: P9 even under a concurrent erasure), or got a
    stored key meanwhile (seal it again), or, keyed, if its key is taken; else its events go into the
    outbox with what they change in the registers (holders P3, fences P7), in the order given. ``value_of``
    writes an event's outbox value (``outbox_columns``)."""
    if conn.is_in_transaction():
        raise RuntimeError("accept_sealed is a transaction of its own")
    events = [e for evs in units for e in evs]
    e_unit = [i for i, evs in enumerate(units) for _ in evs]
    topics, headers, values, ids = outbox_columns(events, namespace, value_of)
    holders = holder_rows(events)
    fences = fence_rows(events)
    wrapped = list(fresh_keys.values())
    row = await conn.fetchrow(
        _ACCEPT,
        _ints(e_unit), _texts([e.subject for e in events]), _texts(topics), orjson.dumps(headers).decode(),
        b"".join(values), _ends(values), _texts(ids),
        _texts(list(fresh_keys)), b"".join(wrapped), _ends(wrapped),
        [k[0] for k in idempotency], [k[1] for k in idempotency], [k[2] for k in idempotency],
        [k[3] for k in idempotency], [k[4] for k in idempotency],
        [e_unit[h[0]] for h in holders], [h[1] for h in holders], [h[2] for h in holders],
        [h[3] for h in holders], [h[4] for h in holders], [h[5] for h in holders],
        [e_unit[f[0]] for f in fences], [f[1] for f in fences], [f[2] for f in fences], [f[3] for f in fences],
        _ints([i for i, c in enumerate(clients) if c is not None]), _texts([c for c in clients if c is not None]),
        origin, NOTIFY_CHANNEL,
    )  # fmt: skip
    assert row is not None
    erased, conflicted, won = frozenset(row["erased"]), frozenset(row["conflicted"]), frozenset(row["won"])
    if erased:
        forget_everywhere(erased)  # out of this process's memory (the other processes follow the erasure)
    keyed = {k[0] for k in idempotency}
    revoked = dict(zip(row["revoked"], row["revoked_at"], strict=True))
    refused = erased | conflicted
    kept = frozenset(
        i
        for i, evs in enumerate(units)
        if (i not in keyed or i in won)
        and not any(e.subject in refused for e in evs)
        and (i >= len(clients) or clients[i] not in revoked)
    )
    accepted = [e for i in sorted(kept) for e in units[i]]
    count_accepted(origin, accepted)
    keyless = refused | (fresh_keys.keys() - {e.subject for e in accepted})
    return Verdicts(kept, erased, conflicted, won, revoked, keyless)


# ``accept_events`` through its packed form (migration 050): a column of one value per event, data key or
# client is one parameter, not an array whose every element asyncpg checks with Python-level calls.
_ACCEPT = f"SELECT * FROM accept_events_packed({', '.join(f'${n}' for n in range(1, 30))})"


def _ints(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def _texts(values: Sequence[str]) -> str:
    return orjson.dumps(values).decode()


def _ends(values: Sequence[bytes]) -> str:
    """The end offset of each byte string laid end to end (``packed_slices``)."""
    return ",".join(map(str, accumulate(map(len, values))))


class BrokerUnavailable(Exception):
    """Kafka did not acknowledge the batch (nothing of it is stamped; the whole batch is sent again)."""


class OutboxRelay:
    """Publishes pending outbox rows in order, while it leads the ``relay`` role (one per database).

    Each batch is one PostgreSQL transaction: the leadership fence, the pending rows taken (their
    marks deleted, ``_TAKE``), the Kafka send and its acknowledgement, then the commit. A relay that lost
    its lock (a database restart) cannot commit, and another relay's lock waits for its batch to end, so
    two relays never publish side by side. Rows Kafka acknowledged whose commit failed (the database went
    away between the two) are remembered and their marks deleted first once the database is back — never
    sent again by this relay. Only a crash of the relay process in that window re-sends them; consumers apply an event id
    once, so such a re-send has no effect (``docs`` in the README: "How events flow")."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.leadership = Leadership(settings, "relay", AdvisoryLock.RELAY)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        # The relay's own connection: its batches and its LISTEN. Kept from batch to batch (a pooled
        # connection cost an acquire and a session reset per batch, a fifth of the relay's CPU).
        self._conn: asyncpg.Connection | None = None
        self._acked: list[int] = []  # acknowledged by Kafka, marks' deletion not yet committed
        self.published = 0
        self.restamped = 0  # acknowledged rows marked published after a failed commit (not re-sent)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        self.leadership.start()
        try:
            await self._loop()
        finally:
            self._close_connection()
            await self.leadership.close()
            await self._drop_producer()
            for component in ("relay.kafka", "relay.database"):
                health.forget(component)

    async def stop_task(self, task: asyncio.Task[None], *, grace_s: float) -> None:
        """Stop this relay running as ``task``: it has ``grace_s`` to finish its batch, then it is
        cancelled. A relay waiting for another relay's advisory lock never sees ``stop()``; cancelling the
        active one mid-batch is like a crash: its batch is pending again and re-sent, consumers apply an event id once."""
        self.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                await self._stamp_acked()
                if not self.leadership.held:
                    await self.leadership.wait_held(self._stop)
                    continue
                sent = await self.publish_pending()
                backoff = 0.2
            except LeadershipLost as lost:
                log.warning("relay stopped publishing: leadership lost", reason=str(lost))
                continue
            except BrokerUnavailable as exc:
                cause = type(exc.__cause__).__name__
                health.report("relay.kafka", False, cause)
                log.warning("broker unavailable, outbox keeps events", component="kafka", error=cause)
                await self._drop_producer()
            except TRANSIENT_DB_ERRORS as exc:
                health.report("relay.database", False, type(exc).__name__)
                log.warning("database unavailable, relay waits", component="database",
                            error=type(exc).__name__, acknowledged=len(self._acked))  # fmt: skip
                self._close_connection()
            else:
                if sent == 0:
                    await self._wait(self.settings.outbox_poll_interval_s * 5)
                elif sent < self.settings.outbox_batch_size:
                    # A part batch: let what is being accepted gather for a moment rather than publish a
                    # handful of rows per transaction (each costs the relay and PostgreSQL five round
                    # trips; a stream of single-event requests otherwise made batches of two or three).
                    await self._pause(_GATHER_S)
                continue
            metrics.TRANSIENT_RETRIES.labels("outbox-relay").inc()
            await self._wait(backoff)
            backoff = min(backoff * 2, self.settings.retry_max_backoff_s)

    async def _connection(self) -> asyncpg.Connection:
        """The relay's connection, listening: NOTIFY wakes the relay as soon as an event is accepted
        (polling is the fallback)."""
        if self._conn is None or self._conn.is_closed():
            self._close_connection()
            conn = await connect(self.settings)
            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
        return self._conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (NOTIFY does not cut it short), or until stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            try:
                self._producer = await start_producer(
                    self.settings, linger_ms=5, max_batch_size=256 * 1024, request_timeout_ms=15000
                )
            except (KafkaError, OSError, TimeoutError) as exc:
                raise BrokerUnavailable() from exc
        return self._producer

    async def _drop_producer(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await self._producer.stop()
            self._producer = None

    async def _stamp_acked(self) -> None:
        """Mark published the rows Kafka acknowledged whose batch did not commit. A fact about Kafka, true
        whoever leads now: no fence needed, and nothing is sent again."""
        if not self._acked:
            return
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM outbox_pending WHERE id = ANY($1::bigint[])", self._acked)
        log.info("acknowledged rows marked published after the database came back", rows=len(self._acked))
        self.restamped += len(self._acked)
        self._acked = []

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows as the leader; returns how many were published.

        Raises ``LeadershipLost`` (this process does not lead), ``BrokerUnavailable`` or a transient
        database error; in every case nothing Kafka did not acknowledge is marked published (the batch's
        transaction rolls back and its rows' marks are there again)."""
        conn = await self._connection()
        async with conn.transaction():
            await self.leadership.fence(conn)
            rows = await conn.fetch(_TAKE, self.settings.outbox_batch_size)
            if not rows:
                metrics.OUTBOX_BACKLOG.set(0)
                health.report("relay.database", True)
                return 0
            producer = await self._ensure_producer()
            # Read only while spans leave the process (``infra.tracing``: links are made for exported spans).
            traced = (
                (tp, r["event_id"], r["headers"].get(TRACESTATE_HEADER))
                for r in rows
                if (tp := r["headers"].get(TRACEPARENT_HEADER))
            )
            try:
                with publish_span(traced, rows=len(rows)):
                    await asyncio.gather(*await _send(producer, rows))
            except (KafkaError, OSError, TimeoutError) as exc:
                raise BrokerUnavailable() from exc
            health.report("relay.kafka", True)
            self._acked = [r["id"] for r in rows]
        self._acked = []
        health.report("relay.database", True)
        for topic, count in Counter(row["topic"] for row in rows).items():
            metrics.OUTBOX_PUBLISHED.labels(topic).inc(count)
        self.published += len(rows)
        return len(rows)

    async def drain(self, timeout_s: float = 60.0) -> int:
        """Publish everything accepted so far, then return rows published by this relay (simulator,
        tests). When another relay leads, it does the publishing and this one waits for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self.pool.acquire() as conn:
            last = await conn.fetchval("SELECT max(id) FROM outbox_pending")
        if last is None:
            return 0
        total = 0
        self.leadership.start()
        try:
            while True:
                if self.leadership.held:
                    sent = await self.publish_pending()
                    total += sent
                    if sent:
                        continue
                async with self.pool.acquire() as conn:
                    pending = await pending_through(conn, last)
                if not pending:
                    return total
                if loop.time() > deadline:
                    raise TimeoutError(f"outbox not drained within {timeout_s}s")
                await asyncio.sleep(0.05)
        finally:
            self._close_connection()
            await self.leadership.close()
            self.leadership = Leadership(self.settings, "relay", AdvisoryLock.RELAY)

    async def close(self) -> None:
        self._close_connection()
        await self._drop_producer()


async def pending_through(conn: asyncpg.Connection, last: int) -> int:
    """How many outbox rows up to id ``last`` are not yet in Kafka."""
    pending: int = await conn.fetchval("SELECT count(*) FROM outbox_pending WHERE id <= $1", last)
    return pending


# The first pending rows, their marks deleted in the batch's transaction: it commits once Kafka has them
# (else it rolls back and they are pending again). A relay that found a mark deleted by a concurrent
# transaction skips it once that commits (the DELETE re-checks the row it waited for). The ids as an
# array: the marks are found by their primary key whatever the backlog (as a semi-join, PostgreSQL chose
# to scan every mark for each batch).
_TAKE = """
WITH taken AS (
    DELETE FROM outbox_pending WHERE id = ANY(ARRAY(SELECT id FROM outbox_pending ORDER BY id LIMIT $1))
    RETURNING id
)
SELECT o.id, o.topic, o.key, o.headers, o.value, o.event_id FROM taken JOIN outbox o USING (id) ORDER BY o.id
"""


async def _send(producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]) -> list[asyncio.Future[object]]:
    """Hand ``rows`` to ``producer`` as record batches, one a partition (more where one fills up), in id
    order within each partition; the futures of their acknowledgements.

    The partition is the default partitioner's (murmur2 of the key, as ``infra.kafka.partitions_of``
    computes it for a whole batch at once): the same a record sent alone would get. Sent one record at a
    time, the producer's own path cost the relay ~40 µs of CPU per row (its pure-Python murmur2, a
    future and a metadata check per record)."""
    by_topic: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_topic.setdefault(row["topic"], []).append(row)
    futures: list[asyncio.Future[object]] = []
    for topic, records in by_topic.items():
        every = sorted(await producer.partitions_for(topic))
        batches: dict[int, list[asyncpg.Record]] = {}
        for record, index in zip(
            records, partitions_of([r["key"] for r in records], len(every)), strict=True
        ):
            batches.setdefault(every[index], []).append(record)
        for partition, part in batches.items():
            builder = producer.create_batch()
            for record in part:
                headers = [(h, v.encode()) for h, v in record["headers"].items()]
                while (
                    builder.append(key=record["key"], value=record["value"], timestamp=None, headers=headers)
                    is None
                ):
                    futures.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = producer.create_batch()  # full: the rest of the partition's rows in another
            builder.close()  # complete: the producer sends it now instead of lingering for more
            futures.append(await producer.send_batch(builder, topic, partition=partition))
    return futures
