"""``hub run placement-feed``: the projection consumer plus a builder that, every
``feed_build_interval_s``, builds the due revisions of every closed month (revision 1 after the cutoff,
revision N+1 when events sent later change a figure) and publishes them to the feed topic."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg

from consumers.feed.builder import build_month, months_with_activity, publish_pending
from consumers.feed.projection import FeedProjection
from consumers.runtime import TRANSIENT_ERRORS, ConsumerRuntime
from domain.feed import is_closed
from infra.config import Settings
from infra.logging import get_logger

log = get_logger("feed")


class FeedBuilderService:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def build_due(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        async with self.pool.acquire() as conn:
            months = await months_with_activity(conn)
        built = 0
        for month in months:
            if is_closed(month, self.settings.feed_cutoff_day, now):
                revisions = await build_month(self.pool, self.settings, month, now=now)
                built += len(revisions)
                for r in revisions:
                    # Aggregates only: authority, month, revision and how many figures changed.
                    log.info("feed revision built", authority=r.authority, month=r.month,
                             revision=r.revision, changed=len(r.changes))  # fmt: skip
        await publish_pending(self.pool, self.settings)
        return built

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.build_due()
            except TRANSIENT_ERRORS as exc:
                log.warning("feed build failed, retrying next round", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.feed_build_interval_s)


def services(settings: Settings, pool: asyncpg.Pool) -> list[ConsumerRuntime | FeedBuilderService]:
    return [ConsumerRuntime(FeedProjection(settings), settings, pool), FeedBuilderService(settings, pool)]
