"""An HTTP service serves its stream of requests with the collector's streaming setting (``infra.gc``):
at CPython's thresholds the collector's passes were 3.5% of an adapter's CPU under single-event POSTs."""

from __future__ import annotations

import gc

import asyncpg

from infra.config import Settings
from infra.gc import OLDER_THRESHOLD, THRESHOLD
from infra.http import create_app


async def test_an_http_service_serves_with_fewer_collections_and_gives_the_setting_back(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        app = create_app("collector test", description="", settings=settings)
        async with app.router.lifespan_context(app):
            assert gc.get_threshold() == (THRESHOLD, OLDER_THRESHOLD, 10)
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)
