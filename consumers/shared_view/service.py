"""``hub run shared-view``: the projection consumer, its HTTP API and the consent-validity sweep, together.

The projection leads the ``shared-view`` role (``infra.leadership``: lock ``AdvisoryLock.SHARED_VIEW_ROLE``, re-taken after
every reconnect, every batch fenced by epoch) so a replay cannot rebuild the view under it; a second
``hub run shared-view`` waits as a standby.

``--workers N`` runs N processes in one consumer group, one writer still: worker 0 holds the role (and
serves the API, and sweeps), the others work under its epoch (``infra.leadership.Follower``). Partitions
are assigned person-affine (the range assignor: the same partition numbers of every topic to one
member), and every batch takes the locks of its people's partition numbers (``store.begin``), so the view
is the one a single process builds, under any assignment, through rebalances and restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import asyncpg
import uvicorn

from consumers.runtime import ConsumerRuntime
from consumers.shared_view.api import build_app
from consumers.shared_view.handler import SharedViewHandler
from infra.config import Settings
from infra.db import TRANSIENT_DB_ERRORS, AdvisoryLock
from infra.http import server
from infra.leadership import Follower, Leadership, LeadershipLost, SharedEpoch
from infra.logging import get_logger

log = get_logger("shared-view")

SWEEP_INTERVAL_S = 60.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # infra.runner owns SIGTERM/SIGINT and calls stop() on every service.
        yield


class ApiService:
    def __init__(self, settings: Settings) -> None:
        self._server = _Server(
            server(build_app(settings), settings.http_host, settings.shared_view_port).config
        )

    async def run(self) -> None:
        await self._server.serve()

    def stop(self) -> None:
        self._server.should_exit = True


class ProjectionService:
    """The consumer plus a periodic sweep for consents that start or end on a date."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, *, share: SharedEpoch | None = None, lead: bool = True
    ) -> None:
        """``share``: the epoch of a run of several workers; ``lead``: this worker holds the role (and
        publishes its epoch there), else it works under the worker that does."""
        self.handler = SharedViewHandler(settings)
        self.leadership = Leadership(settings, "shared-view", AdvisoryLock.SHARED_VIEW_ROLE, share=share)
        self.follower = Follower("shared-view", share) if share is not None and not lead else None
        fence, held = (
            (self.follower.fence, self.follower.wait_held)
            if self.follower is not None
            else (self.leadership.fence, self.leadership.wait_held)
        )
        # On losing the role, its members leave the group until it is held again (``ConsumerRuntime``).
        self.runtime = ConsumerRuntime(
            self.handler, settings, pool, fence=fence, held=held, person_affine=True
        )
        self.pool = pool
        self._stop = asyncio.Event()

    async def run(self) -> None:
        if self.follower is not None:
            if await self.follower.wait_held(self._stop):
                await self.runtime.run()
            return
        async with self.leadership:
            if not await self.leadership.wait_held(self._stop):
                return  # stopped while another consumer or a replay held the view
            sweep = asyncio.create_task(self._sweep())
            try:
                await self.runtime.run()
            finally:
                self._stop.set()
                await sweep

    def stop(self) -> None:
        self._stop.set()
        self.runtime.stop()

    async def _sweep(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await self.leadership.fence(conn)
                    changed = await self.handler.refresh_validity(conn)
                if changed:
                    log.info("consent validity sweep", records_changed=changed)
            except (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError, LeadershipLost) as exc:
                log.warning("consent validity sweep failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=SWEEP_INTERVAL_S)
