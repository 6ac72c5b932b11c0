"""Single-writer roles that survive the database: a lock re-taken on every reconnect, and an epoch fence.

A role (the outbox relay, the shared-view projector, the feed builder) must have one writer per database.
The writer holds a session advisory lock on a connection of its own. A PostgreSQL restart ends that
session and frees the lock without the holder noticing at once, so the lock alone proves nothing:

* on taking the lock the holder bumps the role's ``epoch`` in ``leader_epochs`` and remembers it;
* every unit of work calls ``fence(conn)`` inside its own transaction, which reads the epoch
  ``FOR SHARE``: a holder whose epoch is no longer current gets ``LeadershipLost`` and its transaction
  rolls back; a new holder's bump waits for any batch in flight to commit, so the two never overlap;
* a keeper task watches the lock's connection; when it breaks, the process stops leading at once, and
  reconnects and takes the lock again (with capped backoff) — or waits as a standby while another
  process holds it.

A run of several worker processes (``hub run shared-view --workers N``, ``infra.runner.supervise``) is
one writer: one of its processes holds the role (``Leadership(share=…)``) and publishes its epoch in
memory the run shares (``SharedEpoch``); the others work under it (``Follower``), each of their units of
work fenced by that epoch exactly as the holder's own. A second, independent run still cannot write: it
has no share of the first's epoch, and its own holder waits as a standby.

Readiness (``infra.health``) shows ``leadership.<role>`` as ``leader``, ``standby`` (ready: someone
else leads) or ``reconnecting: <error>`` (not ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
from typing import Literal

import asyncpg

from infra import health, metrics
from infra.config import Settings
from infra.db import TRANSIENT_DB_ERRORS, connect
from infra.logging import get_logger

log = get_logger("leadership")

State = Literal["starting", "leader", "standby", "reconnecting", "stopped"]

_BUMP_EPOCH = """
INSERT INTO leader_epochs (role, epoch, holder) VALUES ($1, 1, $2)
ON CONFLICT (role) DO UPDATE SET epoch = leader_epochs.epoch + 1, holder = EXCLUDED.holder, acquired_at = now()
RETURNING epoch
"""


# The lock connection is the keeper's alone and is dropped on any of these (the server then frees the lock,
# and the fence stops the work): besides what a restart looks like to any client, asyncpg's own
# ``InternalClientError`` ("protocol is in an unexpected state"), which a restart can cause mid-message.
_LOCK_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_DB_ERRORS,
    asyncpg.exceptions.InternalClientError,
)
_RELEASE_ERRORS: tuple[type[BaseException], ...] = (*_LOCK_CONNECTION_ERRORS, asyncpg.PostgresError)


class LeadershipLost(Exception):
    """This process no longer provably holds the role; the work's transaction must roll back."""


class KeeperFailed(RuntimeError):
    """The keeper ended on an error its reconnects do not cover: this process will never lead again, so
    its work must end (and the process with it: ``infra.runner``) rather than wait as a standby forever."""


_CURRENT_EPOCH = "SELECT epoch FROM leader_epochs WHERE role = $1 FOR SHARE"


class SharedEpoch:
    """A role's epoch as the holder in a run of processes has it (0: not leading), in memory the run's
    processes share: made before they are forked."""

    def __init__(self) -> None:
        self._value = multiprocessing.get_context("fork").RawValue("q", 0)

    @property
    def epoch(self) -> int | None:
        return self._value.value or None

    def publish(self, epoch: int | None) -> None:
        self._value.value = epoch or 0


class Follower:
    """A process of a run whose role another process of the same run holds (``SharedEpoch``).

    ``fence(conn)`` proves, inside the caller's transaction, that the run still leads with the epoch its
    holder published, reading it ``FOR SHARE`` as ``Leadership.fence`` does: a new holder's epoch bump
    waits for the follower's batch in flight, and any later batch of the follower is refused."""

    def __init__(self, role: str, share: SharedEpoch, *, poll_interval_s: float = 0.2) -> None:
        self.role = role
        self.share = share
        self._poll_interval_s = poll_interval_s
        self._superseded: int | None = None  # an epoch found superseded: the holder has yet to notice

    async def wait_held(self, stop: asyncio.Event) -> bool:
        """Wait until the run's holder leads (with an epoch not found superseded); False if ``stop`` was
        set first."""
        while self.share.epoch in (None, self._superseded) and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._poll_interval_s)
        return self.share.epoch not in (None, self._superseded) and not stop.is_set()

    async def fence(self, conn: asyncpg.Connection) -> None:
        epoch = self.share.epoch
        if epoch is None:
            raise LeadershipLost(f"{self.role}: the run's holder does not lead")
        current = await conn.fetchval(_CURRENT_EPOCH, self.role)
        if current != epoch:
            self._superseded = epoch
            raise LeadershipLost(f"{self.role}: epoch {epoch} superseded by {current}")


class Leadership:
    """Hold ``role``'s lock (advisory key ``key``) for as long as the process runs, through reconnects.

    ``start()`` launches the keeper; ``wait_held`` waits until this process leads; ``fence(conn)`` proves
    it in a transaction; ``close()`` lets go. ``acquire_now()`` is the one-shot form for a job that must
    refuse rather than wait (a replay)."""

    def __init__(
        self,
        settings: Settings,
        role: str,
        key: int,
        *,
        check_interval_s: float = 1.0,
        poll_interval_s: float = 0.5,
        share: SharedEpoch | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.key = key
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.epoch: int | None = None
        self.state: State = "starting"
        self.acquisitions = 0
        self._check_interval_s = check_interval_s
        self._poll_interval_s = poll_interval_s
        self._share = share  # the run's other processes work under this epoch (``Follower``)
        self._conn: asyncpg.Connection | None = None
        self._held = asyncio.Event()
        self._lost = asyncio.Event()  # set whenever a held lock is lost (cleared when held again)
        self._broken = asyncio.Event()  # the lock connection ended
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Nothing reported yet: a leadership made and never started (a relay only drained, a one-shot
        # ``acquire_now``) must not leave the process unready for good (``infra.health`` is process-wide).

    # -- state -----------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._held.is_set()

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    def _report(self, state: State, *, ok: bool, detail: str | None = None) -> None:
        self.state = state
        health.report(f"leadership.{self.role}", ok, detail or state)
        metrics.LEADERSHIP.labels(self.role).set(1 if state == "leader" else 0)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._report("starting", ok=False)
            self._task = asyncio.create_task(self._keep(), name=f"leadership-{self.role}")
            self._task.add_done_callback(self._keeper_ended)

    async def wait_held(self, stop: asyncio.Event | None = None) -> bool:
        """Wait until this process leads; False if ``stop`` was set first. Raises ``KeeperFailed`` once
        the keeper has failed."""
        self._check_keeper()
        if self.held:
            return True
        waits = [asyncio.ensure_future(self._held.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        keeper = [self._task] if self._task is not None else []
        try:
            await asyncio.wait([*waits, *keeper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self._check_keeper()
        return self.held

    def _keeper_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        # The error's type, not its message (it may quote data); the work then ends on ``KeeperFailed``.
        log.error("leadership keeper failed, work stops for good", role=self.role, error=type(error).__name__)
        self._mark_lost(f"keeper failed: {type(error).__name__}")

    def _check_keeper(self) -> None:
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise KeeperFailed(f"{self.role}: the lock's keeper failed") from task.exception()

    async def acquire_now(self) -> bool:
        """Take the lock once, without waiting or reconnecting: True if this process now leads."""
        try:
            conn = await connect(self.settings)
        except TRANSIENT_DB_ERRORS as exc:
            self._report("reconnecting", ok=False, detail=f"reconnecting: {type(exc).__name__}")
            raise
        if not await self._try_lock(conn):
            await conn.close()
            self._report("standby", ok=True)
            return False
        self._conn = conn
        conn.add_termination_listener(self._on_terminated)
        return True

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # a failed keeper was reported
            self._task = None
        await self._release()
        self._report("stopped", ok=True)
        health.forget(f"leadership.{self.role}")

    async def __aenter__(self) -> Leadership:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- the fence ---------------------------------------------------------------------------------

    async def fence(self, conn: asyncpg.Connection) -> None:
        """Prove, inside the caller's transaction, that this process still leads; raise otherwise.

        ``FOR SHARE`` keeps the row until the caller commits: a new holder's epoch bump waits for it."""
        self._check_keeper()
        epoch = self.epoch
        if epoch is None or not self.held:
            raise LeadershipLost(f"{self.role}: not the leader ({self.state})")
        current = await conn.fetchval(_CURRENT_EPOCH, self.role)
        if current != epoch:
            self._mark_lost("fenced off: another holder's epoch")
            raise LeadershipLost(f"{self.role}: epoch {epoch} superseded by {current}")

    # -- the keeper --------------------------------------------------------------------------------

    async def _keep(self) -> None:
        backoff = 0.2
        while not self._closing.is_set():
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect(self.settings)
                    self._broken.clear()
                    self._conn.add_termination_listener(self._on_terminated)
                if not self.held and not await self._try_lock(self._conn):
                    if self.state != "standby":
                        log.info("waiting for the lock: another process leads", role=self.role)
                    self._report("standby", ok=True)
                    await self._pause(self._poll_interval_s)
                    continue
                backoff = 0.2
                await self._pause(self._check_interval_s)
                if self._broken.is_set():
                    raise ConnectionError("lock connection ended")
                await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=5)
            except _LOCK_CONNECTION_ERRORS as exc:  # ConnectionError is an OSError
                self._mark_lost(f"reconnecting: {type(exc).__name__}")
                await self._release()
                metrics.TRANSIENT_RETRIES.labels(f"leadership.{self.role}").inc()
                await self._pause(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)

    async def _try_lock(self, conn: asyncpg.Connection) -> bool:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
            return False
        async with conn.transaction():
            self.epoch = await conn.fetchval(_BUMP_EPOCH, self.role, self.holder)
        self.acquisitions += 1
        self._lost.clear()
        self._held.set()
        self._publish()
        self._report("leader", ok=True)
        log.info("leading", role=self.role, epoch=self.epoch)
        return True

    def _publish(self) -> None:
        if self._share is not None:
            self._share.publish(self.epoch if self.held else None)

    def _on_terminated(self, _conn: asyncpg.Connection) -> None:
        self._broken.set()
        self._mark_lost("reconnecting: lock connection ended")

    def _mark_lost(self, detail: str) -> None:
        if self.held:
            log.warning("leadership lost, work stops until the lock is held again", role=self.role,
                        epoch=self.epoch, reason=detail)  # fmt: skip
        self._held.clear()
        self.epoch = None
        self._publish()
        self._lost.set()
        if not self._closing.is_set():
            self._report("reconnecting", ok=False, detail=detail)

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        was_held = self.held
        self._held.clear()
        self.epoch = None
        self._publish()
        if conn is None or conn.is_closed():
            return
        try:
            if was_held:
                await asyncio.wait_for(conn.execute("SELECT pg_advisory_unlock($1)", self.key), timeout=2)
            await asyncio.wait_for(conn.close(), timeout=2)
        except _RELEASE_ERRORS:
            conn.terminate()  # the session's end frees the lock anyway

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
