"""Running a long-lived service (a consumer, the outbox relay) with clean SIGTERM handling."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg

from infra.config import Settings, get_settings
from infra.db import create_pool, migrate
from infra.logging import configure_logging, get_logger

log = get_logger("runner")


class Service(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


async def prepare(settings: Settings) -> asyncpg.Pool:
    """A pool on a migrated database; waits for PostgreSQL like any transient failure."""
    backoff = 0.2
    while True:
        try:
            pool = await create_pool(settings)
            break
        except (ConnectionError, TimeoutError, asyncpg.PostgresConnectionError) as exc:
            log.warning("database unavailable, retrying", error=type(exc).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.retry_max_backoff_s)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool


async def serve(build: Callable[[Settings, asyncpg.Pool], list[Service]]) -> None:
    """Run the services ``build`` returns until SIGTERM/SIGINT, then stop them and wait."""
    settings = get_settings()
    configure_logging(settings.log_level)
    if settings.metrics_port is not None:  # services without HTTP expose /metrics on their own port
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.http_host)
    pool = await prepare(settings)
    services = build(settings, pool)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop_all, services)
    try:
        await asyncio.gather(*(s.run() for s in services))
    finally:
        await pool.close()


def _stop_all(services: list[Service]) -> None:
    for service in services:
        service.stop()


def run_forever(build: Callable[[Settings, asyncpg.Pool], list[Service]]) -> None:
    asyncio.run(serve(build))


def run_async(coro: Awaitable[None]) -> None:
    async def _main() -> None:
        await coro

    asyncio.run(_main())
