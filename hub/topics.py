"""Topic layout: one topic per event family, the dead-letter topic and the feed topic.

``ensure_topics`` creates what is missing and checks what exists; a topic whose partitions, replication
factor or ``min.insync.replicas`` differ from configuration is reported as a mismatch, never silently
accepted (Kafka cannot lower partitions or change replication in place; an operator decides).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from hub.config import Settings

RETENTION_MS_FOREVER = "-1"  # events are the record; the shared view replays them from the start


def wanted_topics(settings: Settings) -> list[str]:
    return [*settings.event_topics, settings.deadletter_topic, settings.feed_topic]


@dataclass(frozen=True)
class TopicReport:
    topic: str
    status: str  # created | ok | mismatch
    detail: str = ""


async def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[TopicReport]:
    names = topics or wanted_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        reports: list[TopicReport] = []
        missing = [t for t in names if t not in existing]
        if missing:
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
            with contextlib.suppress(
                TopicAlreadyExistsError
            ):  # a concurrent ensure won the race; the check below still runs
                await admin.create_topics(new, timeout_ms=30000)
            reports += [TopicReport(t, "created") for t in missing]
        present = [t for t in names if t in existing]
        if present:
            reports += await _check(admin, settings, present)
        return reports
    finally:
        await admin.close()


async def _check(admin: AIOKafkaAdminClient, settings: Settings, topics: list[str]) -> list[TopicReport]:
    described = await admin.describe_topics(topics)
    configs = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, configs=["min.insync.replicas"]) for t in topics]
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
