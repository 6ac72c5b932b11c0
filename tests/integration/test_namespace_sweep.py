"""Namespaces and databases of killed runs are swept from the shared development stack, and nothing else.

A killed test session or bench used to leave its topics on the shared broker (it once ran out of memory
under ~14,000 dead partitions) and its database in PostgreSQL. Each run now leases what it makes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devtools.stack import namespaces
from infra import topics
from infra.config import Settings
from infra.kafka import client_options
from infra.topics import ensure_topics
from tests.helpers import wait_for


async def _gone(settings: Settings, namespace: str) -> bool:
    """The broker deletes a topic a moment after answering: wait until its metadata no longer lists it."""
    await wait_for(lambda: _topics(settings, namespace), until=lambda left: left == [])
    return True


async def _topics(settings: Settings, namespace: str) -> list[str]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(f"{namespace}.")]
    finally:
        await admin.close()


async def _databases(settings: Settings) -> set[str]:
    conn = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + "/postgres")
    try:
        return {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


def _own(settings: Settings, ledger: Path, letter: str) -> Settings:
    # A ledger of the test's own: the sweep here sees only the leases this test wrote.
    return settings.model_copy(
        update={"stack_dir": ledger, "topic_namespace": f"{letter}{uuid.uuid4().hex[:10]}"}
    )


async def _dead_pid() -> int:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    return proc.pid


async def test_a_killed_runs_namespace_and_database_are_swept(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    killed = _own(settings, tmp_path, "k")
    database = f"ittai_test_sweep{uuid.uuid4().hex[:8]}"
    owner = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(600)")
    try:
        assert namespaces.claim(killed, database=database, pid=owner.pid) is not None
        await ensure_topics(killed)
        conn = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + "/postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        assert await namespaces.sweep(killed) == []  # the owner still runs: nothing is touched
        assert len(await _topics(settings, killed.topic_namespace)) == len(killed.event_topics) + 2
        owner.kill()
        await owner.wait()
    finally:
        if owner.returncode is None:
            owner.kill()
        await owner.wait()

    swept = await namespaces.sweep(killed)

    assert [lease.namespace for lease in swept] == [killed.topic_namespace]
    assert await _gone(settings, killed.topic_namespace)
    assert database not in await _databases(settings)
    assert namespaces.leases(killed) == []


async def test_a_reused_pid_is_not_the_owner(pool: asyncpg.Pool, settings: Settings, tmp_path: Path) -> None:
    """The lease names the owner by PID and start time: a PID the kernel gave to another (live) process
    after the owner died does not keep the namespace."""
    reused = _own(settings, tmp_path, "u")
    await ensure_topics(reused)
    ledger = tmp_path / "namespaces"
    ledger.mkdir(exist_ok=True)
    (ledger / f"{reused.topic_namespace}.json").write_text(
        json.dumps(
            {
                "namespace": reused.topic_namespace,
                "pid": os.getpid(),
                "pid_started": "1",
                "created": "2026-11-28T00:00:00Z",
            }
        )
    )

    assert [lease.namespace for lease in await namespaces.sweep(reused)] == [reused.topic_namespace]
    assert await _gone(settings, reused.topic_namespace)


async def test_what_is_not_leased_to_a_dead_process_is_never_touched(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = _own(settings, tmp_path, "l")
    unleased = _own(settings, tmp_path, "n")
    namespaces.claim(live, database="ittai_test_notdropped")
    await ensure_topics(live)
    with monkeypatch.context() as m:
        m.setattr(topics, "namespace_observers", [])  # as another checkout's run makes them: no lease
        await ensure_topics(unleased)
    # A lease claiming the demo's namespace (written by hand: claim refuses it) is not acted on, and a
    # database that is not a throw-away one is never recorded.
    demo = settings.model_copy(update={"stack_dir": tmp_path, "topic_namespace": "ittai"})
    assert namespaces.claim(demo) is None
    assert (
        namespaces.claim(_own(settings, tmp_path, "d"), database="ittai", pid=await _dead_pid()) is not None
    )
    (tmp_path / "namespaces" / "ittai.json").write_text(
        json.dumps(
            {
                "namespace": "ittai",
                "pid": await _dead_pid(),
                "pid_started": "",
                "created": "2026-11-28T00:00:00Z",
            }
        )
    )

    swept = await namespaces.sweep(live)

    assert all(lease.namespace != "ittai" and lease.database is None for lease in swept)
    assert {lease.namespace for lease in namespaces.leases(live)} == {live.topic_namespace}
    assert await _topics(settings, live.topic_namespace) != []
    assert await _topics(settings, unleased.topic_namespace) != []
    await namespaces.delete_topics(settings, [live.topic_namespace, unleased.topic_namespace])


async def test_every_namespace_a_session_makes_is_leased_to_it(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The session's own namespace and database, and a module's namespace made with ``ensure_topics``,
    are leased to the session's process (and so deleted at its end, or swept after it is killed)."""
    module = settings.model_copy(update={"topic_namespace": f"m{uuid.uuid4().hex[:10]}"})
    await ensure_topics(module)

    mine = {lease.namespace: lease for lease in namespaces.leases(settings) if lease.pid == os.getpid()}

    assert mine[settings.topic_namespace].database == settings.pg_database
    assert module.topic_namespace in mine
    assert namespaces.owner_alive(mine[module.topic_namespace])


async def test_hub_stack_sweep_sweeps_what_dead_runs_left(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    left = _own(settings, tmp_path, "s")
    namespaces.claim(left, pid=await _dead_pid())  # as a killed run left it
    with monkeypatch.context() as m:
        m.setattr(topics, "namespace_observers", [])
        await ensure_topics(left)
    env = {**os.environ, "HUB_STACK_DIR": str(tmp_path), "HUB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "stack", "sweep", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert f"swept {left.topic_namespace}.*" in out.decode()
    assert await _gone(settings, left.topic_namespace)
    assert namespaces.leases(left) == []


async def test_a_namespace_leased_with_one_database_is_not_claimed_with_another(
    settings: Settings, tmp_path: Path
) -> None:
    """A claim hands back a live lease only where it records the same database (or the claim names none):
    otherwise the claimer's release would drop the other database and delete the namespace's topics (a
    test's scratch database claimed under its session's namespace dropped the session's)."""
    own = _own(settings, tmp_path, "c")
    first = namespaces.claim(own)  # as the namespace's first topics lease it, before a database is named
    assert first is not None and first.database is None
    session = namespaces.claim(own, database="ittai_test_csession")
    assert session is not None and session.database == "ittai_test_csession", (
        "this process's lease, completed"
    )
    assert namespaces.claim(own) == session
    assert namespaces.claim(own, database="ittai_test_csession") == session
    with pytest.raises(namespaces.LeaseTaken):
        namespaces.claim(own, database="ittai_test_cscratch")
    assert namespaces.leases(own) == [session], "the lease is unchanged"
