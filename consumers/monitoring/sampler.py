"""The console's background loop: sample end offsets (for rates and charts), index new dead letters,
and keep the Prometheus view of flows current.

The gauges are served by a custom collector that reads the latest snapshot at scrape time (the
prometheus_client pattern for figures owned by another system), so a partition or consumer that
disappears also disappears from ``/metrics``. Labels are topic, partition and consumer names only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from consumers.monitoring import queries
from consumers.monitoring.deadletters import DeadLetterDesk
from consumers.monitoring.kafka_probe import KafkaProbe
from consumers.monitoring.snapshot import Snapshot, collect, monitored_topics
from infra import metrics
from infra.config import Settings
from infra.logging import get_logger

log = get_logger("console.sampler")


class FlowCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot
        if snap is None:
            return
        end = GaugeMetricFamily(
            "ittai_topic_end_offset", "End offset per partition", labels=["topic", "partition"]
        )
        for t in snap.topics:
            for p in t.partitions:
                end.add_metric([t.topic, str(p.partition)], p.end)
        yield end
        lag = GaugeMetricFamily(
            "ittai_consumer_lag", "Records not yet processed", labels=["consumer", "topic", "partition"]
        )
        last = GaugeMetricFamily(
            "ittai_consumer_last_processed_timestamp_seconds",
            "When a batch was last committed",
            labels=["consumer"],
        )
        for c in snap.consumers:
            for pl in c.partitions:
                lag.add_metric([c.consumer, pl.topic, str(pl.partition)], pl.lag)
            if c.last_processed_at is not None:
                last.add_metric([c.consumer], c.last_processed_at.timestamp())
        yield lag
        yield last
        letters = GaugeMetricFamily(
            "ittai_dead_letters_open", "Dead-lettered records neither redriven nor discarded"
        )
        letters.add_metric([], snap.letters.open_messages)
        yield letters
        backlog = GaugeMetricFamily(
            "ittai_outbox_backlog_by_origin", "Accepted events not yet published", labels=["origin"]
        )
        for a in snap.outbox.adapters:
            backlog.add_metric([a.origin], a.backlog)
        yield backlog
        yield from _alerting_gauges(snap)


def _alerting_gauges(snap: Snapshot) -> Iterator[GaugeMetricFamily]:
    """The figures the alert rules in deploy/ watch; always present (0 when there is nothing to say)."""
    oldest = snap.outbox.oldest_pending
    yield GaugeMetricFamily(
        "ittai_outbox_oldest_pending_age_seconds",
        "Age of the oldest accepted event not yet published to Kafka (0: none pending)",
        value=(snap.taken_at - oldest).total_seconds() if oldest else 0.0,
    )
    removal = GaugeMetricFamily(
        "ittai_withdrawal_removal_seconds",
        "Consent withdrawal to removal from the shared view (p50 and max over recent withdrawals)",
        labels=["stat"],
    )
    if snap.consent is not None:
        for stat, ms in (("p50", snap.consent.withdrawal_p50_ms), ("max", snap.consent.withdrawal_max_ms)):
            if ms is not None:
                removal.add_metric([stat], float(ms) / 1000)
    yield removal
    overdue = snap.feeds_overdue_s or ()
    yield GaugeMetricFamily(
        "ittai_feeds_overdue", "Feeds of closed months waiting for a revision past their cutoff",
        value=len(overdue),
    )  # fmt: skip
    yield GaugeMetricFamily(
        "ittai_feed_overdue_seconds_max",
        "Longest wait of a closed month's feed for its next revision past the cutoff (0: none)",
        value=max(overdue, default=0.0),
    )


FLOWS = FlowCollector()
_registered = False


def register_collector() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(FLOWS)
        _registered = True


class Sampler:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, probe: KafkaProbe, desk: DeadLetterDesk
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.probe = probe
        self.desk = desk
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def tick(self) -> Snapshot:
        try:
            offsets = await self.probe.offsets(monitored_topics(self.settings))
            totals = {t: sum(p.end for p in parts) for t, parts in offsets.items() if parts}
            async with self.pool.acquire() as conn:
                await queries.record_samples(
                    conn, totals, keep_hours=self.settings.console_sample_retention_h
                )
            await self.desk.sync()
        except (KafkaError, OSError, TimeoutError) as exc:
            # Kafka down is when the outbox figures matter most: the snapshot below is still taken
            # (it marks Kafka's figures missing) so /metrics keeps the outbox age current for alerts.
            log.warning("sampling Kafka failed, will retry", error=type(exc).__name__)
        snap = await collect(self.settings, self.pool, self.probe)
        FLOWS.snapshot = snap
        metrics.OUTBOX_BACKLOG.set(snap.outbox.backlog)
        return snap

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except (KafkaError, OSError, TimeoutError, asyncpg.PostgresError) as exc:
                # The console stays up when the stack wobbles; the pages say what they cannot read.
                log.warning("sampling failed, will retry", error=type(exc).__name__)
            except Exception as exc:  # a bug here must not end sampling for the console's lifetime
                log.error("sampling failed unexpectedly", error=type(exc).__name__, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.console_sample_interval_s)
