"""Dead-letter topic: poison messages go there with their reason, and the consumer goes on.

The original key, headers and value are kept byte for byte (personal fields in them are sealed, so the
message shows operators nothing readable); ``dlq_*`` headers say why and where from. A register row in
``dead_letters`` is written in the same transaction as the consumer's positions, so the register and the
topic agree even across crashes (a re-sent letter is recognised by its source coordinates). The register
also keeps the original record's digest: the console redrives only a dead-letter record with that digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from domain.monitoring import record_digest, redrive_headers
from infra import metrics
from infra.config import Settings
from infra.kafka import start_producer
from infra.logging import get_logger

log = get_logger("deadletter")

MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    value: bytes | None
    reason: str
    digest: bytes  # of the original record (``record_digest``): the desk redrives only a record with it

    @classmethod
    def of(cls, rec: ConsumerRecord, reason: str) -> DeadLetter:
        headers = tuple(rec.headers or ())
        return cls(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            key=rec.key,
            headers=headers,
            value=rec.value,
            reason=reason[:MAX_REASON],
            digest=record_digest(rec.key, headers, rec.value),
        )

    def kafka_headers(self, consumer: str) -> list[tuple[str, bytes]]:
        original = redrive_headers(self.headers)
        return [
            *original,
            ("dlq_reason", self.reason.encode()),
            ("dlq_source_topic", self.topic.encode()),
            ("dlq_source_partition", str(self.partition).encode()),
            ("dlq_source_offset", str(self.offset).encode()),
            ("dlq_time", datetime.now(UTC).isoformat().encode()),
            ("dlq_consumer", consumer.encode()),
        ]


def reason_class(reason: str) -> str:
    """A low-cardinality label for metrics: the part before the first colon."""
    return reason.split(":", 1)[0][:60]


class DeadLetterPublisher:
    def __init__(self, settings: Settings, *, consumer: str) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            self._producer = await start_producer(self._settings)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        await self.start()
        assert self._producer is not None
        futures = [
            await self._producer.send(
                self._settings.deadletter_topic,
                value=d.value,
                key=d.key,
                headers=d.kafka_headers(self._consumer),
            )
            for d in letters
        ]
        for fut in futures:
            await fut
        for d in letters:
            metrics.DEAD_LETTERS.labels(self._consumer, reason_class(d.reason)).inc()
            log.warning(
                "dead-lettered",
                consumer=self._consumer,
                source_topic=d.topic,
                source_partition=d.partition,
                source_offset=d.offset,
                reason=d.reason,
            )

    async def register(self, conn: asyncpg.Connection, letters: Sequence[DeadLetter]) -> None:
        await conn.executemany(
            "INSERT INTO dead_letters (consumer, source_topic, source_partition, source_offset, reason, digest) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            [(self._consumer, d.topic, d.partition, d.offset, d.reason, d.digest) for d in letters],
        )
