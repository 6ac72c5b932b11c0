"""PostgreSQL access: connection pools and the migration runner (plain SQL files, applied in order)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import IntEnum, unique
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from infra.config import Settings, get_settings

# Writers of the outbox NOTIFY this channel in their transaction; the relay listens (else it polls).
OUTBOX_CHANNEL = "ittai_outbox"


@unique
class AdvisoryLock(IntEnum):
    """Every PostgreSQL advisory lock key the hub takes, in one place: two roles sharing a key block each
    other for as long as a holder runs (the shared-view role once shared the acceptance erasure lock's key,
    so a running projector held up every acceptance). ``@unique`` refuses a repeated key at import."""

    MIGRATION = 7_201_101  # one migrator at a time
    RELAY = 7_201_102  # the outbox relay role
    # An erasure holds both exclusively, ERASURE first. Shared-view batches hold ERASURE shared, so no batch
    # writes a person's clear data after (or while) that person is erased; every accepting transaction holds
    # ACCEPTANCE_ERASURE shared, so none commits an event of a person erased after its authorisation read
    # the register (P9). Two locks, so that an erasure waiting for a long shared-view batch does not hold up
    # acceptance meanwhile: it takes the acceptance lock only once it has the other. Migration 020's
    # trigger names ACCEPTANCE_ERASURE's key as a literal (a test holds them equal).
    ERASURE = 7_204_001
    ACCEPTANCE_ERASURE = 7_204_002
    SHARED_VIEW_ROLE = 7_204_003  # the shared-view projector; a replay refuses to start while it is held
    # Taken per partition number, in the two-key form (this key, the partition a person's events go to on
    # every topic), by every shared-view transaction that reads and writes people's rows: the workers of one
    # run never interleave two transactions about one person, whatever partitions each is assigned.
    SHARED_VIEW_PERSONS = 7_204_004
    FEED_BUILDER_ROLE = 7_205_001
    # Taken in the two-key form (this key, a bucket of the person key's hash: at most 64 a transaction), in
    # ascending order, by every feed batch writing registrations or referrals: the triggers of migration 049
    # read one fact table when the other is written, so two transactions about one person must not overlap.
    FEED_PERSONS = 7_205_002


# What a database restart, a failover or a full connection table looks like to a client: retried with
# capped backoff everywhere, never treated as a bug. (``ConnectionDoesNotExistError`` is a
# ``PostgresConnectionError``; ``AdminShutdownError``, ``CannotConnectNowError`` and ``CrashShutdownError`` are
# ``OperatorInterventionError``s; ``TooManyConnectionsError`` is an ``InsufficientResourcesError``.)
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def _json_bytes(value: Any) -> bytes:
    """A json value as its wire bytes: ``bytes`` are JSON text already (a record's value, stored verbatim;
    PostgreSQL validates it), anything else is serialised by orjson."""
    return value if type(value) is bytes else orjson.dumps(value)


async def init_connection(conn: asyncpg.Connection) -> None:
    """json/jsonb columns read and write Python objects (orjson does the text). json goes in binary format,
    which for json is its text: so a binary ``COPY`` can write a json column (asyncpg has no binary json
    codec of its own), and bytes given for json are taken as JSON text."""
    await conn.set_type_codec(
        "json", encoder=_json_bytes, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
    )


async def connect(settings: Settings | None = None) -> asyncpg.Connection:
    s = settings or get_settings()
    conn = await asyncpg.connect(s.pg_dsn, timeout=10)
    await init_connection(conn)
    return conn


async def create_pool(
    settings: Settings | None = None, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    s = settings or get_settings()
    pool = await asyncpg.create_pool(s.pg_dsn, min_size=min_size, max_size=max_size, init=init_connection)
    assert pool is not None
    return pool


def stage_ddl(stage: str, definition: str) -> str:
    """The statement creating the temporary table ``stage`` (``definition``: its columns) unless the
    session has it; emptied at every commit."""
    return f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({definition}) ON COMMIT DELETE ROWS"


async def copy_to_stage(
    conn: asyncpg.Connection,
    stage: str,
    definition: str,
    records: Iterable[Sequence[Any]],
    *,
    declared: bool = False,
) -> None:
    """Binary ``COPY`` of ``records`` into the temporary table ``stage`` (``definition``: its columns),
    created on first use in the session and emptied at every commit, for one set-based ``INSERT …
    SELECT`` to take them from. For a batch of rows this costs the client and the server about half of
    what ``unnest`` over column arrays does (measured on the event log), and the driver encodes each
    value in C. Call it inside a transaction; ``declared``: the transaction ran ``stage_ddl`` already
    (a handler that stages several tables creates them in one round trip)."""
    if not declared:
        await conn.execute(stage_ddl(stage, definition))
    await conn.copy_records_to_table(stage, records=records)


def text_array(values: Iterable[str]) -> str:
    """``values`` as one PostgreSQL array literal, for a parameter written ``$n::text::text[]``: a lookup
    of a batch's 2,000 people by key sends one string, not a list. The driver's array encoder checks each
    element against collections.abc's classes (two ``isinstance`` calls through ``__instancecheck__``)
    before encoding it: 0.45-0.65 µs of client CPU a key against 0.10-0.15 for the literal (2,000 keys,
    200 lookups). Every element is quoted; a quote or backslash in one (never in the hub's hex person keys
    and event ids) is escaped."""
    values = list(values)
    if not values:
        return "{}"
    plain = "".join(values)
    if '"' in plain or "\\" in plain:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}'


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _migration_files() -> list[tuple[str, str]]:
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(MIGRATIONS.glob("*.sql"))]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe to call from many processes."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", AdvisoryLock.MIGRATION)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in _migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", AdvisoryLock.MIGRATION)
    return applied


async def drop_database(settings: Settings, *, missing_ok_if_busy: bool = False) -> None:
    """Drop ``settings.pg_database``. With ``missing_ok_if_busy`` a database still held by another role's
    session (which the owner may not end) is left behind instead of failing a test run's teardown."""
    admin = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{settings.pg_database}" WITH (FORCE)')
    except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
        if not missing_ok_if_busy:
            raise
    finally:
        await admin.close()


async def recreate_database(settings: Settings) -> None:
    """Drop and create ``settings.pg_database`` (tests, benchmarks, ``hub db reset``), then migrate it."""
    await drop_database(settings)
    admin = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{settings.pg_database}" OWNER "{settings.pg_user}"')
    finally:
        await admin.close()
    conn = await connect(settings)
    try:
        await migrate(conn)
    finally:
        await conn.close()
