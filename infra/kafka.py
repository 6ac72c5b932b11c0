"""Kafka clients configured the way every part of the hub needs them.

``client_options`` is the one place a client learns where the cluster is and how to prove who it is:
every producer, consumer and admin client of the hub is built with it, so a secure cluster (SASL_SSL,
SCRAM-SHA-512, the cluster's CA) needs settings, not code, and no client can be left on plaintext.
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from infra.config import Settings


class KafkaSecurityMisconfigured(ValueError):
    """The Kafka security settings cannot work (says which setting to fix)."""


@lru_cache(maxsize=8)
def _ssl_context(cafile: Path | None) -> ssl.SSLContext:
    # Verifies the broker's certificate and host name against ``cafile`` (else the system's CAs).
    return create_ssl_context(cafile=str(cafile) if cafile else None)


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: bootstrap servers and security."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap, "security_protocol": protocol}
    if protocol.startswith("SASL_"):
        if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
            raise KafkaSecurityMisconfigured(
                f"HUB_KAFKA_SECURITY_PROTOCOL is {protocol}: set HUB_KAFKA_SASL_USERNAME and "
                "HUB_KAFKA_SASL_PASSWORD to this service's Kafka user"
            )
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    if protocol.endswith("SSL"):
        if settings.kafka_ssl_cafile is not None and not settings.kafka_ssl_cafile.is_file():
            raise KafkaSecurityMisconfigured("HUB_KAFKA_SSL_CAFILE does not name a readable file")
        options["ssl_context"] = _ssl_context(settings.kafka_ssl_cafile)
    return options


async def start_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A started idempotent ``acks=all`` producer (no duplicates from its own retries, nothing
    acknowledged before every in-sync replica has it); closed again if it cannot start."""
    producer = AIOKafkaProducer(**client_options(settings), enable_idempotence=True, acks="all", **options)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
