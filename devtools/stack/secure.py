"""``hub stack up --secure``: the local cluster with the security a real deployment has.

* Clients reach the brokers only over **SASL_SSL**: TLS with a certificate signed by a CA this module
  makes (``secrets/ca.pem``), then SCRAM-SHA-512 with one user per service. The users and their random
  passwords are written into the metadata log when storage is formatted (``--add-scram``).
* Kafka's **StandardAuthorizer** with ``allow.everyone.if.no.acl.found=false``: nothing is allowed that an
  ACL (``acl_plan``) does not allow. ``admin`` is the only super user (the brokers themselves, and the
  operator's ``hub topics ensure``); the controller listener takes SASL/PLAIN with that user only.
* Each service principal may do its job and nothing more (README "Broker security").

Layout: ``kafka/secrets/`` (0700) holds ``ca.pem`` (public), ``ca-key.pem``, ``broker.pem`` (the
brokers' key and certificate), ``credentials.json`` and one ``<user>.env`` per user with the ``HUB_KAFKA_*``
lines a service needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from consumers.runtime import group_id_for
from contracts.envelope import Family
from infra.config import Settings
from infra.kafka import client_options

ADMIN = "admin"
# The services' Kafka users: each runs as its own principal (HUB_KAFKA_SASL_USERNAME).
RELAY, ADAPTER, EVENT_LOG, SHARED_VIEW, PLACEMENT_FEED, CONSOLE = (
    "relay",
    "adapter",
    "event-log",
    "shared-view",
    "placement-feed",
    "console",
)
USERS = (ADMIN, RELAY, ADAPTER, EVENT_LOG, SHARED_VIEW, PLACEMENT_FEED, CONSOLE)
MECHANISM = "SCRAM-SHA-512"
HOST = "127.0.0.1"


def secrets_dir(kafka_root: Path) -> Path:
    return kafka_root / "secrets"


def _private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


# --------------------------------------------------------------------------------------------------
# Certificates and passwords (made once per stack; kept across restarts, deleted by reset)
# --------------------------------------------------------------------------------------------------
def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ittai Hub local stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])  # fmt: skip


def _make_tls(folder: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Ittai Hub local CA"))
        .issuer_name(_name("Ittai Hub local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    broker = (
        x509.CertificateBuilder()
        .subject_name(_name("ittai-broker"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    # Kafka's PEM key store wants the key as PKCS#8; the folder (0700) and file (0600) protect it.
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    ca_key_pem = ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _private(folder / "ca-key.pem", ca_key_pem)
    _private(folder / "broker.pem", key_pem + broker.public_bytes(pem) + ca.public_bytes(pem))
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))


@dataclass(frozen=True)
class Secrets:
    folder: Path
    passwords: dict[str, str]

    @property
    def cafile(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.pem"

    def settings_for(self, settings: Settings, user: str) -> Settings:
        """``settings`` as ``user`` would have them: SASL_SSL with this stack's CA and that user's password."""
        return settings.model_copy(
            update={
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": MECHANISM,
                "kafka_sasl_username": user,
                "kafka_sasl_password": SecretStr(self.passwords[user]),
                "kafka_ssl_cafile": self.cafile,
            }
        )


def ensure_secrets(kafka_root: Path) -> Secrets:
    """The stack's CA, broker certificate and user passwords, made on first use."""
    folder = secrets_dir(kafka_root)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    if not (folder / "broker.pem").exists():
        _make_tls(folder)
    creds = folder / "credentials.json"
    if creds.exists():
        passwords = json.loads(creds.read_text())
    else:
        passwords = {user: secrets.token_urlsafe(24) for user in USERS}
        _private(creds, (json.dumps(passwords, indent=2) + "\n").encode())
    for user in USERS:
        env = (
            "HUB_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n"
            f"HUB_KAFKA_SASL_MECHANISM={MECHANISM}\n"
            f"HUB_KAFKA_SSL_CAFILE={folder / 'ca.pem'}\n"
            f"HUB_KAFKA_SASL_USERNAME={user}\n"
            f"HUB_KAFKA_SASL_PASSWORD={passwords[user]}\n"
        )
        _private(folder / f"{user}.env", env.encode())
    return Secrets(folder, passwords)


def load_secrets(kafka_root: Path) -> Secrets:
    folder = secrets_dir(kafka_root)
    return Secrets(folder, json.loads((folder / "credentials.json").read_text()))


# --------------------------------------------------------------------------------------------------
# Broker configuration and storage format
# --------------------------------------------------------------------------------------------------
def server_properties(broker_port: int, controller_port: int, s: Secrets) -> dict[str, object]:
    """What a secure node's server.properties adds to (or changes in) the plain one."""
    admin = s.passwords[ADMIN]
    client = f"SASL_SSL://{HOST}:{broker_port}"
    return {
        "listeners": f"{client},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"{client},CONTROLLER://{HOST}:{controller_port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{admin}";'
        ),
        # SCRAM users live in the metadata log the controllers serve, so the controllers authenticate
        # each other and the brokers with PLAIN (static, one user: admin) on the loopback listener.
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{ADMIN}" password="{admin}" user_{ADMIN}="{admin}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": s.keystore,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": s.cafile,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN}",
    }


def format_args(s: Secrets) -> list[str]:
    """``kafka-storage format`` arguments that create every user's SCRAM credential."""
    args = []
    for user, password in s.passwords.items():
        args += ["--add-scram", f"{MECHANISM}=[name={user},password={password}]"]
    return args


# --------------------------------------------------------------------------------------------------
# Health: an ApiVersions request over TLS (the only request Kafka answers before SASL authentication)
# --------------------------------------------------------------------------------------------------
def answers(port: int, cafile: Path, timeout: float = 1.0) -> bool:
    """The broker on ``port`` completes a TLS handshake with a certificate from ``cafile`` and answers."""
    client_id = b"hub-stack"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with (
            socket.create_connection((HOST, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as sock,
        ):
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 10:
                chunk = sock.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except (OSError, ssl.SSLError):
        return False
    _size, correlation, error = struct.unpack(">iih", head)
    return correlation == 1 and error == 0


# --------------------------------------------------------------------------------------------------
# ACLs: what each service principal may do
# --------------------------------------------------------------------------------------------------
Resource = Literal["topic", "group"]
Operation = Literal["READ", "WRITE", "DESCRIBE"]
_RESOURCE = {"topic": 2, "group": 3}
_PATTERN = {"literal": 3, "prefixed": 4}
_OPERATION = {"READ": 3, "WRITE": 4, "DESCRIBE": 8}
_ALLOW = 3


@dataclass(frozen=True)
class Grant:
    user: str
    operation: Operation
    resource: Resource
    name: str
    pattern: Literal["literal", "prefixed"] = "literal"


def acl_plan(settings: Settings) -> list[Grant]:
    """Every ACL of the hub's principals for the topic namespace in ``settings``.

    Only the relay (and the adapters' in-process relay) writes the event topics. Each consumer reads the
    event topics, commits only its own group and writes dead letters. The placement feed also publishes
    the feed topic. The console sees topic metadata and offsets, and reads the dead-letter topic to
    locate letters; it writes nothing (so its redrive is refused on a secure cluster)."""
    events = settings.event_topics
    dlq, feed = settings.deadletter_topic, settings.feed_topic
    grants = [Grant(u, "WRITE", "topic", t) for u in (RELAY, ADAPTER) for t in events]
    # Each consumer's user is named as the consumer; its Kafka groups follow the one group-id rule
    # (``<consumer>.<namespace>.<role>``), so one prefixed grant covers its roles (live, replay) and no other
    # consumer's or namespace's group.
    for user in (EVENT_LOG, SHARED_VIEW, PLACEMENT_FEED):
        grants += [Grant(user, "READ", "topic", t) for t in events]
        grants.append(Grant(user, "READ", "group", group_id_for(user, settings, role=""), "prefixed"))
        grants.append(Grant(user, "WRITE", "topic", dlq))
    grants.append(Grant(PLACEMENT_FEED, "WRITE", "topic", feed))
    # The adapters keep data keys in memory: they follow the erasure topic (no group, nothing committed,
    # ``infra.erasure_follower``) to forget an erased person's key. The consumers' users read it already.
    grants.append(Grant(ADAPTER, "READ", "topic", settings.topic(Family.ERASURE)))
    grants += [Grant(CONSOLE, "DESCRIBE", "topic", t) for t in (*events, dlq, feed)]
    grants.append(Grant(CONSOLE, "READ", "topic", dlq))
    return grants


async def apply_acls(settings: Settings, s: Secrets) -> int:
    """Create every ACL of ``acl_plan`` (creating one that exists changes nothing); returns how many."""
    admin = AIOKafkaAdminClient(**client_options(s.settings_for(settings, ADMIN)), request_timeout_ms=30000)
    await admin.start()
    try:
        plan = acl_plan(settings)
        for g in plan:
            # aiokafka has the CreateAcls request but no admin call for it
            request = CreateAclsRequest(
                _RESOURCE[g.resource], g.name, _PATTERN[g.pattern], f"User:{g.user}", "*",
                _OPERATION[g.operation], _ALLOW,
            )  # fmt: skip
            response = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code:
                    raise RuntimeError(f"creating ACL {g} failed: error {code} {message}")
        return len(plan)
    finally:
        await admin.close()


def apply_acls_now(settings: Settings, kafka_root: Path) -> int:
    return asyncio.run(apply_acls(settings, load_secrets(kafka_root)))
