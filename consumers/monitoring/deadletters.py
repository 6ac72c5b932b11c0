"""Dead letters for operators: locate them in the dead-letter topic, redrive them, or discard them.

The register (``dead_letters``, written by the consumer runtime) is the list; the messages themselves
live in the dead-letter topic. ``DeadLetterDesk.sync`` reads that topic incrementally and records where
each letter sits, with its display-safe headers and its record's digest, so a redrive reads one record.
Anyone who may write the dead-letter topic can put a record there claiming a real letter's position, so
a letter is shown and redriven only from a record whose digest equals the one its register row keeps
(written by the consumer from the record it refused); a planted record is indexed but never used.

Redrive puts the original key, headers (minus ``dlq_*``) and value back into the outbox for the source
topic — the bytes as the client sent them; the console never opens a sealed block — and marks every
register row of that source record resolved, in one transaction with the audit row; the relay publishes
it. So nobody but the relay writes the event topics (on a secure cluster the console's Kafka user may
not), and a redrive is exactly as durable as an accepted event. The register rows are locked in that
transaction, so two operators cannot redrive one letter twice. Consumers apply an event id once, so a
redriven event that had taken effect after all costs a duplicate record, never a duplicate effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

import asyncpg

from consumers.monitoring import queries
from consumers.monitoring.kafka_probe import KafkaProbe
from domain.monitoring import dlq_header, outbox_row_headers, record_digest, safe_headers
from infra.auth import Principal
from infra.config import Settings
from infra.db import OUTBOX_CHANNEL
from infra.logging import get_logger

log = get_logger("console.deadletters")


def _ascii_number(text: str | None) -> TypeGuard[str]:
    """A dead letter's partition or offset header as the runtime writes it: ASCII digits (``str.isdigit``
    is true of ``²`` and ``٣``, on which ``int()`` fails or reads another script)."""
    return text is not None and 0 < len(text) <= 19 and text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Outcome:
    letter_id: int
    ok: bool
    detail: str


class DeadLetterDesk:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, probe: KafkaProbe) -> None:
        self.settings = settings
        self.pool = pool
        self.probe = probe
        self._sync_lock = asyncio.Lock()

    async def close(self) -> None:
        """Nothing of its own to release (Kafka reads go through the probe, which the caller closes)."""

    # -- locating letters ---------------------------------------------------------------------

    async def sync(self) -> int:
        """Index dead letters added to the topic since the last sync; returns how many were read."""
        topic = self.settings.deadletter_topic
        async with self._sync_lock:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT partition, next_offset FROM dead_letter_scan_positions WHERE dlq_topic = $1",
                    topic,
                )
            start = {r["partition"]: r["next_offset"] for r in rows}
            records = await self.probe.scan(topic, start)
            if not records:
                return 0
            located = []
            positions: dict[int, int] = {}
            for rec in records:
                positions[rec.partition] = max(positions.get(rec.partition, 0), rec.offset + 1)
                headers = list(rec.headers or ())
                consumer = dlq_header(headers, "dlq_consumer")
                source = dlq_header(headers, "dlq_source_topic")
                part = dlq_header(headers, "dlq_source_partition")
                offset = dlq_header(headers, "dlq_source_offset")
                if not (consumer and source and _ascii_number(part) and _ascii_number(offset)):
                    continue  # not written by the runtime: nothing to redrive it to
                located.append(
                    (
                        topic,
                        rec.partition,
                        rec.offset,
                        consumer,
                        source,
                        int(part),
                        int(offset),
                        safe_headers(headers),
                        record_digest(rec.key, headers, rec.value),
                    )
                )
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    "INSERT INTO dead_letter_locations (dlq_topic, dlq_partition, dlq_offset, consumer, "
                    "source_topic, source_partition, source_offset, headers, digest) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                    located,
                )
                await conn.executemany(
                    "INSERT INTO dead_letter_scan_positions (dlq_topic, partition, next_offset) VALUES ($1, $2, $3) "
                    "ON CONFLICT (dlq_topic, partition) DO UPDATE SET next_offset = "
                    "GREATEST(dead_letter_scan_positions.next_offset, EXCLUDED.next_offset)",
                    [(topic, p, o) for p, o in positions.items()],
                )
            return len(records)

    # -- operator actions ---------------------------------------------------------------------

    async def redrive(self, letter_ids: Sequence[int], actor: Principal) -> list[Outcome]:
        await self.sync()
        return [await self._redrive_one(i, actor) for i in dict.fromkeys(letter_ids)]

    async def discard(self, letter_ids: Sequence[int], actor: Principal) -> list[Outcome]:
        return [await self._discard_one(i, actor) for i in dict.fromkeys(letter_ids)]

    async def _lock_group(self, conn: asyncpg.Connection, letter_id: int) -> list[asyncpg.Record] | str:
        """Lock the open register rows of the letter's source record, or say why there are none."""
        row = await conn.fetchrow(
            "SELECT source_topic, source_partition, source_offset FROM dead_letters WHERE id = $1", letter_id
        )
        if row is None:
            return "no such dead letter"
        if row["source_topic"] not in self.settings.event_topics:
            return f"source topic {row['source_topic']} is not an event topic of this hub"
        group = await conn.fetch(
            "SELECT d.id, d.consumer, d.digest FROM dead_letters d "
            "WHERE d.source_topic = $1 AND d.source_partition = $2 AND d.source_offset = $3 "
            "AND NOT EXISTS (SELECT 1 FROM dead_letter_resolutions r WHERE r.dead_letter_id = d.id) "
            "ORDER BY d.id FOR UPDATE",
            row["source_topic"],
            row["source_partition"],
            row["source_offset"],
        )
        # The NOT EXISTS was evaluated before the lock was granted: re-check under it.
        resolved = await conn.fetch(
            "SELECT dead_letter_id FROM dead_letter_resolutions WHERE dead_letter_id = ANY($1::bigint[])",
            [g["id"] for g in group],
        )
        done = {r["dead_letter_id"] for r in resolved}
        group = [g for g in group if g["id"] not in done]
        if not group:
            return "already resolved"
        return group

    async def _redrive_one(self, letter_id: int, actor: Principal) -> Outcome:
        async with self.pool.acquire() as conn, conn.transaction():
            group = await self._lock_group(conn, letter_id)
            target = f"dead letter #{letter_id}"
            if isinstance(group, str):
                return await self._refused(conn, "redrive", letter_id, target, group, actor)
            ids = [g["id"] for g in group]
            if all(g["digest"] is None for g in group):
                # Registered before migration 055: no digest tells the original from a planted record at
                # the same position, and publishing a planted one is what the digest exists to prevent.
                why = "registered before record digests were kept (migration 055): discard it instead"
                return await self._refused(conn, "redrive", letter_id, target, why, actor)
            location = await conn.fetchrow(
                "SELECT l.dlq_topic, l.dlq_partition, l.dlq_offset, l.source_topic, l.source_partition, "
                "l.source_offset, l.digest FROM dead_letter_locations l JOIN dead_letters d ON "
                "d.source_topic = l.source_topic AND d.source_partition = l.source_partition AND "
                "d.source_offset = l.source_offset AND d.consumer = l.consumer AND d.digest = l.digest "
                "WHERE d.id = ANY($1::bigint[]) ORDER BY l.dlq_partition, l.dlq_offset LIMIT 1",
                ids,
            )
            if location is None:
                return await self._refused(
                    conn, "redrive", letter_id, target, "message not found in the dead-letter topic", actor
                )
            record = await self.probe.read_one(
                location["dlq_topic"], location["dlq_partition"], location["dlq_offset"]
            )
            if record is None:
                return await self._refused(
                    conn, "redrive", letter_id, target, "message no longer in the dead-letter topic", actor
                )
            if record_digest(record.key, record.headers or (), record.value) != location["digest"]:
                # The topic was recreated since the sync (offsets reused): not the record the digest names.
                why = "the record at its location in the dead-letter topic is not the registered one"
                return await self._refused(conn, "redrive", letter_id, target, why, actor)
            headers = outbox_row_headers(record.headers or ())
            if record.key is None or record.value is None:
                headers = "the record has no key or no value, which the outbox cannot carry"
            if isinstance(headers, str):
                return await self._refused(conn, "redrive", letter_id, target, headers, actor)
            row = await conn.fetchval(
                "INSERT INTO outbox (topic, key, headers, value, event_id, origin) "
                "VALUES ($1, $2, $3, $4, $5, 'console-redrive') RETURNING id",
                location["source_topic"],
                record.key,
                headers,
                record.value,
                headers["ce_id"],
            )
            await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
            detail = (
                f"{location['source_topic']} p{location['source_partition']}@{location['source_offset']} "
                f"queued for the relay as outbox row {row}; resolves register rows {ids}"
            )
            await self._settle(conn, actor, "redrive", target, detail, ids, "redriven")
        log.info("dead letter redriven", letter=letter_id, operator=actor.client_id, outbox_row=row)
        return Outcome(letter_id, True, detail)

    async def _discard_one(self, letter_id: int, actor: Principal) -> Outcome:
        async with self.pool.acquire() as conn, conn.transaction():
            group = await self._lock_group(conn, letter_id)
            target = f"dead letter #{letter_id}"
            if isinstance(group, str):
                return await self._refused(conn, "discard", letter_id, target, group, actor)
            ids = [g["id"] for g in group]
            detail = f"resolves register rows {ids}"
            await self._settle(conn, actor, "discard", target, detail, ids, "discarded")
        log.info("dead letter discarded", letter=letter_id, operator=actor.client_id)
        return Outcome(letter_id, True, detail)

    async def _settle(
        self,
        conn: asyncpg.Connection,
        actor: Principal,
        action: str,
        target: str,
        detail: str,
        ids: list[int],
        resolution: str,
    ) -> None:
        """Record who did what and resolve the register rows, in the caller's transaction."""
        action_id = await queries.record_action(
            conn,
            client_id=actor.client_id,
            actor=actor.name,
            action=action,
            target=target,
            outcome="ok",
            detail=detail,
        )
        await self._resolve(conn, ids, resolution, action_id)

    async def _resolve(
        self, conn: asyncpg.Connection, ids: list[int], resolution: str, action_id: int
    ) -> None:
        await conn.executemany(
            "INSERT INTO dead_letter_resolutions (dead_letter_id, resolution, action_id) VALUES ($1, $2, $3)",
            [(i, resolution, action_id) for i in ids],
        )

    async def _refused(
        self, conn: asyncpg.Connection, action: str, letter_id: int, target: str, why: str, actor: Principal
    ) -> Outcome:
        await queries.record_action(
            conn,
            client_id=actor.client_id,
            actor=actor.name,
            action=action,
            target=target,
            outcome="refused",
            detail=why,
        )
        return Outcome(letter_id, False, why)
