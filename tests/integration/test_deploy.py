"""Every metric the alert rules and the dashboard in deploy/ name is exported on /metrics by the hub's
real services: the console (flow, outbox, dead-letter, consent and feed figures), an adapter (accepted
events, rejections) and a consumer service (consumed records, batch times, dead letters, retries),
each started as ``hub run …`` in its own process on the test database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.config import PROJECT_ROOT, Settings
from infra.topics import ensure_topics
from tests.deploy_files import expressions, metric_names
from tests.helpers import free_port

HUB = [sys.executable, "-m", "hub.cli"]
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created", "_info")


@contextmanager
def service(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*HUB, *command], env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _scrape(url: str, proc: subprocess.Popen[bytes], until: str | None = None) -> set[str]:
    """Names exported at ``url`` once it answers (and shows ``until``, a figure sampled in the background)."""
    deadline = time.monotonic() + 120  # a bound for a service that never comes up, not a speed check
    async with httpx.AsyncClient(timeout=5, follow_redirects=True) as http:  # /metrics → /metrics/
        while True:
            assert proc.poll() is None, f"{url}: the service exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{url}: no answer (with {until!r}) within 120 s"
            try:
                response = await http.get(url)
                if response.status_code == 200 and (until is None or until in response.text):
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    names = set()
    for family in text_string_to_metric_families(response.text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_in_deploy_is_exported(pool: asyncpg.Pool, settings: Settings) -> None:
    namespace = f"m{uuid.uuid4().hex[:10]}"
    await ensure_topics(settings.model_copy(update={"topic_namespace": namespace}))
    console, adapter, consumer = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "HUB_TOPIC_NAMESPACE": namespace,
        "HUB_CONSOLE_PORT": str(console),
        "HUB_CONSOLE_SAMPLE_INTERVAL_S": "0.5",
        "HUB_WELFARE_PORT": str(adapter),
        "HUB_ADAPTER_RUNS_RELAY": "false",  # the test database's outbox belongs to other tests
        "HUB_METRICS_PORT": str(consumer),
    }
    exported: set[str] = set()
    with (
        service(["run", "console"], env) as c,
        service(["run", "welfare-adapter"], env) as a,
        service(["run", "event-log"], env) as e,
    ):
        exported |= await _scrape(f"http://127.0.0.1:{console}/metrics", c, until="ittai_consumer_lag")
        exported |= await _scrape(f"http://127.0.0.1:{adapter}/metrics", a)
        exported |= await _scrape(f"http://127.0.0.1:{consumer}/metrics", e)
    referenced = {name: where for where, expr in expressions() for name in metric_names(expr)}
    assert len(referenced) >= 10
    missing = {
        name: where
        for name, where in referenced.items()
        if not any(name == f"{family}{suffix}" for family in exported for suffix in SUFFIXES)
    }
    assert missing == {}, "named in deploy/ but exported by no service"
