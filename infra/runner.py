"""Running a long-lived service (a consumer, the outbox relay) with clean SIGTERM handling."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import traceback
from collections.abc import Callable
from typing import Protocol

import asyncpg

from infra import health
from infra.config import Settings, get_settings
from infra.db import TRANSIENT_DB_ERRORS, create_pool, migrate
from infra.gc import freeze_what_lives
from infra.logging import configure_logging, get_logger
from infra.signals import exit_on_sigterm, failing
from infra.tracing import setup_tracing

log = get_logger("runner")


class Service(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


async def prepare(settings: Settings) -> asyncpg.Pool:
    """A pool on a migrated database. PostgreSQL starting, stopping or restarting (refused connections,
    ``CannotConnectNowError``, ``AdminShutdownError`` mid-migration ...) is waited out with capped
    backoff, like any transient failure; a real error (wrong password, bad SQL) is raised. Refuses public
    secrets outside a local development stack (``Settings.require_secrets``)."""
    settings.require_secrets()
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


async def serve(build: Callable[[Settings, asyncpg.Pool], list[Service]]) -> int:
    """Run the services ``build`` returns until SIGTERM/SIGINT, then stop them and wait; the exit status.

    0: stopped by a signal. Signals are handled from the first moment: a SIGTERM while the database is
    still unreachable ends the wait and returns normally, as it does in every later state; the handlers
    in place before are put back when this returns (``infra.signals``: SIGTERM then ends the process at
    once, never by Python's default). 1: a service ended on its own (returned, or raised something its
    own retries do not cover), which stops the others: a process whose work ended must not stay alive
    looking healthy, and its process manager restarts it."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    services: list[Service] = []

    def on_signal() -> None:
        stopping.set()
        _stop_all(services)

    def handle(_signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(on_signal)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return await _serve(build, services, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


async def _serve(
    build: Callable[[Settings, asyncpg.Pool], list[Service]], services: list[Service], stopping: asyncio.Event
) -> int:
    settings = get_settings()
    configure_logging(settings.log_level)
    setup_tracing("ittai-hub")  # consumers and relays record spans; exported only where configured
    if settings.metrics_port is not None:  # services without HTTP expose /metrics on their own port
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.http_host)
    preparing = asyncio.create_task(prepare(settings))
    stopped = asyncio.create_task(stopping.wait())
    await asyncio.wait({preparing, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not preparing.done():
        preparing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await preparing
        log.info("stopped before the database was reachable")
        return 0
    pool = preparing.result()
    services.extend(build(settings, pool))
    freeze_what_lives()  # modules, pools, services: out of the collector's sight (infra.gc)
    if stopping.is_set():
        _stop_all(services)
    try:
        return await _run(services, stopping)
    finally:
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except TRANSIENT_DB_ERRORS:  # TimeoutError included
            pool.terminate()


async def _run(services: list[Service], stopping: asyncio.Event) -> int:
    """Run the services until all have ended; 1 if one ended before it was told to stop (it stops the
    others), else 0."""
    running = {asyncio.create_task(s.run(), name=type(s).__name__): s for s in services}
    status = 0
    while running:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            del running[task]
            error = None if task.cancelled() else task.exception()
            if error is None and stopping.is_set():
                continue
            status = 1
            failing(1)
            # The error's type and where it was raised, not its message (it may quote data).
            at = traceback.extract_tb(error.__traceback__)[-1] if error and error.__traceback__ else None
            log.error(
                "service ended on its own, stopping the process",
                service=task.get_name(),
                error=type(error).__name__ if error else "cancelled" if task.cancelled() else "returned",
                at=f"{at.filename}:{at.lineno} in {at.name}" if at else None,
            )
            stopping.set()
            _stop_all(services)
    return status


def _stop_all(services: list[Service]) -> None:
    for service in services:
        service.stop()


def run_forever(build: Callable[[Settings, asyncpg.Pool], list[Service]], *, workers: int = 1) -> None:
    """Serve in this process, or in ``workers`` processes (see ``supervise``)."""
    if workers <= 1:
        _exit_with(asyncio.run(serve(build)))
    else:
        supervise(lambda: _exit_with(asyncio.run(serve(build))), workers)


def _exit_with(status: int) -> None:
    if status:
        raise SystemExit(status)


def supervise(work: Callable[[], None], workers: int) -> None:
    """Run ``work`` in ``workers`` forked processes until SIGTERM/SIGINT, which each of them gets too.

    This is how a consumer scales the way Kafka does: every worker is a member of the same consumer
    group, the broker spreads the topics' partitions over them, and exactly-once holds as it does for
    any set of members (positions in PostgreSQL fence every batch; a rebalance settles batches in
    hand). More workers than partitions leaves the extra ones idle. Worker ``i`` serves metrics on
    ``HUB_METRICS_PORT + i``. A worker that dies stops the others and the supervisor exits 1, so the
    process manager restarts the whole set.
    """
    context = multiprocessing.get_context("fork")  # before any event loop exists in this process
    settings = get_settings()
    configure_logging(settings.log_level)
    base_port = settings.metrics_port
    procs = []
    for i in range(workers):
        proc = context.Process(target=_worker, args=(work, i, base_port), name=f"worker-{i}")
        proc.start()
        procs.append(proc)

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    failed = False
    pending = {p.sentinel: p for p in procs}
    while pending:
        for sentinel in multiprocessing.connection.wait(list(pending)):
            proc = pending.pop(sentinel)  # type: ignore[arg-type]
            proc.join()
            # A worker may end by the SIGTERM forwarded to it (uvicorn re-raises the signal it handled).
            stopped = stopping and proc.exitcode == -signal.SIGTERM
            if proc.exitcode != 0 and not stopped and not failed:
                failed = True
                log.error("worker died, stopping the others", worker=proc.name, exitcode=proc.exitcode)
                forward(signal.SIGTERM, None)
    if failed:
        raise SystemExit(1)


def worker_index() -> int:
    """Inside a worker started by ``supervise``: its index (0 … workers-1); 0 in a process of its own.
    For work only one of the set should do (an adapter's outbox relay)."""
    name = multiprocessing.current_process().name
    return int(name.removeprefix("worker-")) if name.startswith("worker-") else 0


def _worker(work: Callable[[], None], index: int, base_port: int | None) -> None:
    if base_port is not None:
        os.environ["HUB_METRICS_PORT"] = str(base_port + index)
    get_settings.cache_clear()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    exit_on_sigterm()  # as in any service process (infra.signals), whatever the parent had
    work()
