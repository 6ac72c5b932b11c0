"""Topic layout: one topic per event family, the dead-letter topic and the feed topic.

``ensure_topics`` creates what is missing and checks what exists; a topic whose partitions, replication
factor or ``min.insync.replicas`` differ from configuration is reported as a mismatch, never silently
accepted (Kafka cannot lower partitions or change replication in place; an operator decides).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from infra.config import Settings
from infra.kafka import client_options

RETENTION_MS_FOREVER = "-1"  # events are the record; the shared view replays them from the start


# Told of each namespace before ``ensure_topics`` makes topics in it. Test sessions and benches lease the
# namespaces they make here (devtools.stack.namespaces), so what a killed run leaves is swept later.
namespace_observers: list[Callable[[Settings], None]] = []


def wanted_topics(settings: Settings) -> list[str]:
    return [*settings.event_topics, settings.deadletter_topic, settings.feed_topic]


@dataclass(frozen=True)
class TopicReport:
    topic: str
    status: str  # created | ok | mismatch
    detail: str = ""


async def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[TopicReport]:
    names = topics or wanted_topics(settings)
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        reports: list[TopicReport] = []
        missing = [t for t in names if t not in existing]
        if missing:
            for observe in namespace_observers:
                observe(settings)
            new = [
                NewTopic(
                    name=t,
                    num_partitions=settings.topic_partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs={
                        "min.insync.replicas": str(settings.min_insync_replicas),
                        "retention.ms": RETENTION_MS_FOREVER,
                    },
                )
                for t in missing
            ]
            response = await admin.create_topics(new, timeout_ms=30000)
            for topic, code, *rest in response.topic_errors:
                if code == 0:
                    reports.append(TopicReport(topic, "created"))
                elif code == TopicAlreadyExistsError.errno:
                    existing.add(topic)  # created meanwhile (or not yet in our metadata): check it below
                else:
                    raise RuntimeError(
                        f"creating topic {topic} failed: error {code} {rest[0] if rest else ''}"
                    )
        created = [r.topic for r in reports]
        if created:
            await _describe_when_ready(admin, created)
        present = [t for t in names if t in existing]
        if present:
            reports += await _check(admin, settings, present)
        return reports
    finally:
        await admin.close()


async def _describe_when_ready(admin: AIOKafkaAdminClient, topics: list[str]) -> list[dict[str, Any]]:
    """Describe topics, waiting (≤15 s) until every partition has a leader: a topic just created (here
    or by a concurrent ``ensure``) takes a moment to appear in every broker's metadata."""
    deadline = time.monotonic() + 15
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
        ready = all(
            info["error_code"] == 0
            and info["partitions"]
            and all(p["leader"] >= 0 for p in info["partitions"])
            for info in described
        )
        if ready or time.monotonic() > deadline:
            return described
        await asyncio.sleep(0.2)


async def _check(admin: AIOKafkaAdminClient, settings: Settings, topics: list[str]) -> list[TopicReport]:
    described = await _describe_when_ready(admin, topics)
    configs = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, configs={"min.insync.replicas": None}) for t in topics]
    )
    min_isr: dict[str, str] = {}
    for response in configs:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = resource[3], resource[4]
            for entry in entries:
                if entry[0] == "min.insync.replicas":
                    min_isr[name] = entry[1]
    reports = []
    for info in described:
        name = info["topic"]
        partitions = info["partitions"]
        problems = []
        if len(partitions) != settings.topic_partitions:
            problems.append(f"partitions {len(partitions)}, configured {settings.topic_partitions}")
        rf = min((len(p["replicas"]) for p in partitions), default=0)
        if rf != settings.replication_factor:
            problems.append(f"replication factor {rf}, configured {settings.replication_factor}")
        isr = min_isr.get(name)
        if isr is not None and int(isr) != settings.min_insync_replicas:
            problems.append(f"min.insync.replicas {isr}, configured {settings.min_insync_replicas}")
        reports.append(TopicReport(name, "mismatch" if problems else "ok", "; ".join(problems)))
    return reports
