"""Running a long-lived service (a consumer, the outbox relay) with clean SIGTERM handling."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg

from infra import health
from infra.config import Settings, get_settings
from infra.db import TRANSIENT_DB_ERRORS, create_pool, migrate
from infra.logging import configure_logging, get_logger

log = get_logger("runner")


class Service(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


async def prepare(settings: Settings) -> asyncpg.Pool:
    """A pool on a migrated database. PostgreSQL starting, stopping or restarting (refused connections,
    ``CannotConnectNowError``, ``AdminShutdownError`` mid-migration ...) is waited out with capped
    backoff, like any transient failure; a real error (wrong password, bad SQL) is raised."""
    backoff = 0.2
    while True:
        pool: asyncpg.Pool | None = None
        try:
            pool = await create_pool(settings)
            async with pool.acquire() as conn:
                await migrate(conn)
            health.report("database", True)
            return pool
        except TRANSIENT_DB_ERRORS as exc:
            health.report("database", False, type(exc).__name__)
            log.warning(
                "database unavailable, retrying",
                component="database",
                error=type(exc).__name__,
                backoff_s=round(backoff, 2),
            )
            if pool is not None:
                pool.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.retry_max_backoff_s)


async def serve(build: Callable[[Settings, asyncpg.Pool], list[Service]]) -> None:
    """Run the services ``build`` returns until SIGTERM/SIGINT, then stop them and wait.

    Signals are handled from the first moment: a SIGTERM while the database is still unreachable ends
    the wait and returns normally (exit 0), as it does in every later state."""
    settings = get_settings()
    configure_logging(settings.log_level)
    if settings.metrics_port is not None:  # services without HTTP expose /metrics on their own port
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.http_host)
    stopping = asyncio.Event()
    services: list[Service] = []

    def on_signal() -> None:
        stopping.set()
        _stop_all(services)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    preparing = asyncio.create_task(prepare(settings))
    stopped = asyncio.create_task(stopping.wait())
    await asyncio.wait({preparing, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not preparing.done():
        preparing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await preparing
        log.info("stopped before the database was reachable")
        return
    pool = preparing.result()
    services.extend(build(settings, pool))
    if stopping.is_set():
        _stop_all(services)
    try:
        await asyncio.gather(*(s.run() for s in services))
    finally:
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except TRANSIENT_DB_ERRORS:  # TimeoutError included
            pool.terminate()


def _stop_all(services: list[Service]) -> None:
    for service in services:
        service.stop()


def run_forever(build: Callable[[Settings, asyncpg.Pool], list[Service]]) -> None:
    asyncio.run(serve(build))


def run_async(coro: Awaitable[None]) -> None:
    async def _main() -> None:
        await coro

    asyncio.run(_main())
