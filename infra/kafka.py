"""Kafka clients configured the way every part of the hub needs them."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from infra.config import Settings


async def start_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A started idempotent ``acks=all`` producer (no duplicates from its own retries, nothing
    acknowledged before every in-sync replica has it); closed again if it cannot start."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all", **options
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
