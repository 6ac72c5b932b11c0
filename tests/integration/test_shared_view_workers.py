"""The shared view built by several processes (``hub run shared-view --workers 2``, ``hub replay shared-view
--workers 2``) is the view one process builds, byte for byte (md5 over every record), also when a worker
is killed mid-stream and the set restarts: nothing lost, nothing applied twice.

Deterministic whatever the machine's load (as ``test_workers``): the stream's first half is published
only once both members hold partitions, the kill comes once both have committed some of it, and the
second half only after the restart; the end is read from the committed positions, not from a pause.
Everything runs in a database and topic namespace of this module's own (a replay empties the view)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from consumers.runtime import group_id_for
from consumers.shared_view.replay import replay
from contracts.envelope import Family
from devtools.stack import namespaces
from infra.config import Settings
from infra.db import AdvisoryLock, create_pool, drop_database, recreate_database
from infra.topics import ensure_topics
from tests.helpers import (
    members_holding_partitions,
    publish_records,
    sealed_stream,
    stop_processes,
    view_digest,
    wait_for,
)

STARTED: list[subprocess.Popen[bytes]] = []
CONSUMER = "shared-view"


@pytest.fixture(autouse=True)
def _no_supervisor_left() -> Iterator[None]:
    yield
    stop_processes(STARTED)


@pytest.fixture(scope="module")
def own(settings: Settings) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(update={"pg_database": f"ittai_test_svw{tag}", "topic_namespace": f"svw{tag}"})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_pool(live_stack: None, own: Settings) -> AsyncIterator[asyncpg.Pool]:
    lease = namespaces.claim(own, database=own.pg_database)
    await recreate_database(own)
    await ensure_topics(own, [*own.event_topics, own.deadletter_topic])
    pool = await create_pool(own, max_size=4)
    yield pool
    await pool.close()
    await drop_database(own, missing_ok_if_busy=True)
    await namespaces.release(own, [lease] if lease else [])


def _hub(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    STARTED.append(proc)
    return proc


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


async def _committed(conn: asyncpg.Connection, own: Settings) -> tuple[int, set[int]]:
    """Records of the event topics the projection has committed (its positions are committed with its
    effects), and the partition numbers it has committed some on."""
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = $1 AND topic = ANY($2::text[])",
        CONSUMER,
        list(own.event_topics),
    )
    return sum(r["next_offset"] for r in rows), {r["partition"] for r in rows if r["next_offset"]}


async def test_two_workers_build_the_view_one_process_builds_through_a_kill(
    own: Settings, own_pool: asyncpg.Pool
) -> None:
    stream = await sealed_stream(own, own_pool)
    half = len(stream) // 2
    env = {
        **os.environ,
        "HUB_PG_DATABASE": own.pg_database,
        "HUB_TOPIC_NAMESPACE": own.topic_namespace,
        "HUB_BATCH_MAX_RECORDS": "50",
        "HUB_LOG_LEVEL": "INFO",
    }
    env.pop("HUB_METRICS_PORT", None)
    partitions = own.topic_partitions
    async with own_pool.acquire() as conn:
        supervisor = _hub(env, "run", "shared-view", "--workers", "2", "--no-api")
        workers = await wait_for(
            lambda: asyncio.to_thread(_children, supervisor.pid), until=lambda c: len(c) == 2
        )
        await wait_for(
            lambda: members_holding_partitions(own, group_id_for(CONSUMER, own)),
            until=lambda n: n == 2,
            timeout_s=90,
        )
        await publish_records(own, stream[:half])
        # Both workers have committed some of the first half (the range assignor gives each one half of
        # the partition numbers of every topic).
        await wait_for(
            lambda: _committed(conn, own),
            until=lambda c: min(c[1], default=partitions) < partitions // 2 <= max(c[1], default=-1),
            timeout_s=90,
        )
        os.kill(workers[0], signal.SIGKILL)  # the one holding the role
        _, stderr = supervisor.communicate(timeout=60)
        assert supervisor.returncode == 1, "a dead worker stops the set, for the process manager to restart"

        supervisor = _hub(env, "run", "shared-view", "--workers", "2", "--no-api")
        await wait_for(
            lambda: members_holding_partitions(own, group_id_for(CONSUMER, own)),
            until=lambda n: n == 2,
            timeout_s=120,
        )
        refused = _hub(env, "replay", "shared-view", "--workers", "2")
        _, stderr = refused.communicate(timeout=120)
        assert refused.returncode == 1 and b"stop it first" in stderr, "no replay under a running set"
        await publish_records(own, stream[half:])
        await wait_for(lambda: _committed(conn, own), until=lambda c: c[0] == len(stream), timeout_s=120)
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=30)
        assert supervisor.returncode == 0, stderr.decode()[-2000:]
        assert stderr.count(b"consumer stopped") == 2
        incremental = await view_digest(conn)
        dead_letters = await conn.fetchval("SELECT count(*) FROM dead_letters")

        # The same stream projected by one process from scratch.
        await replay(own, own_pool)
        single = await view_digest(conn)
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == dead_letters == 0

        # And replayed by two processes.
        replaying = _hub(env, "replay", "shared-view", "--workers", "2")
        stdout, stderr = replaying.communicate(timeout=300)
        assert replaying.returncode == 0, stderr.decode()[-2000:]
        assert b"by 2 processes" in stdout
        replayed = await view_digest(conn)
    assert single[1] > 50, "the stream gives a view worth comparing"
    assert incremental == single, "2 workers through a kill: the view one process builds"
    assert replayed == single, "a replay by 2 workers: the view one process builds"


async def _holder(conn: asyncpg.Connection) -> int | None:
    """The process id of the shared-view role's holder, as its last epoch bump recorded it."""
    holder = await conn.fetchval("SELECT holder FROM leader_epochs WHERE role = 'shared-view'")
    return int(holder.rsplit(":", 1)[1]) if holder else None


async def test_a_run_that_lost_the_role_leaves_the_group_to_the_run_holding_it(
    own: Settings, own_pool: asyncpg.Pool
) -> None:
    """Run A's role-lock connection is ended while its holder is paused, so standby run B takes the role.
    A's members must leave the consumer group (not retry their fenced batches in place, holding their
    partitions until Kafka evicts them after ``max_poll_interval``): B then commits every event of a
    stream published afterwards, while A is still alive."""
    stream = await sealed_stream(own, own_pool, seed=15)
    env = {
        **os.environ,
        "HUB_PG_DATABASE": own.pg_database,
        "HUB_TOPIC_NAMESPACE": own.topic_namespace,
        "HUB_BATCH_MAX_RECORDS": "50",
        "HUB_LOG_LEVEL": "INFO",
    }
    env.pop("HUB_METRICS_PORT", None)
    async with own_pool.acquire() as conn:
        before, _ = await _committed(conn, own)
        run_a = _hub(env, "run", "shared-view", "--workers", "2", "--no-api")
        workers_a = await wait_for(
            lambda: asyncio.to_thread(_children, run_a.pid), until=lambda c: len(c) == 2
        )
        await wait_for(
            lambda: members_holding_partitions(own, group_id_for(CONSUMER, own)),
            until=lambda n: n == 2,
            timeout_s=90,
        )
        holder_a = await wait_for(lambda: _holder(conn), until=lambda pid: pid in workers_a)
        run_b = _hub(env, "run", "shared-view", "--workers", "2", "--no-api")
        workers_b = await wait_for(
            lambda: asyncio.to_thread(_children, run_b.pid), until=lambda c: len(c) == 2
        )
        # Paused, A's holder cannot take the lock back before B's standby does.
        os.kill(holder_a, signal.SIGSTOP)
        try:
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database() "
                "AND l.objid::bigint = $1",
                AdvisoryLock.SHARED_VIEW_ROLE,
            )
            assert ended == 1
            await wait_for(lambda: _holder(conn), until=lambda pid: pid in workers_b, timeout_s=60)
        finally:
            os.kill(holder_a, signal.SIGCONT)
        await publish_records(own, stream)
        await wait_for(
            lambda: _committed(conn, own), until=lambda c: c[0] == before + len(stream), timeout_s=180
        )
    assert run_a.poll() is None and await asyncio.to_thread(_children, run_a.pid) == workers_a, "A runs"
    assert run_b.poll() is None


async def test_a_replay_joins_no_group_and_reads_every_partition_assigned(
    own: Settings, own_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay's members are given their partitions (``numbers_of``), not a consumer group's assignment:
    the members of a group join one after the other, the first is given every partition, and the group is
    rebalanced when the next one joins (bench_projection, 100,000 events, 2 processes: a member idle
    1.4 s at the rebalance, and the one joining waited for it). One process reads every partition of
    every topic, with no group."""
    from consumers import runtime
    from consumers.catchup import end_offsets

    made: list[dict[str, object]] = []
    assigned: list[set[tuple[str, int]]] = []
    consumer = runtime.AIOKafkaConsumer

    class Recording(consumer):  # type: ignore[misc,valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            made.append(kwargs)
            super().__init__(*args, **kwargs)

        def assign(self, partitions: list[runtime.TopicPartition]) -> None:
            assigned.append({(tp.topic, tp.partition) for tp in partitions})
            super().assign(partitions)

    stream = await sealed_stream(own, own_pool)
    await publish_records(own, stream[:40])
    monkeypatch.setattr(runtime, "AIOKafkaConsumer", Recording)
    await replay(own, own_pool)
    assert [kwargs.get("group_id") for kwargs in made] == [None], "one consumer, in no group"
    assert assigned == [set(await end_offsets(own, own.event_topics))], "every partition of every topic"


async def test_a_replay_is_one_membership_and_a_numbers_consents_wait_for_its_events(
    own: Settings, own_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay joins its group once: its consent partitions are held back (paused) while their events
    are stored, each released once the group has committed every event partition of its number (a
    person's events and consents share one), not a second consumer joining for the consents (each member
    left and joined again, and waited for the whole group's events). Each consent is applied only after
    all events of its partition number were committed, so each record is built once from all of them."""
    from consumers import runtime
    from consumers.catchup import end_offsets
    from consumers.shared_view.handler import SharedViewHandler

    consumers: list[object] = []
    consumer = runtime.AIOKafkaConsumer

    def counting(*args: object, **kwargs: object) -> object:
        made = consumer(*args, **kwargs)
        consumers.append(made)
        return made

    await publish_records(own, await sealed_stream(own, own_pool, seed=15))
    ends = await end_offsets(own, own.event_topics)
    consent_topic = own.topic(Family.CONSENT)
    early: list[str] = []
    consent_batches = 0
    handle = SharedViewHandler.handle

    async def watching(
        self: SharedViewHandler, conn: asyncpg.Connection, batch: list[runtime.Consumed]
    ) -> None:
        nonlocal consent_batches
        numbers = {c.partition for c in batch if c.topic == consent_topic}
        if numbers:
            consent_batches += 1
            rows = await conn.fetch(
                "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1", CONSUMER
            )
            done = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
            early.extend(
                f"{t}[{p}] at {done.get((t, p), 0)} of {end}"
                for (t, p), end in ends.items()
                if t != consent_topic and p in numbers and done.get((t, p), 0) < end
            )
        await handle(self, conn, batch)

    monkeypatch.setattr(runtime, "AIOKafkaConsumer", counting)
    monkeypatch.setattr(SharedViewHandler, "handle", watching)
    result = await replay(own, own_pool)
    assert len(consumers) == 1, "one consumer, one membership, for both kinds of partition"
    assert consent_batches > 0 and result.persons > 0
    assert early == [], "a consent applied before its partition number's events were all stored"
