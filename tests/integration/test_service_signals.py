"""A service process and SIGTERM at every moment of its life, and a service that ends on its own.

A process manager stops a service whenever it likes: while the service still loads its modules (seconds
on a busy machine — the second relay of ``tests/faults/test_database_restart.py`` was stopped so, and died
by the signal: exit -15), while it serves, or while it winds down. Each ends with 0 (``infra.signals``,
``infra.runner``). A service that ends on its own stops its process with 1 and a log line naming it,
and a relay whose leadership keeper failed ends instead of waiting as a standby forever: never a live
process that does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from infra.config import PROJECT_ROOT, Settings
from infra.leadership import KeeperFailed, Leadership
from producers.outbox import OutboxRelay
from tests.helpers import wait_for

# Installed as ``sitecustomize``: holds the process where it loads ``hub.cli.main`` (the slow part of a
# ``hub run``: every module of the hub), until the test writes to the FIFO ``$TEST_HOLD``.
HOLD_WHILE_LOADING = """
import os, sys

class _Hold:
    def find_spec(self, name, path=None, target=None):
        if name == "hub.cli.main":
            sys.meta_path.remove(self)
            hold = os.environ["TEST_HOLD"]
            open(hold + ".reached", "w").close()
            with open(hold) as fifo:
                fifo.read()
        return None

sys.meta_path.insert(0, _Hold())
"""

# A service run as ``hub run`` runs one (``infra.signals.exit_on_sigterm``, then ``run_forever``). It
# leaves a thread that outlives it, as a stuck executor job or a library's thread may: the thread waits
# until the runner has given SIGTERM back, says so (``given-back``), then never ends, so the process
# cannot end by itself. ``argv[1]``: ``stopped`` (serves until SIGTERM), ``returns`` or ``raises``.
SERVICE = """
import asyncio, signal, sys, time
from pathlib import Path

from infra.runner import run_forever
from infra.signals import exit_on_sigterm

exit_on_sigterm()
GIVEN_BACK = signal.getsignal(signal.SIGTERM)
how, folder = sys.argv[1], Path(sys.argv[2])


def linger():
    while signal.getsignal(signal.SIGTERM) is not GIVEN_BACK:
        time.sleep(0.01)
    (folder / "given-back").touch()
    (folder / "hold").read_text()


class Service:
    def __init__(self):
        self._stop = asyncio.Event()

    async def run(self):
        asyncio.get_running_loop().run_in_executor(None, linger)
        (folder / "serving").touch()
        if how == "raises":
            raise LookupError("a message that may quote data: Yamada Taro")
        if how == "stopped":
            await self._stop.wait()

    def stop(self):
        self._stop.set()


run_forever(lambda settings, pool: [Service()])
"""


@contextlib.contextmanager
def _started(*args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A Python process of the hub's; killed at the end if a failed check left it running."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def _appears(path: Path, proc: subprocess.Popen[bytes]) -> None:
    async def there() -> bool:
        assert proc.poll() is None, (
            f"ended early with {proc.returncode}: {proc.stdout and proc.stdout.read()!r}"
        )
        return await asyncio.to_thread(path.exists)

    await wait_for(there, until=bool, timeout_s=120)


def _ends(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out.decode(errors="replace")


async def test_a_service_stopped_while_it_loads_its_modules_exits_0(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(HOLD_WHILE_LOADING)
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    with _started("-m", "hub.cli", "run", "relay", PYTHONPATH=path, TEST_HOLD=str(hold)) as proc:
        await _appears(tmp_path / "hold.reached", proc)
        proc.send_signal(signal.SIGTERM)
        code, out = await asyncio.to_thread(_ends, proc)
    assert code == 0, f"exit code {code}: {out[-3000:]}"


@pytest.mark.parametrize("how", ["returns", "raises"])
async def test_a_service_that_ends_on_its_own_ends_its_process_with_1_and_says_so(
    pool: asyncpg.Pool, tmp_path: Path, how: str
) -> None:
    os.mkfifo(tmp_path / "hold")
    with _started("-c", SERVICE, how, str(tmp_path)) as proc:
        # Its services ended; a thread of its keeps it alive: SIGTERM still ends it, with the failure's 1.
        await _appears(tmp_path / "given-back", proc)
        proc.send_signal(signal.SIGTERM)
        code, out = await asyncio.to_thread(_ends, proc)
    assert code == 1, f"exit code {code}: {out[-3000:]}"
    assert "service ended on its own, stopping the process" in out, out[-3000:]
    assert ("LookupError" if how == "raises" else '"error": "returned"') in out, out[-3000:]
    assert "Yamada" not in out, "an error's message may quote data: never logged"


async def test_sigterm_while_a_stopped_service_winds_down_exits_0(pool: asyncpg.Pool, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "hold")
    with _started("-c", SERVICE, "stopped", str(tmp_path)) as proc:
        await _appears(tmp_path / "serving", proc)
        proc.send_signal(signal.SIGTERM)  # stops the service; a thread of its keeps the process winding down
        await _appears(tmp_path / "given-back", proc)
        proc.send_signal(signal.SIGTERM)
        code, out = await asyncio.to_thread(_ends, proc)
    assert code == 0, f"exit code {code}: {out[-3000:]}"


class _Refused(asyncpg.exceptions.InsufficientPrivilegeError):
    """An error of PostgreSQL's that no reconnect cures (not in ``TRANSIENT_DB_ERRORS``)."""


async def test_a_relay_whose_leadership_keeper_failed_ends_rather_than_waiting_for_ever(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(self: Leadership, conn: asyncpg.Connection) -> bool:
        raise _Refused("permission denied for table leader_epochs")

    monkeypatch.setattr(Leadership, "_try_lock", refused)
    relay = OutboxRelay(settings, pool)
    with pytest.raises(KeeperFailed):
        # A guard against the hang this test is about, not a timing: the keeper fails at once.
        await asyncio.wait_for(relay.run(), timeout=120)
    assert relay.leadership.state == "stopped"


async def test_a_keeper_whose_lock_connection_breaks_in_the_drivers_protocol_reconnects(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restart can break the lock connection mid-message: asyncpg then raises its own
    ``InternalClientError`` ("protocol is in an unexpected state"), not a connection error. The relay of
    tests/faults/test_cluster.py ended for good on it; the keeper must drop that connection (the server frees
    the lock), stop the work it fences, and take the lock again on a new connection."""
    real_try_lock = Leadership._try_lock
    calls = 0

    async def breaks_once(self: Leadership, conn: asyncpg.Connection) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise asyncpg.exceptions.InternalClientError("cannot process message 'E': unexpected state")
        return await real_try_lock(self, conn)

    monkeypatch.setattr(Leadership, "_try_lock", breaks_once)
    leadership = Leadership(settings, "relay-keeper-test", 7_209_901, check_interval_s=0.05)
    leadership.start()
    try:
        # Guards against a hang, not timings: each step happens as soon as the keeper runs.
        assert await asyncio.wait_for(leadership.wait_held(), timeout=60)
        first = leadership.epoch
        leadership._broken.set()  # the lock connection ended: the keeper reconnects and locks again
        await wait_for(lambda: _acquisitions(leadership), until=lambda n: n == 2, timeout_s=60)
        assert await asyncio.wait_for(leadership.wait_held(), timeout=60)
        assert calls == 3 and leadership.epoch is not None and first is not None and leadership.epoch > first
    finally:
        await leadership.close()


async def _acquisitions(leadership: Leadership) -> int:
    leadership._check_keeper()  # a failed keeper fails the test at once (KeeperFailed), not at the guard
    return leadership.acquisitions
