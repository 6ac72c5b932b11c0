"""An operator's bad day on a three-node cluster, under load (issue 13).

A cluster of the test's own (replication factor 3, ``min.insync.replicas`` 2, small heaps) with PostgreSQL;
``hub run relay``, two members of a consumer whose effect is NOT idempotent (one row per application,
``tests.support.counting_consumer``) and ``hub run shared-view``, while a simulated stream is accepted
into the outbox. Faults, in order: a broker killed (-9) and restarted, a consumer killed and restarted,
the relay killed and restarted, PostgreSQL restarted, another broker killed and restarted.

Asserted: no accepted event lost, none applied twice, no service exited by itself and each exits 0 on
SIGTERM, and the shared view equals its replay. Relay duplicates (an event id at two offsets, from the
relay kill) are counted. The figures (faults, lost, applied twice, duplicates, longest stall, relay
recovery after the broker kill) are printed as one ``fault-suite figures`` line (``-s`` shows it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from consumers.shared_view.replay import replay
from consumers.shared_view.store import load_views
from contracts.envelope import Family, decode
from devtools.simulator import SimulationConfig, simulate
from devtools.stack.cluster import topic_health
from infra.config import Settings
from infra.crypto import KeyStore
from infra.db import TRANSIENT_DB_ERRORS
from infra.runner import prepare
from infra.topics import ensure_topics
from producers.ingest import accept
from tests.faults.conftest import OwnStack, stack_of_its_own
from tests.helpers import read_topic, wait_for
from tests.support.counting_consumer import EFFECTS_TABLE

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(settings: Settings) -> Iterator[OwnStack]:
    with stack_of_its_own(settings, 3, HUB_KAFKA_HEAP_OPTS="-Xms128m -Xmx320m") as stack:
        yield stack


def _record(figures: dict[str, object]) -> None:
    """Append the run's figures to ``$HUB_FAULT_FIGURES`` (JSON lines), if set: the issue's note."""
    if path := os.environ.get("HUB_FAULT_FIGURES"):
        with open(path, "a") as fh:
            fh.write(json.dumps(figures) + "\n")


class Progress:
    """Samples the consumer's effects and the outbox backlog; longest stall = the longest time effects
    did not grow while events were waiting for it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.samples: list[tuple[float, int, int]] = []  # (time, effects, outbox pending)
        self.published: list[tuple[float, int]] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    effects = await conn.fetchval("SELECT count(*) FROM test_effects")
                    pending = await conn.fetchval("SELECT count(*) FROM outbox_pending")
                    published = await conn.fetchval(
                        "SELECT count(*) FROM outbox WHERE id NOT IN (SELECT id FROM outbox_pending)"
                    )
                now = time.monotonic()
                self.samples.append((now, effects, pending))
                self.published.append((now, published))
            except TRANSIENT_DB_ERRORS:
                pass  # the database is restarting: the gap shows as a stall
            await asyncio.sleep(0.25)

    def longest_stall(self) -> float:
        """The longest time between two increases of the effects, from the first to the last one."""
        changes = [now[0] for before, now in itertools.pairwise(self.samples) if now[1] != before[1]]
        return max((b - a for a, b in itertools.pairwise(changes)), default=0.0)

    def recovery_after(self, t0: float) -> float | None:
        """Seconds from ``t0`` until the relay published something new."""
        before = max((n for t, n in self.published if t <= t0), default=0)
        return next((t - t0 for t, n in self.published if t > t0 and n > before), None)


async def test_three_node_cluster_survives_an_operators_bad_day(cluster: OwnStack, tmp_path: Path) -> None:
    s = cluster.settings
    assert s.kafka_bootstrap.count(",") == 2 and s.replication_factor == 3 and s.min_insync_replicas == 2
    status = cluster.hub("stack", "status", check=False)
    assert "active controller: node" in status.stdout, status.stdout + status.stderr

    pool = await prepare(s)
    await ensure_topics(s)
    health = {t.topic: t for t in await topic_health(s, prefix=f"{s.topic_namespace}.")}
    assert all(t.replication_factor == 3 and t.min_insync == 2 and t.accepts_writes for t in health.values())
    async with pool.acquire() as conn:
        await conn.execute(EFFECTS_TABLE)

    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, *args: str) -> None:
        with open(tmp_path / f"{name}.log", "ab") as fh:
            procs[name] = subprocess.Popen(
                [sys.executable, *args], env={**cluster.env, "HUB_BATCH_MAX_RECORDS": "200"},
                stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(name: str) -> None:
        procs[name].send_signal(signal.SIGKILL)
        procs[name].wait(timeout=30)

    start("relay", "-m", "hub.cli", "run", "relay")
    start("counting-1", "-m", "tests.support.counting_consumer")
    start("counting-2", "-m", "tests.support.counting_consumer")
    start("shared-view", "-m", "hub.cli", "run", "shared-view", "--no-api")

    subs = list(simulate(SimulationConfig(authorities=2, months=3, seed=7, registrations_per_site_month=30)))
    keystore = KeyStore.from_settings(s)
    accepted: list[str] = []
    registrations: list[str] = []

    async def load() -> None:
        for i in range(0, len(subs), 40):
            chunk = subs[i : i + 40]
            while True:
                try:
                    async with pool.acquire() as conn:
                        events = await accept(
                            conn, keystore, chunk, origin="faults", namespace=s.topic_namespace
                        )
                    break
                except TRANSIENT_DB_ERRORS:
                    await asyncio.sleep(0.2)
            accepted.extend(e.id for e in events)
            registrations.extend(e.id for e in events if e.family is Family.REGISTRATION)
            if not faults_done.is_set():
                await asyncio.sleep(0.5)  # a steady trickle while faults are injected, the rest at once

    progress = Progress(pool)
    faults_done = asyncio.Event()
    stop = asyncio.Event()
    sampling = asyncio.create_task(progress.run(stop))
    loading = asyncio.create_task(load())
    faults = 0
    await asyncio.sleep(5)

    broker_killed_at = time.monotonic()
    await asyncio.to_thread(cluster.hub, "stack", "node", "kill", "2")
    faults += 1
    await asyncio.sleep(3)
    await asyncio.to_thread(cluster.hub, "stack", "node", "start", "2")

    kill("counting-1")
    faults += 1
    start("counting-1", "-m", "tests.support.counting_consumer")
    await asyncio.sleep(3)

    kill("relay")
    faults += 1
    start("relay", "-m", "hub.cli", "run", "relay")
    await asyncio.sleep(3)

    await asyncio.to_thread(cluster.hub, "stack", "pg", "restart")
    faults += 1
    await asyncio.sleep(3)

    await asyncio.to_thread(cluster.hub, "stack", "node", "kill", "3")
    faults += 1
    await asyncio.sleep(3)
    await asyncio.to_thread(cluster.hub, "stack", "node", "start", "3")
    faults_done.set()
    await loading

    async def effects() -> int:
        try:
            async with pool.acquire() as conn:
                return int(
                    await conn.fetchval('SELECT count(DISTINCT (partition, "offset")) FROM test_effects')
                )
        except TRANSIENT_DB_ERRORS:
            return -1

    async def pending() -> int:
        try:
            async with pool.acquire() as conn:
                return int(await conn.fetchval("SELECT count(*) FROM outbox_pending"))
        except TRANSIENT_DB_ERRORS:
            return -1

    await wait_for(pending, until=lambda n: n == 0, timeout_s=180)
    records = await read_topic(s, s.topic(Family.REGISTRATION), timeout_s=30)
    await wait_for(effects, until=lambda n: n >= len(records), timeout_s=180)
    stop.set()
    await sampling

    exited = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
    codes = {}
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for name, p in procs.items():
        codes[name] = p.wait(timeout=60)

    per_id = Counter(decode(r.key, r.headers, r.value).id for r in records)
    async with pool.acquire() as conn:
        applied = await conn.fetch(
            'SELECT event_id, partition, "offset", count(*) AS n FROM test_effects GROUP BY 1, 2, 3'
        )
        view = sorted(await load_views(conn), key=lambda v: v.person_key)
    lost = len(set(registrations) - {r["event_id"] for r in applied})
    applied_twice = sum(r["n"] - 1 for r in applied)
    duplicates = sum(n - 1 for n in per_id.values())

    await replay(s, pool)
    async with pool.acquire() as conn:
        replayed = sorted(await load_views(conn), key=lambda v: v.person_key)
    await pool.close()

    figures = {
        "faults": faults,
        "accepted": len(accepted),
        "lost": lost,
        "applied_twice": applied_twice,
        "relay_duplicates": duplicates,
        "longest_stall_s": round(progress.longest_stall(), 1),
        "relay_recovery_after_broker_kill_s": progress.recovery_after(broker_killed_at),
    }
    print("fault-suite figures", json.dumps(figures))
    _record(figures)

    assert not exited, f"services exited on their own: {exited}"
    assert set(codes.values()) == {0}, f"SIGTERM exit codes: {codes}"
    assert lost == 0, f"{lost} accepted registrations never took effect"
    assert applied_twice == 0, f"{applied_twice} records applied twice"
    assert view and view == replayed, "the shared view equals its replay"
