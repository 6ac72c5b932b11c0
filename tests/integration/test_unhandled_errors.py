"""An error nobody handled, in any app the hub serves (here the console's, over real HTTP): the client gets a
fixed problem+json 500 that echoes nothing, and the log (every logger, uvicorn's included) names the error's
type, the route's template and the trace, never its message or its traceback's text. uvicorn logged both
("Exception in ASGI application"), past the redaction guard, which sees keys, not a message's words."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from fastapi import Request

from hub.console.app import create_console_app, operator
from infra.config import Settings
from infra.logging import configure_logging, get_logger
from tests.servers import serving

NAME = "髙橋 花子"  # a person's name, as an exception's message or a row's key may quote one
# …as a line may spell it: itself, or escaped (the hub's JSON lines are ASCII).
SPELLINGS = (NAME, json.dumps(NAME)[1:-1])


@pytest.fixture
def logged(capfd: pytest.CaptureFixture[str], settings: Settings) -> Iterator[pytest.CaptureFixture[str]]:
    """Everything the served process writes to its stderr (forked: the file descriptor is captured)."""
    try:
        yield capfd
    finally:
        configure_logging(settings.log_level)


async def _quoting_value(request: Request) -> None:
    raise ValueError(f"no operator named {NAME}")


async def _duplicate_key(request: Request) -> None:
    """A real unique violation, whose DETAIL quotes the key's value: ``Key (k)=(…) already exists``."""
    async with request.app.state.pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE duplicated (k text PRIMARY KEY)")
        await conn.execute("INSERT INTO duplicated VALUES ($1), ($1)", NAME)


@pytest.mark.parametrize(
    ("raising", "error"), [(_quoting_value, "ValueError"), (_duplicate_key, "UniqueViolationError")]
)
def test_an_unhandled_error_is_a_fixed_500_and_a_line_without_its_text(
    pool: object, settings: Settings, logged: pytest.CaptureFixture[str], raising: object, error: str
) -> None:
    configure_logging("INFO")
    app = create_console_app(settings, sample=False)
    app.dependency_overrides[operator] = raising
    with serving(app) as url:
        answer = httpx.get(f"{url}/api/snapshot", timeout=30)
    out, err = logged.readouterr()
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {"type": "about:blank", "title": "Internal Server Error", "status": 500}
    text = out + err
    assert not any(spelled in text for spelled in SPELLINGS), text[-3000:]
    assert "already exists" not in text and "Traceback" not in text, text[-3000:]
    assert "no operator named" not in text and "Exception in ASGI application" not in text, text[-3000:]
    lines = [line for line in err.splitlines() if '"unhandled error"' in line]
    assert len(lines) == 1, err[-3000:]
    assert f'"error": "{error}"' in lines[0] and '"route": "/api/snapshot"' in lines[0], lines
    assert '"trace_id"' in lines[0], lines


async def test_an_error_logged_with_its_traceback_or_by_the_event_loop_keeps_its_text_out(
    pool: asyncpg.Pool, logged: pytest.CaptureFixture[str]
) -> None:
    """A PostgreSQL or Kafka client's error logged with ``exc_info`` (by any logger), or by the event loop
    (an error in a callback, a task nobody awaited): its type and frames, never its text."""
    configure_logging("INFO")
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE duplicated (k text PRIMARY KEY)")
        try:
            await conn.execute("INSERT INTO duplicated VALUES ($1), ($1)", NAME)
        except asyncpg.UniqueViolationError as exc:
            error = exc
    logging.getLogger("aiokafka").error("callback failed", exc_info=error)
    get_logger("relay").error("batch failed", exc_info=error)
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(error)
    asyncio.get_running_loop().call_exception_handler(
        {"message": "Task exception was never retrieved", "exception": error, "future": failed}
    )
    failed.exception()
    called = asyncio.Event()
    # The event loop names a failed callback with its arguments.
    asyncio.get_running_loop().call_soon(_callback, NAME, called)
    await called.wait()
    await asyncio.sleep(0)  # the loop reports the callback's error as it returns
    err = logged.readouterr().err
    assert not any(spelled in err for spelled in SPELLINGS), err
    assert "already exists" not in err and "duplicate key" not in err, err
    assert err.count("asyncpg.exceptions.UniqueViolationError at ") == 3, err
    assert "Task exception was never retrieved" in err, err
    assert '"event": "Exception in callback _callback"' in err and "builtins.ValueError at " in err, err


def _callback(value: str, called: asyncio.Event) -> None:
    called.set()
    raise ValueError(value)
