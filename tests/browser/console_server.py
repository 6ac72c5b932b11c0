"""A real console or portal (uvicorn on a free port, in a thread with its own event loop) for their tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from hub.console.app import create_console_app
from hub.portal.app import create_portal_app
from infra.config import Settings
from infra.http import server as http_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningConsole:
    url: str
    app: FastAPI


@contextmanager
def running_console(settings: Settings, *, sample: bool = False) -> Iterator[RunningConsole]:
    with serving(create_console_app(settings, sample=sample)) as running:
        yield running


@contextmanager
def running_portal(settings: Settings) -> Iterator[RunningConsole]:
    with serving(create_portal_app(settings)) as running:
        yield running


@contextmanager
def serving(app: FastAPI) -> Iterator[RunningConsole]:
    port = free_port()
    server = http_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, name="http-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield RunningConsole(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
