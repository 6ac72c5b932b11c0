"""PostgreSQL restarts under running single-writer services (issue 13, defects 1–3).

Each test restarts (or stops) the session's own PostgreSQL under real ``hub run …`` processes and checks
what the issue found broken: after the restart a second relay publishes nothing beside the first,
a replay is refused while the projector runs, no service exits, and SIGTERM ends each with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from consumers.catchup import end_offsets, progress_of
from consumers.shared_view.replay import ReplayRefused, replay
from contracts.envelope import Family, decode, encode
from infra.crypto import KeyStore
from infra.db import TRANSIENT_DB_ERRORS
from infra.kafka import client_options
from producers.ingest import accept
from producers.submission import to_event
from tests import factories
from tests.faults.conftest import OwnStack
from tests.helpers import read_topic, wait_for

pytestmark = pytest.mark.faults


class Loader:
    """Accepts placements into the outbox one small batch at a time, riding out the database's absence
    (an event counts as accepted only once its transaction committed)."""

    def __init__(self, stack: OwnStack, pool: asyncpg.Pool) -> None:
        self.stack = stack
        self.pool = pool
        self.keystore = KeyStore.from_settings(stack.settings)
        self.accepted: list[str] = []

    async def accept(self, n: int) -> list[str]:
        ids: list[str] = []
        while len(ids) < n:
            subs = [factories.placement(factories.person_key()) for _ in range(min(10, n - len(ids)))]
            try:
                async with self.pool.acquire() as conn:
                    events = await accept(
                        conn, self.keystore, subs, origin="faults",
                        namespace=self.stack.settings.topic_namespace,
                    )  # fmt: skip
            except TRANSIENT_DB_ERRORS:
                await asyncio.sleep(0.2)
                continue
            ids += [e.id for e in events]
        self.accepted += ids
        return ids

    async def pending(self) -> int:
        while True:
            try:
                async with self.pool.acquire() as conn:
                    return int(await conn.fetchval("SELECT count(*) FROM outbox_pending"))
            except TRANSIENT_DB_ERRORS:
                await asyncio.sleep(0.2)


def _ended(proc: subprocess.Popen[bytes], code: int | None, log: Path) -> str:
    """What a failed check about a service's process says: its exit code and the end of its log."""
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    return f"pid {proc.pid} exit code {code}; {log.name} ends:\n{text[-3000:]}"


async def _published(stack: OwnStack) -> Counter[str]:
    records = await read_topic(stack.settings, stack.settings.topic(Family.PLACEMENT))
    return Counter(decode(r.key, r.headers, r.value).id for r in records)


async def test_relay_keeps_its_lock_through_a_database_restart(
    own: OwnStack, own_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    loader = Loader(own, own_pool)
    logs = [tmp_path / "relay-1.log", tmp_path / "relay-2.log"]
    first = own.start("relay", log=logs[0])
    await loader.accept(200)
    await wait_for(loader.pending, until=lambda n: n == 0, timeout_s=60)

    # Restart PostgreSQL while events keep arriving.
    loading = asyncio.create_task(loader.accept(300))
    await asyncio.to_thread(own.hub, "stack", "pg", "restart")
    await loading

    # A second relay started after the restart must find the first one leading again, and wait.
    # (The first re-takes the lock after a backoff, and loading its modules alone takes the second
    # seconds on a busy machine: both waited for, not assumed.)
    async def leads() -> int:
        return logs[0].read_text(errors="replace").count('"event": "leading"')

    await wait_for(leads, until=lambda n: n >= 2, timeout_s=60)
    second = own.start("relay", log=logs[1])
    await own.logged(logs[1], "waiting for the lock: another process leads", timeout_s=120)
    after = await loader.accept(500)
    await wait_for(loader.pending, until=lambda n: n == 0, timeout_s=90)

    for proc, log in zip((first, second), logs, strict=True):
        assert proc.poll() is None, _ended(proc, proc.returncode, log)
    published = await _published(own)
    assert set(loader.accepted) <= set(published), "every accepted event reached Kafka"
    twice = {i: n for i, n in published.items() if i in set(after) and n > 1}
    assert not twice, f"{len(twice)} events accepted after the restart were published by both relays"
    async with own_pool.acquire() as conn:
        holder = await conn.fetchval("SELECT holder FROM leader_epochs WHERE role = 'relay'")
    assert holder.endswith((f":{first.pid}", f":{second.pid}"))
    for proc, log in zip((first, second), logs, strict=True):
        code = own.stop(proc)
        assert code == 0, "SIGTERM after a database restart exits 0: " + _ended(proc, code, log)


async def test_replay_is_refused_while_the_projector_runs_through_a_restart(
    own: OwnStack, own_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = own.settings.model_copy(update={"topic_namespace": f"r{uuid.uuid4().hex[:8]}"})
    from infra.topics import ensure_topics

    await ensure_topics(settings)
    keystore = KeyStore.from_settings(settings)

    async def produce(n: int) -> None:
        people = [factories.person_key() for _ in range(n)]
        async with own_pool.acquire() as conn:
            keys = await keystore.keys_for(conn, set(people))
        producer = AIOKafkaProducer(**client_options(settings), acks="all")
        await producer.start()
        try:
            for pk in people:
                for sub in (factories.consent(pk), factories.registration(pk)):
                    event = to_event(sub, keys[pk])
                    k, headers, value = encode(event)
                    await producer.send(settings.topic(event.family), value, key=k, headers=headers)
            await producer.flush()
        finally:
            await producer.stop()

    async def caught_up() -> bool:
        ends = await end_offsets(settings, settings.event_topics)
        while True:
            try:
                async with own_pool.acquire() as conn:
                    return await progress_of(conn, "shared-view", ends) >= sum(ends.values())
            except TRANSIENT_DB_ERRORS:
                await asyncio.sleep(0.2)

    await produce(20)
    projector = own.start(
        "shared-view",
        "--no-api",
        log=tmp_path / "shared-view.log",
        HUB_TOPIC_NAMESPACE=settings.topic_namespace,
    )
    await wait_for(caught_up, until=bool, timeout_s=90)

    await asyncio.to_thread(own.hub, "stack", "pg", "restart")
    await produce(20)  # applied only once the projector leads again
    await wait_for(caught_up, until=bool, timeout_s=90)

    with pytest.raises(ReplayRefused):
        await replay(settings, own_pool)
    log = tmp_path / "shared-view.log"
    assert projector.poll() is None, _ended(projector, projector.returncode, log)
    code = own.stop(projector)
    assert code == 0, _ended(projector, code, log)


async def test_services_wait_for_the_database_and_stop_cleanly_while_it_is_down(
    own: OwnStack, own_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    own.hub("stack", "pg", "down")
    try:
        waiting = own.start("relay", log=tmp_path / "relay-waiting.log")
        started = own.start("relay", log=tmp_path / "relay-started.log")
        for name in ("relay-waiting", "relay-started"):
            await own.logged(tmp_path / f"{name}.log", "database unavailable, retrying")
        assert waiting.poll() is None and started.poll() is None
        code = own.stop(waiting)
        assert code == 0, "SIGTERM while the database is down exits 0: " + _ended(
            waiting, code, tmp_path / "relay-waiting.log"
        )
    finally:
        own.hub("stack", "pg", "up")
    loader = Loader(own, own_pool)
    with contextlib.suppress(*TRANSIENT_DB_ERRORS):
        await own_pool.execute("SELECT 1")  # the pool's old connections died with the server
    await loader.accept(50)
    await wait_for(loader.pending, until=lambda n: n == 0, timeout_s=60)
    log = tmp_path / "relay-started.log"
    assert started.poll() is None, _ended(started, started.returncode, log)
    code = own.stop(started)
    assert code == 0, _ended(started, code, log)
