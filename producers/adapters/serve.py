"""Running an adapter: as a process (``hub run …-adapter``) or in-process as an asyncio task (demo, tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from infra.http import serve
from infra.http import server as http_server


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
