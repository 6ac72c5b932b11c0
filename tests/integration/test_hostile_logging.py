"""Log redaction is a last guard, so it must hold wherever a personal value could hide: nested under
another key, in a list, or in a standard-library logger's ``extra`` (uvicorn, aiokafka, asyncpg…)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import pytest

from infra.config import Settings
from infra.logging import configure_logging, get_logger
from tests.helpers import free_port

NAME = "髙橋 花子"


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str], settings: Settings) -> Iterator[pytest.CaptureFixture[str]]:
    """Logging bound to the test's captured stderr (configured in the test itself: pytest swaps the
    stream between setup and call), and put back afterwards."""
    try:
        yield capsys
    finally:
        configure_logging(settings.log_level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    err = capsys.readouterr().err
    return [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_nested_personal_keys_are_redacted(logged: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    get_logger("hostile").warning(
        "rejected",
        body={"personal": {"name": NAME}, "rows": [{"employer_name": NAME}, {"case_number": "SJ-1"}]},
        name=NAME,
    )
    lines = _lines(logged)
    assert lines and lines[-1]["event"] == "rejected"
    text = orjson.dumps(lines).decode()
    assert NAME not in text and "SJ-1" not in text, text
    assert "[redacted]" in text


def test_standard_library_loggers_are_redacted(logged: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    logging.getLogger("asyncpg").warning(
        "request failed", extra={"employer_name": NAME, "detail": {"birth_date": "1988-06-01"}}
    )
    lines = _lines(logged)
    assert any(line.get("event") == "request failed" for line in lines), lines
    text = orjson.dumps(lines).decode()
    assert NAME not in text and "1988-06-01" not in text, text


def _start_console(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "run", "console"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_uvicorn_lines_go_through_the_hub_and_never_carry_query_strings(pool: asyncpg.Pool) -> None:
    """A service as operators run it (``hub run console``, at INFO): every line uvicorn writes is the
    hub's JSON (so the redaction guard sees it), and an access line names the path without its query
    string — a query may carry what a person typed (a name searched for, a token)."""
    port = free_port()
    env = {**os.environ, "HUB_LOG_LEVEL": "INFO", "HUB_CONSOLE_PORT": str(port)}
    proc = _start_console(env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "the console did not start"
                await asyncio.sleep(0.2)
            login = await http.get("/login", params={"next": "/", "name": NAME})
            assert login.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    text = out.decode() + err.decode()
    assert NAME not in text and quote(NAME) not in text and "name=" not in text, text[-3000:]
    records = []
    for line in err.decode().splitlines():
        assert line.startswith("{"), f"a line that bypassed the hub's logging: {line!r}"
        records.append(orjson.loads(line))
    access = [r for r in records if r.get("logger") == "uvicorn.access" and r.get("path") == "/login"]
    assert access, [r.get("event") for r in records]
    assert access[0]["method"] == "GET" and access[0]["status"] == 200 and "?" not in access[0]["event"]
