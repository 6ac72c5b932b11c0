"""Kafka clients configured the way every part of the hub needs them.

``client_options`` is the one place a client learns where the cluster is and how to prove who it is:
every producer, consumer and admin client of the hub is built with it, so a secure cluster (SASL_SSL,
SCRAM-SHA-512, the cluster's CA) needs settings, not code, and no client can be left on plaintext.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnsupportedCodecError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from infra.config import Settings

# What aiokafka raises out of ``getmany`` over a record batch it can never read, at every try: a header name
# that is not UTF-8 (it decodes names as it unpacks a fetch), a compression codec whose library this
# process lacks. Not its CorruptRecordException: a CRC that does not match may be the network's, and the
# batch is fetched again. The consumers' runtime and the console's scan read past such a record.
UNREADABLE_BATCH = (UnicodeDecodeError, UnsupportedCodecError)


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


_SEED, _M = 0x9747B28C, np.uint32(0x5BD1E995)


def partitions_of(keys: Sequence[bytes], partitions: int) -> list[int]:
    """The partition the default partitioner (aiokafka's and the Java client's: murmur2 of the key's bytes)
    sends a record with each of these keys to, on a topic of ``partitions`` partitions.

    Keys of 32 bytes (every person key) are hashed together with numpy, a few microseconds a batch:
    aiokafka's pure Python ``murmur2`` costs ~26 µs a key, more than projecting the person's event. Any
    other length takes ``murmur2`` itself. The keys as Kafka sees them, bytes: the relay hands over an
    outbox row's key as it is, a consumer its person keys encoded once. Held equal to aiokafka's
    ``DefaultPartitioner`` by a test."""
    if all(len(k) == 32 for k in keys):
        return _person_partitions(b"".join(keys), len(keys), partitions)
    out = [0] * len(keys)
    same = [i for i, k in enumerate(keys) if len(k) == 32]
    if same:
        hashed = _person_partitions(b"".join(keys[i] for i in same), len(same), partitions)
        for i, part in zip(same, hashed, strict=True):
            out[i] = part
    for i, key in enumerate(keys):
        if len(key) != 32:
            out[i] = (murmur2(key) & 0x7FFFFFFF) % partitions
    return out


def _person_partitions(joined: bytes, count: int, partitions: int) -> list[int]:
    """murmur2's partition of ``count`` 32-byte keys laid end to end in ``joined``."""
    words = np.frombuffer(joined, dtype="<u4").reshape(count, 8)
    h = np.full(count, _SEED ^ 32, dtype=np.uint32)
    for column in range(8):  # uint32 arithmetic wraps modulo 2**32, as the Java ints do
        k = words[:, column] * _M
        k ^= k >> np.uint32(24)
        k *= _M
        h *= _M
        h ^= k
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    parts: list[int] = ((h & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()
    return parts
