"""Small helpers the integration tests share: raw Kafka reads, waiting, building submissions."""

from __future__ import annotations

import asyncio
import base64
import signal
import socket
import string
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.structs import ConsumerRecord

from consumers.catchup import end_offsets, run_until
from consumers.feed.builder import count_month
from consumers.feed.projection import FeedProjection
from consumers.runtime import BatchHandler, ConsumerRuntime
from consumers.shared_view.erasure import erase_person
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.store import VIEW_FIELDS
from contracts.envelope import encode
from devtools.simulator import SimulationConfig, simulate
from devtools.stack import namespaces
from domain.calendar import YearMonth
from infra.auth import OrgKind, Principal, Role, add_client, authenticate
from infra.codecs.csv_rows import MAX_COLUMNS, MAX_ROWS, Header, ParsedRow, read_chunks
from infra.config import Settings
from infra.crypto import KeyStore
from infra.db import _migration_files, init_connection
from infra.kafka import client_options
from infra.signing import erasure_signer
from infra.topics import ensure_topics
from producers.adapters import service as adapter_service
from producers.adapters.authorization import Adapter
from producers.adapters.service import AdapterService
from producers.adapters.sites import add_sites
from producers.ingest import accept
from producers.submission import to_event
from tests import factories

Record = tuple[str, bytes, list[tuple[str, bytes]], bytes]  # topic, key, headers, value


async def read_topic(settings: Settings, topic: str, *, timeout_s: float = 10.0) -> list[ConsumerRecord]:
    """Every record currently in ``topic`` (all partitions, from the beginning), raw."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s

        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind() and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, until: Callable[[Any], bool], timeout_s: float = 30.0
) -> Any:
    deadline = time.monotonic() + timeout_s
    value = await probe()
    while not until(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s; last value: {value!r}")
        await asyncio.sleep(0.1)
        value = await probe()
    return value


async def group_members(settings: Settings, group_id: str) -> tuple[str, list[dict[str, Any]]]:
    """Consumer group ``group_id``'s state and members, as the broker describes them."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    [group] = response.to_object()["groups"]
    return group["state"], list(group["members"])


async def members_holding_partitions(settings: Settings, group_id: str) -> int:
    """Members of consumer group ``group_id`` that hold partitions, once the group is stable (else 0)."""
    state, members = await group_members(settings, group_id)
    if state != "Stable":
        return 0
    return sum(
        1
        for m in members
        if m["member_assignment"]
        and ConsumerProtocolMemberAssignment.decode(m["member_assignment"]).partitions()
    )


async def catch_up_view_and_feed(pool: asyncpg.Pool, settings: Settings) -> None:
    """The shared view and the feed projection read ``settings``' topics up to their ends now."""
    handlers: list[BatchHandler] = [SharedViewHandler(settings), FeedProjection(settings)]
    for handler in handlers:
        runtime = ConsumerRuntime(
            handler, settings, pool, group_id=f"{handler.name}.{settings.topic_namespace}"
        )
        await run_until(runtime, pool, await end_offsets(settings, handler.topics), timeout_s=120)


async def delete_namespace(settings: Settings) -> None:
    """Delete the topics of ``settings.topic_namespace`` (a module's namespace is never used again)."""
    await namespaces.delete_topics(settings, [settings.topic_namespace])


def free_port() -> int:
    """A port the kernel just gave out and took back (nothing listens there now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop what a test started, even when it failed: SIGTERM (a supervisor passes it to its workers),
    then kill after 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    procs.clear()


async def wait_published(pool: asyncpg.Pool, event_ids: list[str], *, timeout_s: float = 60) -> None:
    """Until the outbox relay has published every one of these events."""
    async with pool.acquire() as conn:
        await wait_for(
            lambda: conn.fetchval(
                "SELECT count(*) FROM outbox WHERE event_id = ANY($1::text[]) AND id NOT IN (SELECT id FROM outbox_pending)",
                event_ids,
            ),
            until=lambda n: n == len(event_ids),
            timeout_s=timeout_s,
        )


async def three_clients(pool: asyncpg.Pool, label: str) -> dict[str, str]:
    """Tokens of a national Hello Work publisher, the test authority (publish + read) and an operator, on
    the test site: the three parties a sweep over every route speaks as."""
    specs = {
        "national": (OrgKind.HELLO_WORK_NATIONAL, "*", {Role.PUBLISH}),
        "authority": (OrgKind.AUTHORITY, factories.AUTHORITY, {Role.PUBLISH, Role.READ}),
        "operator": (OrgKind.OPERATOR, "ops", {Role.OPERATE}),
    }
    out = {}
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "新宿")])
        for who, (kind, code, roles) in specs.items():
            _, out[who] = await add_client(
                conn, name=f"{label} {who}", org_kind=kind, org_code=code, roles=frozenset(roles)
            )
    return out


async def own_namespace(settings: Settings) -> Settings:
    """``settings`` with a topic namespace of its own, its topics made: consumers run on it see only the
    records of the tests that use it (the session leases it and deletes it at the end)."""
    own = settings.model_copy(update={"topic_namespace": f"i{uuid.uuid4().hex[:10]}"})
    await ensure_topics(own)
    return own


async def accept_then_erase(conn: asyncpg.Connection, settings: Settings, person: str) -> None:
    """A registration of ``person`` accepted, then the person erased by the operator (signed)."""
    keystore = KeyStore.from_settings(settings)
    await accept(
        conn, keystore, [factories.registration(person)], origin="test", namespace=settings.topic_namespace
    )
    await erase_person(
        conn, keystore, person, requested_by="test", namespace=settings.topic_namespace,
        signer=erasure_signer(settings),
    )  # fmt: skip


def respelled(encoded: str) -> str:
    """The same key bytes in another base64 spelling: 32 bytes leave the last character two bits it does
    not use, and decoders ignore them, so flipping the lowest one changes the text and not the key."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
    body = encoded.rstrip("=")
    other = body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1] + encoded[len(body) :]
    assert other != encoded and base64.b64decode(other) == base64.b64decode(encoded)
    return other


def read_rows(
    family: str, content: bytes, *, max_rows: int = MAX_ROWS, max_columns: int = MAX_COLUMNS
) -> tuple[str, Header, Iterator[ParsedRow]]:
    """A batch file read as the importer reads it (``read_chunks``), a row at a time: raises the FileError
    that stopped the reading after the rows before it were yielded."""
    encoding, _, header, chunks = read_chunks(
        family, content, chunk_rows=1000, max_rows=max_rows, max_columns=max_columns
    )

    def rows() -> Iterator[ParsedRow]:
        for parsed, error in chunks:
            yield from parsed
            if error is not None:
                raise error

    return encoding, header, rows()


async def office_publisher(pool: asyncpg.Pool, name: str) -> tuple[str, Principal]:
    """A Hello Work office's publishing client (``name``) at the factories' site, and its principal."""
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, name)])
        client_id, token = await add_client(
            conn, name=name, org_kind=OrgKind.OFFICE, org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )  # fmt: skip
        return client_id, await authenticate(conn, f"Bearer {token}")


async def csv_importer(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch, name: str, *, chunk_rows: int = 3
) -> tuple[AdapterService, Principal, str, int]:
    """``office_publisher``'s client and principal, the employment adapter's service importing files in
    chunks of ``chunk_rows`` rows, and the outbox's last id before the import."""
    client_id, principal = await office_publisher(pool, name)
    start = await pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    monkeypatch.setattr(adapter_service, "CHUNK_ROWS", chunk_rows)
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    return service, principal, client_id, start


class ChunksOverlapped:
    """Makes a file's pipelined chunks overlap for certain: the first chunk's transaction waits until the
    second chunk is sealed. ``seals`` counts the chunks sealed."""

    def __init__(self, service: AdapterService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seals = 0
        self._writes = 0
        self._second_sealed = asyncio.Event()
        self._seal, self._write = service._seal_chunk, service._write_chunk
        monkeypatch.setattr(service, "_seal_chunk", self._counted_seal)
        monkeypatch.setattr(service, "_write_chunk", self._first_write_after_the_second_seal)

    async def _counted_seal(self, *args: Any) -> Any:
        sealed = await self._seal(*args)
        self.seals += 1
        if self.seals == 2:
            self._second_sealed.set()
        return sealed

    async def _first_write_after_the_second_seal(self, *args: Any) -> None:
        self._writes += 1
        if self._writes == 1:
            await self._second_sealed.wait()
        await self._write(*args)


async def sealed_stream(own: Settings, pool: asyncpg.Pool, seed: int = 14) -> list[Record]:
    """A simulated year's start of one authority (~1,500 events of every family), sealed with real
    per-person keys of this database."""
    subs = list(islice(simulate(SimulationConfig(authorities=1, months=4, seed=seed)), 1500))
    async with pool.acquire() as conn:
        keys = await KeyStore.from_settings(own).keys_for(conn, {s.person_key for s in subs})
    records = []
    for sub in subs:
        event = to_event(sub, keys[sub.person_key])
        records.append((own.topic(event.family), *encode(event)))
    return records


async def publish_records(own: Settings, records: list[Record]) -> None:
    producer = AIOKafkaProducer(**client_options(own), acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(t, value, key=key, headers=headers) for t, key, headers, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def view_digest(conn: asyncpg.Connection) -> tuple[str, int, int]:
    """The whole view in one checksum (as ``bench_projection``), and the stored and held event counts."""
    digest = await conn.fetchval(
        f"SELECT md5(string_agg(md5(row({', '.join(VIEW_FIELDS)})::text), '' ORDER BY person_key)) "
        "FROM sv_persons"
    )
    return (
        digest,
        await conn.fetchval("SELECT count(*) FROM sv_persons"),
        await conn.fetchval("SELECT count(*) FROM sv_events"),
    )


# factories.placement is placed in 2025-05: its 1-month checkpoint counts in 2025-06's cohort 1.
FACTORIES_COHORT_MONTH = YearMonth(2025, 6)


async def factories_cohort_1(pool: asyncpg.Pool) -> Counter[tuple[str, ...]]:
    """The factories' authority's 1-month retention cohort of 2025-06, (site, status) -> placements, as
    counted now."""
    async with pool.acquire() as conn, conn.transaction():
        counted = await count_month(
            conn, FACTORIES_COHORT_MONTH, datetime.now(UTC), only=[factories.AUTHORITY]
        )
    feed = counted.feeds.get(factories.AUTHORITY)
    return Counter(feed.retention[1]) if feed else Counter()


class BeforeMigration(NamedTuple):
    """A scratch database migrated up to, not including, one migration: ``migrating`` runs it, ``writer``
    plays a process still writing meanwhile, ``admin`` watches both from the ``postgres`` database."""

    admin: asyncpg.Connection
    migrating: asyncpg.Connection
    writer: asyncpg.Connection
    sql: str


@asynccontextmanager
async def before_migration(settings: Settings, number: str) -> AsyncIterator[BeforeMigration]:
    """The database is dropped afterwards, whatever the test did."""
    database = f"ittai_test_m{number}{uuid.uuid4().hex[:8]}"
    base = settings.pg_dsn.rsplit("/", 1)[0]
    admin = await asyncpg.connect(base + "/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        migrating = await asyncpg.connect(base + f"/{database}")
        writer = await asyncpg.connect(base + f"/{database}")
        try:
            await init_connection(migrating)
            files = _migration_files()
            for name, sql in files:
                if name >= number:
                    break
                await migrating.execute(sql)
            (sql,) = [sql for name, sql in files if name.startswith(f"{number}_")]
            yield BeforeMigration(admin, migrating, writer, sql)
        finally:
            await writer.close()
            await migrating.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def migrate_while_held(db: BeforeMigration, release: Callable[[], Awaitable[None]]) -> None:
    """Runs the migration; once it waits for a lock (the writer's open transaction), or is done, calls
    ``release`` (the writer commits) and waits for the migration to finish. No timing: the wait is seen in
    ``pg_stat_activity``."""
    migration = asyncio.ensure_future(db.migrating.execute(db.sql))
    pid = db.migrating.get_server_pid()
    while not migration.done() and not await db.admin.fetchval(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
    ):
        await asyncio.sleep(0.01)
    await release()
    await migration
