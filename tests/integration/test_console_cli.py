"""The console's terminal side on the real stack: ``hub status``, ``hub console add-operator``, the demo
step, and the Prometheus port of a service without HTTP (``HUB_METRICS_PORT``)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
from rich.console import Console

from contracts.envelope import Family
from devtools.demo.monitoring import demo_console
from infra.auth import OrgKind, Role, authenticate
from infra.config import PROJECT_ROOT, Settings
from tests import factories
from tests.browser.flows import kafka_ends, publish
from tests.helpers import free_port, wait_for

HUB = str(Path(sys.executable).with_name("hub"))


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **extra}


async def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [HUB, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(**env),
        cwd=PROJECT_ROOT,
    )


async def test_hub_status_shows_the_essentials(pool: asyncpg.Pool, settings: Settings) -> None:
    await publish(settings, pool, [factories.referral(factories.person_key())], origin="status-test")
    topic = settings.topic(Family.REFERRAL)
    end = await kafka_ends(settings, topic)
    result = await _run("status")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for heading in ("Topics", "Consumer groups", "Adapters (outbox)", "Dead letters:", "Feeds:", "Consent:"):
        assert heading in text, heading
    row = next(line for line in text.splitlines() if topic in line)
    assert re.search(rf"\b{end:,}\b", row), row
    assert "status-test" in text


async def test_add_operator_prints_a_token_that_logs_in_as_an_operator(pool: asyncpg.Pool) -> None:
    result = await _run("console", "add-operator", "night shift")
    assert result.returncode == 0, result.stderr
    token = re.search(r"ith_[0-9a-f]+\.[A-Za-z0-9_-]+", result.stdout)
    assert token is not None, result.stdout
    async with pool.acquire() as conn:
        principal = await authenticate(conn, f"Bearer {token.group(0)}")
    assert principal.org_kind is OrgKind.OPERATOR and principal.roles == {Role.OPERATE}
    assert principal.name == "night shift"


async def test_demo_step_creates_an_operator_and_prints_the_address(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    buffer = io.StringIO()
    url = await demo_console(settings, pool, Console(file=buffer, width=300), serve=False)
    assert url == f"http://{settings.http_host}:{settings.console_port}/"
    printed = buffer.getvalue()
    assert url in printed and "hub run console" in printed
    token = re.search(r"ith_[0-9a-f]+\.[A-Za-z0-9_-]+", printed)
    assert token is not None
    async with pool.acquire() as conn:
        assert (await authenticate(conn, f"Bearer {token.group(0)}")).org_kind is OrgKind.OPERATOR


async def test_a_consumer_process_serves_metrics_on_its_port(pool: asyncpg.Pool, settings: Settings) -> None:
    port = free_port()
    await publish(settings, pool, [factories.registration(factories.person_key())], origin="metrics-test")
    proc = await asyncio.create_subprocess_exec(
        HUB,
        "run",
        "event-log",
        env=_env(HUB_METRICS_PORT=str(port)),
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as http:

            async def scrape() -> str:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                except httpx.TransportError:
                    return ""

            text = await wait_for(
                scrape, until=lambda t: 'ittai_events_consumed_total{consumer="event-log"}' in t
            )
        assert "ittai_batch_seconds_bucket" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
