"""Every long-running service that keeps unwrapped data keys in memory follows ``ittai.erasure.v1``.

A data key cached in a process (``infra.crypto.KeyStore``: the adapters', the shared-view and feed APIs',
the portal's) must not outlive the person's erasure in that process's memory. Each such service runs one
follower: it reads the erasure topic from its end (every process sees every erasure: no consumer group,
nothing committed) and, for each erasure from the hub's operator side and signed by it (``infra.signing``),
drops the person's key from every key store of the process (``forget_everywhere``). A record that is not a
valid, signed erasure from that source is ignored here — the consumers dead-letter it; forgetting is all this follower ever does.

Whenever the follower (re)takes its place at the topic's end — at start, after Kafka was away — it empties
every cache of the process first: erasures published meanwhile were not seen, and a cache only saves
work (every key is read again from the database, which no longer has an erased person's).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from contracts.envelope import Family, PoisonMessage, decode
from domain.provenance import OPERATOR_SOURCE
from infra.config import Settings
from infra.crypto import forget_all, forget_everywhere
from infra.kafka import client_options
from infra.logging import get_logger
from infra.signing import erasure_verifier

log = get_logger("erasure-follower")


class ErasureFollower:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(Family.ERASURE)
        self.verifier = erasure_verifier(settings)
        self.ready = asyncio.Event()  # set once positioned at the topic's end (caches emptied)
        self.forgotten = 0  # erasures applied to this process's key stores
        self.unreadable = 0  # records skipped for an error nobody foresaw (type logged, never the record)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            consumer = AIOKafkaConsumer(
                **client_options(self.settings), group_id=None, enable_auto_commit=False
            )
            try:
                await consumer.start()
                await self._take_place(consumer)
                backoff = 0.2
                while not self._stop.is_set():
                    batches = await consumer.getmany(timeout_ms=500)
                    for records in batches.values():
                        for record in records:
                            self._apply(record.key, record.headers, record.value)
            except UnicodeDecodeError:
                # A header name that is not UTF-8: aiokafka refuses the whole fetch, at every try. Its place is
                # taken again at the topic's end, caches emptied (what it could not read may be an erasure).
                self.ready.clear()
                self.unreadable += 1
                log.warning("erasure topic record not readable by the Kafka client; following from its end")
            except (KafkaError, OSError, TimeoutError) as exc:
                self.ready.clear()
                log.warning(
                    "erasure topic unavailable, retrying", component="kafka", error=type(exc).__name__
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)
            finally:
                with contextlib.suppress(KafkaError, OSError, TimeoutError):
                    await consumer.stop()

    async def _take_place(self, consumer: AIOKafkaConsumer) -> None:
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise KafkaError(f"topic {self.topic} not found")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end now, so nothing published from here on is missed
            await consumer.position(tp)
        forget_all()  # erasures before this point were not seen by this follower
        self.ready.set()

    def _apply(self, key: bytes | None, headers: object, value: bytes | None) -> None:
        try:
            event = decode(key, headers, value)  # type: ignore[arg-type]
            signed = (
                event.family is Family.ERASURE
                and event.source == OPERATOR_SOURCE
                and self.verifier.verify(event)
            )
        except PoisonMessage:
            return
        except Exception as exc:  # a record nobody foresaw must not end the follower (and its forgetting)
            self.unreadable += 1
            log.warning("erasure record unreadable, skipped", error=type(exc).__name__)
            return
        if signed:
            forget_everywhere([event.subject])
            self.forgotten += 1
