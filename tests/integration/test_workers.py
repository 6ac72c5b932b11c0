"""Several consumer processes in one group (``--workers``): the partitions are spread over them and each
event still takes effect exactly once — also when a worker is killed mid-stream and the set restarts.

Deterministic by construction, whatever the machine's load: events are published only once the group
is stable with both members holding partitions (so both apply some), the second half of the stream only
after the kill (so the kill lands mid-stream), and the end is read from the consumer's committed
positions (not from a pause)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from infra.config import Settings
from tests.helpers import members_holding_partitions, stop_processes, wait_for
from tests.integration.test_exactly_once import (
    TOTAL,
    _fresh_effects,
    _publish_registrations,
    applied_through,
)
from tests.support.counting_consumer import group_of

STARTED: list[subprocess.Popen[bytes]] = []


def _start(env: dict[str, str], workers: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.counting_consumer", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_supervisor_left() -> Iterator[None]:
    """A failing test still stops the supervisors it started (SIGTERM stops their workers too)."""
    yield
    stop_processes(STARTED)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


async def test_two_workers_share_the_partitions_and_apply_each_event_once(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    namespace = f"w{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(update={"topic_namespace": namespace})
    await _fresh_effects(pool, own)
    env = {
        **os.environ,
        "HUB_TOPIC_NAMESPACE": namespace,
        "HUB_BATCH_MAX_RECORDS": "50",
        "HUB_LOG_LEVEL": "INFO",
    }
    half = TOTAL // 2
    async with pool.acquire() as conn:
        supervisor = _start(env, workers=2)
        workers = await wait_for(
            lambda: asyncio.to_thread(_children, supervisor.pid), until=lambda c: len(c) == 2
        )
        # Both members hold partitions (3 of 6 each) before anything is published, so the first half
        # (random keys: every partition gets some) is applied by both, not raced through by the first.
        await wait_for(
            lambda: members_holding_partitions(own, group_of(own)), until=lambda n: n == 2, timeout_s=90
        )
        await _publish_registrations(own, half)
        await wait_for(
            lambda: conn.fetchval("SELECT count(DISTINCT pid) FROM test_effects"),
            until=lambda n: n == 2,
            timeout_s=90,
        )
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = supervisor.communicate(timeout=60)
        assert supervisor.returncode == 1, "a dead worker stops the set, for the process manager to restart"
        assert b"worker died" in stderr

        # The set restarts (once the killed member's session has expired, the group is stable again with
        # the two new members); the rest of the stream comes only now, so the kill was mid-stream.
        supervisor = _start(env, workers=2)
        await wait_for(
            lambda: members_holding_partitions(own, group_of(own)), until=lambda n: n == 2, timeout_s=120
        )
        await _publish_registrations(own, TOTAL - half)
        # Done when the committed positions reach the end: each event's effect commits with its position.
        await wait_for(lambda: applied_through(conn, own), until=lambda n: n == TOTAL, timeout_s=120)
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=30)
        assert supervisor.returncode == 0, stderr.decode()[-2000:]
        assert stderr.count(b"consumer stopped") == 2
        total, distinct = await conn.fetchrow("SELECT count(*), count(DISTINCT event_id) FROM test_effects")
        members = await conn.fetchval("SELECT count(DISTINCT pid) FROM test_effects")
    assert distinct == TOTAL, "nothing lost"
    assert total == TOTAL, "nothing applied twice"
    assert members >= 3, "the work was spread over the workers of both runs"
