"""Reading Kafka for operators: partitions and begin/end offsets, and single records by coordinates.

One group-less aiokafka consumer (no group: it never joins, commits or disturbs anyone's lag) serves
offset look-ups; a lock serialises the calls that assign partitions (record reads, topic scans).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from domain.monitoring import PartitionOffsets
from infra.config import Settings
from infra.kafka import UNREADABLE_BATCH, client_options

TIMEOUT_S = 10.0
_UNREADABLE = UNREADABLE_BATCH  # a record batch the client can never read (infra.kafka)
LAYOUT_TTL_S = 30.0  # partition layouts change only when an operator adds partitions or topics


class KafkaProbe:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()
        self._layout: dict[str, list[int]] = {}
        self._layout_at = -LAYOUT_TTL_S

    async def _partitions(self, topics: Sequence[str]) -> dict[str, list[int]]:
        """Partition ids of those ``topics`` that exist. Cluster metadata costs about 100 ms a call, so
        the layout is kept for ``LAYOUT_TTL_S`` unless a topic asked for is not in it yet."""
        now = asyncio.get_running_loop().time()
        if now - self._layout_at > LAYOUT_TTL_S or any(t not in self._layout for t in topics):
            wanted = [*dict.fromkeys([*topics, *self._layout])]
            found = await self._describe(wanted)
            self._layout = {t: found.get(t, []) for t in wanted}  # missing topics: [] until the next refresh
            self._layout_at = now
        return {t: self._layout[t] for t in topics if self._layout.get(t)}

    async def _describe(self, topics: Sequence[str]) -> dict[str, list[int]]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                **client_options(self._settings), request_timeout_ms=int(TIMEOUT_S * 1000)
            )
            await admin.start()
            self._admin = admin
        existing = set(await self._admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t in existing]
        if not wanted:
            return {}
        described = await self._admin.describe_topics(wanted)
        return {
            d["topic"]: sorted(p["partition"] for p in d["partitions"])
            for d in described
            if not d.get("error_code")
        }

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_options(self._settings),
                enable_auto_commit=False,
                request_timeout_ms=int(TIMEOUT_S * 1000),
                client_id="ittai-console",
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def offsets(self, topics: Sequence[str]) -> dict[str, tuple[PartitionOffsets, ...]]:
        """Begin and end offsets of every partition of ``topics`` that exists (missing topics: empty)."""
        consumer = await self._client()
        async with asyncio.timeout(TIMEOUT_S):
            partitions = await self._partitions(topics)
            tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
            ends = await consumer.end_offsets(tps) if tps else {}
            begins = await consumer.beginning_offsets(tps) if tps else {}
        result: dict[str, list[PartitionOffsets]] = {t: [] for t in topics}
        for tp in tps:
            result[tp.topic].append(PartitionOffsets(tp.partition, begins[tp], ends[tp]))
        return {t: tuple(parts) for t, parts in result.items()}

    async def read_one(self, topic: str, partition: int, offset: int) -> ConsumerRecord | None:
        """The record at ``topic``/``partition``/``offset``, or None if it is not there."""
        async with self._lock:
            consumer = await self._client()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            try:
                consumer.seek(tp, offset)
                async with asyncio.timeout(TIMEOUT_S):
                    end = (await consumer.end_offsets([tp]))[tp]
                    if offset >= end:
                        return None
                    while await consumer.position(tp) <= offset:
                        batch = await consumer.getmany(tp, timeout_ms=500)
                        for rec in batch.get(tp, []):
                            if rec.offset == offset:
                                return rec
                            if rec.offset > offset:
                                return None  # compacted away
                return None
            finally:
                consumer.assign([])

    async def scan(self, topic: str, start: dict[int, int], *, limit: int = 5000) -> list[ConsumerRecord]:
        """Records of ``topic`` from ``start`` (partition → offset; missing: the beginning) up to the end
        as it is now, at most about ``limit`` of them (call again from the new positions for more)."""
        async with self._lock:
            consumer = await self._client()
            async with asyncio.timeout(TIMEOUT_S * 3):
                partitions = await self._partitions([topic])
                tps = [TopicPartition(topic, p) for p in partitions.get(topic, [])]
                if not tps:
                    return []
                ends = await consumer.end_offsets(tps)
                begins = await consumer.beginning_offsets(tps)
                first = {tp: max(start.get(tp.partition, 0), begins[tp]) for tp in tps}
                pending = [tp for tp in tps if first[tp] < ends[tp]]
                if not pending:
                    return []
                consumer.assign(pending)
                try:
                    for tp in pending:
                        consumer.seek(tp, first[tp])
                    records: list[ConsumerRecord] = []
                    while pending and len(records) < limit:
                        at = {tp: await consumer.position(tp) for tp in pending}
                        try:
                            batch = await consumer.getmany(*pending, timeout_ms=500)
                        except _UNREADABLE:
                            batch = await _past_unreadable(consumer, at)
                        for tp, part in batch.items():
                            records.extend(r for r in part if r.offset < ends[tp])
                        pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
                    return records
                finally:
                    consumer.assign([])


async def _past_unreadable(
    consumer: AIOKafkaConsumer, at: dict[TopicPartition, int]
) -> dict[TopicPartition, list[ConsumerRecord]]:
    """What a fetch that raised ``UnicodeDecodeError`` would have given, and past the record that made it:
    aiokafka decodes header names as UTF-8 and refuses the whole fetch over one that is not (anyone who may
    write the topic can put one there; so a batch in a codec it lacks, ``UnsupportedCodecError``), having moved past what it drained of the other partitions. So each
    partition is read again from ``at`` on its own, a record a call where it raises, up to that record,
    which is passed (nothing the runtime wrote: it cannot be read, nor redriven)."""
    found: dict[TopicPartition, list[ConsumerRecord]] = {}
    for tp, offset in at.items():
        consumer.seek(tp, offset)
        try:
            found[tp] = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
            continue
        except _UNREADABLE:
            consumer.seek(tp, offset)
        read: list[ConsumerRecord] = []
        try:
            while got := (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp, []):
                read += got
        except _UNREADABLE:
            consumer.seek(tp, read[-1].offset + 2 if read else offset + 1)
        found[tp] = read
    return found
