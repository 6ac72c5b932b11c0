"""``hub run placement-feed``: the projection consumer plus a builder that, every
``feed_build_interval_s``, builds the due revisions of every closed month (revision 1 after the cutoff,
revision N+1 when events sent later change a figure) and publishes them to the feed topic. A round
reads only the months never built or marked by the consumer since (``months_to_rebuild``).

The builder leads the ``feed-builder`` role (``infra.leadership``): with two ``hub run placement-feed``
one builds and the other waits; each build's transaction is fenced by the leader's epoch."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Executor
from datetime import UTC, datetime

import asyncpg

from consumers.feed.builder import (
    build_month,
    composing_workers,
    months_to_rebuild,
    months_with_activity,
    publish_pending,
)
from consumers.feed.projection import FeedProjection
from consumers.runtime import TRANSIENT_ERRORS, ConsumerRuntime
from domain.feed import is_closed
from infra.config import Settings
from infra.db import AdvisoryLock
from infra.leadership import Leadership
from infra.logging import get_logger

log = get_logger("feed")


class FeedBuilderService:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self._stop = asyncio.Event()
        self.leadership: Leadership | None = None  # set while run() leads; build_due alone is unfenced
        self.executor: Executor | None = None  # set while run() runs: processes composing beside the builder

    def stop(self) -> None:
        self._stop.set()

    async def build_due(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        async with self.pool.acquire() as conn:
            # Incremental: only the months something was sent for since their last build.
            months = await months_to_rebuild(conn, await months_with_activity(conn))
        built = 0
        for month in months:
            if is_closed(month, self.settings.feed_cutoff_day, now):
                fence = self.leadership.fence if self.leadership is not None else None
                revisions = await build_month(
                    self.pool, self.settings, month, now=now, fence=fence, executor=self.executor
                )
                built += len(revisions)
                for r in revisions:
                    # Aggregates only: authority, month, revision and how many figures changed.
                    log.info("feed revision built", authority=r.authority, month=r.month,
                             revision=r.revision, changed=len(r.changes))  # fmt: skip
        await publish_pending(self.pool, self.settings, self.executor)
        return built

    async def run(self) -> None:
        async with Leadership(self.settings, "feed-builder", AdvisoryLock.FEED_BUILDER_ROLE) as leadership:
            self.leadership = leadership
            with composing_workers(self.settings) as self.executor:
                while await leadership.wait_held(self._stop) and not self._stop.is_set():
                    try:
                        await self.build_due()
                    except TRANSIENT_ERRORS as exc:  # LeadershipLost included: wait until leading again
                        log.warning("feed build failed, retrying next round", error=type(exc).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), timeout=self.settings.feed_build_interval_s)
            self.executor = None
            self.leadership = None


def services(settings: Settings, pool: asyncpg.Pool) -> list[ConsumerRuntime | FeedBuilderService]:
    return [ConsumerRuntime(FeedProjection(settings), settings, pool), FeedBuilderService(settings, pool)]
