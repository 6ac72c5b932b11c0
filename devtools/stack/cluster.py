"""What an operator asks of a cluster on a bad day: who is the active controller, which partitions are
under-replicated or offline, and does each topic still accept writes (``acks=all`` needs a leader and at
least ``min.insync.replicas`` in-sync replicas in every partition)?

The active KRaft controller is not in a Metadata response (brokers name a random live broker there), so
it is read with one DescribeQuorum request (API 55, v0) over a plain socket — the request
``kafka-metadata-quorum describe --status`` sends; aiokafka has no call for it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devtools.stack.kafka import HOST, broker_port, formatted_nodes, recv_exact
from infra.config import Settings
from infra.kafka import client_options

_DESCRIBE_QUORUM = 55
_METADATA_TOPIC = b"__cluster_metadata"


def _uvarint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _skip_tags(data: bytes, pos: int) -> int:
    count, pos = _read_uvarint(data, pos)
    for _ in range(count):
        _tag, pos = _read_uvarint(data, pos)
        size, pos = _read_uvarint(data, pos)
        pos += size
    return pos


def quorum_leader(n: int, timeout: float = 1.0) -> int | None:
    """The active controller's node id, as node ``n`` reports it; None if it does not answer."""
    client_id = b"hub-stack"
    header = struct.pack(">hhih", _DESCRIBE_QUORUM, 0, 7, len(client_id)) + client_id + b"\x00"
    body = _uvarint(2) + _uvarint(len(_METADATA_TOPIC) + 1) + _METADATA_TOPIC
    body += _uvarint(2) + struct.pack(">i", 0) + b"\x00" + b"\x00" + b"\x00"
    request = header + body
    try:
        with socket.create_connection((HOST, broker_port(n)), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", recv_exact(sock, 4))
            data = recv_exact(sock, size)
        (correlation,) = struct.unpack_from(">i", data, 0)
        pos = _skip_tags(data, 4)
        (error,) = struct.unpack_from(">h", data, pos)
        pos += 2
        topics, pos = _read_uvarint(data, pos)
        if correlation != 7 or error != 0 or topics < 2:
            return None
        name_len, pos = _read_uvarint(data, pos)
        pos += name_len - 1
        partitions, pos = _read_uvarint(data, pos)
        if partitions < 2:
            return None
        _index, p_error, leader = struct.unpack_from(">ihi", data, pos)
    except (OSError, struct.error, IndexError):
        return None
    return leader if p_error == 0 and leader >= 0 else None


def active_controller() -> int | None:
    """The active controller according to the first node that answers."""
    for n in range(1, (formatted_nodes() or 1) + 1):
        leader = quorum_leader(n)
        if leader is not None:
            return leader
    return None


@dataclass(frozen=True)
class TopicHealth:
    topic: str
    partitions: int
    replication_factor: int
    min_insync: int
    under_replicated: int  # in-sync replicas fewer than replicas
    offline: int  # no leader
    below_min_isr: int  # a leader, but fewer in-sync replicas than min.insync.replicas

    @property
    def accepts_writes(self) -> bool:
        """An ``acks=all`` producer (the relay's) can write to every partition."""
        return self.partitions > 0 and self.offline == 0 and self.below_min_isr == 0


async def topic_health(settings: Settings, *, prefix: str = "", internal: bool = False) -> list[TopicHealth]:
    """Each topic's replication state (those starting with ``prefix``), from one metadata and one config
    request."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10000)
    await admin.start()
    try:
        names = sorted(
            t
            for t in await admin.list_topics()
            if t.startswith(prefix) and (internal or not t.startswith("__"))
        )
        if not names:
            return []
        described = await admin.describe_topics(names)
        configs = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, t, configs={"min.insync.replicas": None})
                for t in names
            ]
        )
    finally:
        await admin.close()
    min_isr: dict[str, int] = {}
    for response in configs:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == "min.insync.replicas":
                    min_isr[resource[3]] = int(entry[1])
    health = []
    for info in described:
        parts = info["partitions"]
        need = min_isr.get(info["topic"], 1)
        health.append(
            TopicHealth(
                topic=info["topic"],
                partitions=len(parts),
                replication_factor=min((len(p["replicas"]) for p in parts), default=0),
                min_insync=need,
                under_replicated=sum(len(p["isr"]) < len(p["replicas"]) for p in parts),
                offline=sum(p["leader"] < 0 for p in parts),
                below_min_isr=sum(p["leader"] >= 0 and len(p["isr"]) < need for p in parts),
            )
        )
    return health


def disagreements(settings: Settings) -> list[str]:
    """Where the hub's Kafka settings and the local cluster disagree (each a one-line warning)."""
    nodes = formatted_nodes()
    if nodes is None:
        return []
    problems = []
    listed = set(settings.kafka_bootstrap.split(","))
    missing = [
        f"{HOST}:{broker_port(n)}" for n in range(1, nodes + 1) if f"{HOST}:{broker_port(n)}" not in listed
    ]
    if missing:
        problems.append(f"HUB_KAFKA_BOOTSTRAP does not list {', '.join(missing)} of the {nodes}-node cluster")
    if settings.replication_factor > nodes:
        problems.append(
            f"HUB_REPLICATION_FACTOR {settings.replication_factor} > {nodes} node(s): topics cannot be created"
        )
    elif nodes >= 3 and settings.replication_factor < 3:
        problems.append(
            f"HUB_REPLICATION_FACTOR {settings.replication_factor} on a {nodes}-node cluster: one broker's loss loses data"
        )
    if settings.min_insync_replicas >= max(settings.replication_factor, 1) and nodes > 1:
        problems.append(
            f"HUB_MIN_INSYNC_REPLICAS {settings.min_insync_replicas} with replication factor "
            f"{settings.replication_factor}: one broker down stops all writes"
        )
    return problems
