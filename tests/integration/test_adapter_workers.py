"""``hub run employment-adapter --workers 2``: two processes serve one port (one listening socket), the
events they accept reach Kafka through the one relay of the set, and SIGTERM stops the set cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from infra.auth import OrgKind, Role, add_client
from producers.adapters.sites import add_sites
from tests import factories
from tests.helpers import free_port, stop_processes, wait_for, wait_published

STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_adapter_left() -> Iterator[None]:
    """A failing test still stops the adapter it started (SIGTERM stops its workers too)."""
    yield
    stop_processes(STARTED)


def _start(env: dict[str, str], workers: int) -> subprocess.Popen[bytes]:
    hub = str(Path(sys.executable).parent / "hub")
    proc = subprocess.Popen(
        [hub, "run", "employment-adapter", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    STARTED.append(proc)
    return proc


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_two_adapter_workers_serve_one_port_publish_once_and_stop_cleanly(pool: asyncpg.Pool) -> None:
    """Before: ``--workers`` was no option of the adapters (exit 2), and a supervised worker that ended
    by the SIGTERM forwarded to it (uvicorn re-raises the signal it handled) made the set exit 1."""
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "新宿")])
        _, token = await add_client(
            conn,
            name="workers",
            org_kind=OrgKind.OFFICE,
            org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )
    port = free_port()
    env = {**os.environ, "HUB_EMPLOYMENT_PORT": str(port), "HUB_ADAPTER_RUNS_RELAY": "true"}
    proc = _start(env, workers=2)
    base = f"http://127.0.0.1:{port}"

    async def ready() -> int:
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                return (await http.get("/readyz")).status_code
        except httpx.TransportError:
            return 0

    await wait_for(ready, until=lambda status: status == 200, timeout_s=120)
    assert len(_children(proc.pid)) == 2, "two worker processes"

    placements = [factories.placement(factories.person_key()).data for _ in range(24)]
    headers = {"Authorization": f"Bearer {token}"}

    async def post(data: dict[str, object]) -> httpx.Response:
        # A connection each, so the kernel may hand requests to either worker.
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
            return await http.post("/v1/placement", json=data)

    responses = await asyncio.gather(*(post(p) for p in placements))
    assert [r.status_code for r in responses] == [202] * len(placements), [r.text for r in responses]
    event_ids = [r.json()["event_id"] for r in responses]
    await wait_published(pool, event_ids, timeout_s=120)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode(errors="replace")[-2000:]
