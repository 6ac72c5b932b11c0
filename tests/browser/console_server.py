"""A real console or portal (uvicorn on a free port, in a process of its own: ``tests.servers``) for their
tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from hub.console.app import create_console_app
from hub.portal.app import create_portal_app
from infra.config import Settings
from tests.servers import serving


@dataclass
class RunningConsole:
    url: str
    app: FastAPI  # as built before it was served: its state is the serving process's, not this one's


@contextmanager
def running_console(settings: Settings, *, sample: bool = False) -> Iterator[RunningConsole]:
    app = create_console_app(settings, sample=sample)
    with serving(app) as url:
        yield RunningConsole(url, app)


@contextmanager
def running_portal(settings: Settings) -> Iterator[RunningConsole]:
    app = create_portal_app(settings)
    with serving(app) as url:
        yield RunningConsole(url, app)
