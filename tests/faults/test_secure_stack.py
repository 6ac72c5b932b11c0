"""Broker security as a deployment has it (issue 13, item 4), on a ``hub stack up --secure`` of its own.

SASL_SSL with SCRAM-SHA-512 and one user per service, the StandardAuthorizer refusing whatever no ACL
allows. Each test shows a refusal next to the allowed case it mirrors, so none of them passes on a
cluster without ACLs (every write would be allowed) or without authentication.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from consumers.monitoring.kafka_probe import KafkaProbe
from consumers.runtime import group_id_for
from contracts.envelope import Family
from devtools.stack import secure as security
from infra.config import Settings
from infra.crypto import KeyStore
from infra.kafka import client_options, start_producer
from infra.runner import prepare
from infra.topics import ensure_topics
from producers.ingest import accept
from tests import factories
from tests.faults.conftest import OwnStack, stack_of_its_own
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

CONSUMERS = (security.EVENT_LOG, security.SHARED_VIEW, security.PLACEMENT_FEED)


@pytest.fixture(scope="module")
def secure(settings: Settings) -> Iterator[OwnStack]:
    with stack_of_its_own(settings, 1, secure=True) as stack:
        yield stack


@pytest.fixture(scope="module")
def secrets(secure: OwnStack) -> security.Secrets:
    return security.load_secrets(secure.settings.stack_dir / "kafka")


def as_user(secure: OwnStack, secrets: security.Secrets, user: str) -> Settings:
    return secrets.settings_for(secure.settings, user)


def env_of(secrets: security.Secrets, user: str) -> dict[str, str]:
    """What a service started as ``user`` is given (the stack's ``<user>.env``)."""
    lines = (secrets.folder / f"{user}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def _tails(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace")[-2000:] for p in folder.glob("*.log")}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def topics(secure: OwnStack, secrets: security.Secrets) -> AsyncIterator[None]:
    reports = await ensure_topics(as_user(secure, secrets, security.ADMIN))
    assert all(r.status != "mismatch" for r in reports), reports
    yield


async def _write(settings: Settings, topic: str) -> int:
    producer = await start_producer(settings)
    try:
        return (await producer.send_and_wait(topic, b"{}", key=b"secure-test")).offset
    finally:
        await producer.stop()


async def test_only_the_relay_and_the_adapters_write_the_event_topics(
    secure: OwnStack, secrets: security.Secrets, topics: None
) -> None:
    topic = secure.settings.topic(Family.PLACEMENT)
    for user in (security.RELAY, security.ADAPTER):
        assert await _write(as_user(secure, secrets, user), topic) >= 0
    for user in CONSUMERS:  # they may write dead letters, never events
        with pytest.raises(TopicAuthorizationFailedError):
            await _write(as_user(secure, secrets, user), topic)
        assert await _write(as_user(secure, secrets, user), secure.settings.deadletter_topic) >= 0
    # The console writes nowhere, so even its idempotent producer's id is refused.
    with pytest.raises((TopicAuthorizationFailedError, ClusterAuthorizationFailedError)):
        await _write(as_user(secure, secrets, security.CONSOLE), topic)


async def test_a_wrong_password_or_a_plaintext_client_is_refused(
    secure: OwnStack, secrets: security.Secrets, topics: None
) -> None:
    relay = as_user(secure, secrets, security.RELAY)
    topic = secure.settings.topic(Family.REGISTRATION)
    assert await _write(relay, topic) >= 0
    wrong = relay.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    with pytest.raises(KafkaConnectionError):
        await _write(wrong, topic)
    unknown = relay.model_copy(update={"kafka_sasl_username": "nobody"})
    with pytest.raises(KafkaConnectionError):
        await _write(unknown, topic)
    plaintext = relay.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    producer = AIOKafkaProducer(**client_options(plaintext), request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(producer.start(), timeout=60)
    finally:
        await producer.stop()


async def test_each_consumer_reads_its_topics_and_commits_only_its_group(
    secure: OwnStack, secrets: security.Secrets, topics: None
) -> None:
    topic = secure.settings.topic(Family.CONSENT)
    offset = await _write(as_user(secure, secrets, security.RELAY), topic)
    event_log = as_user(secure, secrets, security.EVENT_LOG)

    async def consume(settings: Settings, group: str, source: str) -> int:
        """Join ``group`` on ``source``, read what is there and commit it; how many records were read.
        (Subscribing, not assigning: an unauthorised assigned topic only logs, it raises nothing.)"""
        consumer = AIOKafkaConsumer(
            **client_options(settings), group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        consumer.subscribe([source])
        try:
            async with asyncio.timeout(120):  # a cap against a hang, not a timing assertion
                await consumer.start()
                read = 0
                while read == 0:
                    read += sum(len(rs) for rs in (await consumer.getmany(timeout_ms=1000)).values())
                await consumer.commit()
            return read
        finally:
            await consumer.stop()

    assert offset >= 0

    def group(consumer: str, role: str = "live") -> str:  # the runtime's one group-id rule
        return group_id_for(consumer, secure.settings, role)

    assert await consume(event_log, group("event-log"), topic) >= 1
    with pytest.raises(GroupAuthorizationFailedError):  # another consumer's group
        await consume(event_log, group("placement-feed"), topic)
    with pytest.raises(TopicAuthorizationFailedError):  # the feed topic is the placement feed's output
        await consume(event_log, group("event-log"), secure.settings.feed_topic)
    shared_view = as_user(secure, secrets, security.SHARED_VIEW)
    assert await consume(shared_view, group("shared-view", "replay"), topic) >= 1
    with pytest.raises(GroupAuthorizationFailedError):
        await consume(shared_view, group("event-log"), topic)


async def test_the_console_sees_offsets_but_reads_no_event(
    secure: OwnStack, secrets: security.Secrets, topics: None
) -> None:
    topic = secure.settings.topic(Family.RETENTION)
    await _write(as_user(secure, secrets, security.RELAY), topic)
    probe = KafkaProbe(as_user(secure, secrets, security.CONSOLE))
    try:
        offsets = await probe.offsets([topic])
        assert sum(p.end for p in offsets[topic]) >= 1
        assert await probe.scan(secure.settings.deadletter_topic, {}) is not None  # where letters are found
        with pytest.raises(TopicAuthorizationFailedError):
            await probe.read_one(topic, 0, 0)
    finally:
        await probe.close()


async def test_the_services_run_as_their_own_users(
    secure: OwnStack, secrets: security.Secrets, topics: None, tmp_path: Path
) -> None:
    """An accepted event goes outbox → ``hub run relay`` (user relay) → ``hub run event-log`` (user
    event-log) → the event log, on the secure cluster."""
    pool = await prepare(secure.settings)
    try:
        async with pool.acquire() as conn:
            [event] = await accept(
                conn, KeyStore.from_settings(secure.settings), [factories.placement(factories.person_key())],
                origin=f"secure-{uuid.uuid4().hex[:6]}", namespace=secure.settings.topic_namespace,
            )  # fmt: skip
        relay = secure.start("relay", log=tmp_path / "relay.log", **env_of(secrets, security.RELAY))
        log = secure.start("event-log", log=tmp_path / "event-log.log", **env_of(secrets, security.EVENT_LOG))

        async def logged() -> bool:
            async with pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT 1 FROM event_log WHERE event_id = $1", event.id))

        try:
            await wait_for(logged, until=bool, timeout_s=120)
        except AssertionError:
            raise AssertionError(f"the event never reached the event log: {_tails(tmp_path)}") from None
        for proc in (relay, log):
            assert secure.stop(proc) == 0
    finally:
        await pool.close()
