"""Fault tests: they restart PostgreSQL and kill brokers, so they run on a stack of their own.

Never the shared stack (``HUB_STACK_DIR``, the developer's or CI's): every session here starts its own
one-node Kafka and PostgreSQL in a temporary folder on free ports (``own``) — and the three-node tests
their own cluster (``cluster``) — and stops and deletes them at the end. Services under test run as real
``hub run …`` processes pointed at that stack through ``HUB_*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from devtools.stack.kafka import port_open
from infra.config import Settings
from infra.runner import prepare
from infra.topics import ensure_topics


@dataclass
class OwnStack:
    """A stack of the session's own: ``settings`` and ``env`` point every client and ``hub`` at it."""

    settings: Settings
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def hub(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hub.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def start(self, *args: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
        """``hub run …`` in the background, its log in ``log``."""
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "run", *args],
                env={**self.env, **env},
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    @staticmethod
    async def logged(log: Path, text: str, timeout_s: float = 60) -> None:
        """Wait until the service wrote ``text`` to its log (it got that far)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while text not in _read(log):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{log.name} never said {text!r}")
            await asyncio.sleep(0.1)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
        """SIGTERM and wait; the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9


def _read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


# Ports for a stack of its own lie below the kernel's ephemeral range (32768-60999 here): a port picked from
# inside it can be taken as the local port of any outgoing connection (a Kafka client's, a test's) before
# the server binds it, and `hub stack up` then fails now and then (seen on a busy machine).
_PORTS_FROM, _PORTS_TO = 20000, 32000


def free_port_base(nodes: int) -> int:
    """A Kafka port base whose broker and controller ports (base + 100*(n-1), +1) are all free."""
    rng = random.Random()
    while True:
        base = rng.randrange(_PORTS_FROM, _PORTS_TO - 300)
        ports = [base + 100 * i + j for i in range(nodes) for j in (0, 1)]
        if not any(port_open(p) for p in ports):
            return base


def _free_pg_port(kafka_base: int) -> int:
    rng = random.Random()
    while True:
        port = rng.randrange(_PORTS_FROM, _PORTS_TO)
        if abs(port - kafka_base) > 300 and not port_open(port):
            return port


@contextlib.contextmanager
def stack_of_its_own(
    settings: Settings, nodes: int, *, secure: bool = False, **extra: str
) -> Iterator[OwnStack]:
    """Kafka (``nodes`` nodes) and PostgreSQL in a temporary folder on free ports; deleted afterwards.

    ``secure``: ``hub stack up --secure`` (SASL_SSL, users, ACLs for the session's topic namespace);
    ``OwnStack.settings`` stay unauthenticated, ``devtools.stack.secure.load_secrets`` gives each user's."""
    folder = Path(tempfile.mkdtemp(prefix="ittai-faults-"))
    folder.chmod(0o755)  # PostgreSQL runs as an unprivileged user and must reach its data folder
    libs = settings.stack_dir / f"kafka-libs-{settings.kafka_version}"
    if libs.exists():  # the jar cache is shared (read-only use), the data never is
        (folder / libs.name).symlink_to(libs)
    base = free_port_base(nodes)
    pg_port = _free_pg_port(base)
    bootstrap = ",".join(f"127.0.0.1:{base + 100 * i}" for i in range(nodes))
    rf = 1 if nodes == 1 else 3
    update: dict[str, Any] = {
        "stack_dir": folder,
        "pg_port": pg_port,
        "kafka_port_base": base,
        "kafka_bootstrap": bootstrap,
        "replication_factor": rf,
        "min_insync_replicas": 1 if nodes == 1 else 2,
    }
    env = {
        **os.environ,
        "HUB_LOG_LEVEL": "INFO",
        **{f"HUB_{k.upper()}": str(v) for k, v in update.items()},
        **extra,
    }
    own = OwnStack(settings.model_copy(update=update), env)
    try:
        up = own.hub(
            "stack", "up", "--nodes", str(nodes), *(["--secure"] if secure else []), check=False, timeout=300
        )
        if up.returncode != 0:  # what went wrong is in its output (pytest would not show it)
            raise AssertionError(f"hub stack up exited {up.returncode}: {(up.stdout + up.stderr)[-3000:]}")
        yield own
    finally:
        for proc in own.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        own.hub("stack", "down", check=False, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def own(settings: Settings) -> Iterator[OwnStack]:
    """A one-node Kafka and a PostgreSQL of the session's own, free to stop, kill and restart."""
    with stack_of_its_own(settings, 1) as stack:
        yield stack


@pytest_asyncio.fixture(scope="session")
async def own_pool(own: OwnStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await prepare(own.settings)
    reports = await ensure_topics(own.settings)
    assert all(r.status != "mismatch" for r in reports), reports
    yield pool
    pool.terminate()
