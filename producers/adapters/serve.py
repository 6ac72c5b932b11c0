"""Running an adapter: as a process (``hub run …-adapter [--workers N]``) or in-process as an asyncio task
(demo, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from infra.http import serve
from infra.http import server as http_server
from infra.runner import supervise, worker_index


@asynccontextmanager
async def running(app: FastAPI, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app`` on host:port inside this event loop; yields the base URL once it accepts requests."""
    server = http_server(app, host, port)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # the host owns signals
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the reason it could not start
            raise RuntimeError(f"adapter on {host}:{port} stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task


def run(app: FastAPI, host: str, port: int) -> None:
    serve(app, host, port)


def run_workers(make_app: Callable[[bool], FastAPI], host: str, port: int, workers: int) -> None:
    """Serve ``make_app(runs_relay)`` in ``workers`` processes sharing one listening socket, bound here
    before they are forked (the kernel hands each connection to one of them, as uvicorn's and gunicorn's
    own workers do). Only worker 0 runs the outbox relay: one relay publishes, in outbox order, and the
    others would only wait on its advisory lock. Each worker is a whole adapter (its own pool, group
    committer and credential cache): a request is handled by one process from start to 202, so the
    acceptance path is the same as with one process. A worker that dies stops the set (``supervise``)."""
    listener = socket.create_server((host, port), backlog=2048, reuse_port=False)
    listener.set_inheritable(True)

    def work() -> None:
        app = make_app(worker_index() == 0)
        http_server(app, host, port).run(sockets=[listener])

    try:
        supervise(work, workers)
    finally:
        listener.close()
