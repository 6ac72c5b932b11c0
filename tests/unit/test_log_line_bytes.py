"""The bytes a log line writes, pinned: uvicorn's access line (the one written per request), a standard
library line with nested personal fields and a structlog line, each exactly as the hub writes them today
but for the timestamp's value. A cheaper path to the same lines (``infra.logging``'s optimisations) must
keep every byte: key order, spacing, escapes, the route instead of the path as sent, the trace ids."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from infra.config import Settings
from infra.logging import ACCESS_ROUTE, configure_logging, get_logger

NAME = "髙橋 花子"
TIMESTAMP = re.compile(r'"timestamp": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')
SPAN = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=False,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str], settings: Settings) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging("INFO")
    try:
        yield capsys
    finally:
        configure_logging(settings.log_level)


def _written(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert err.endswith("\n"), err
    return [TIMESTAMP.sub('"timestamp": "T"', line) for line in err.splitlines()]


def _access(method: str, target: str, status: int) -> None:
    # As uvicorn's httptools/h11 protocols call it: client, method, path with query, HTTP version, status.
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", method, target, "1.1", status
    )


def test_the_access_line_inside_a_request_span_is_these_bytes(lines: pytest.CaptureFixture[str]) -> None:
    token = ACCESS_ROUTE.set("/persons/{person_key}")
    try:
        with trace.use_span(NonRecordingSpan(SPAN)):
            _access("GET", f"/persons/{NAME}?q={NAME}", 200)
    finally:
        ACCESS_ROUTE.reset(token)
    assert _written(lines) == [
        '{"event": "GET /persons/{person_key} 200", "level": "info", "timestamp": "T", '
        '"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331", '
        '"logger": "uvicorn.access", "client": "127.0.0.1:50000", "method": "GET", '
        '"path": "/persons/{person_key}", "status": 200, "http": "1.1"}'
    ]


def test_the_access_line_outside_a_route_and_a_span_is_these_bytes(lines: pytest.CaptureFixture[str]) -> None:
    _access("POST", "/nowhere?token=secret", 404)
    logging.getLogger("uvicorn.access").info("something else %s", NAME)
    assert _written(lines) == [
        '{"event": "POST /nowhere 404", "level": "info", "timestamp": "T", "logger": "uvicorn.access", '
        '"client": "127.0.0.1:50000", "method": "POST", "path": "/nowhere", "status": 404, "http": "1.1"}',
        '{"event": "access", "level": "info", "timestamp": "T", "logger": "uvicorn.access"}',
    ]


def test_a_standard_library_and_a_structlog_line_are_these_bytes(lines: pytest.CaptureFixture[str]) -> None:
    nested = {"rows": [{"employer_name": NAME, "n": 1}, ("x", {"phone": "0"})], "ok": True, "f": 1.5}
    logging.getLogger("asyncpg").warning("stdlib %s", "é", extra={"detail": nested, "email": NAME, "k": None})
    get_logger("hub.x").info("structlog é", detail=nested, email=NAME, count=3)
    assert _written(lines) == [
        '{"event": "stdlib \\u00e9", "level": "warning", "timestamp": "T", "logger": "asyncpg", '
        '"detail": {"rows": [{"employer_name": "[redacted]", "n": 1}, ["x", {"phone": "[redacted]"}]], '
        '"ok": true, "f": 1.5}, "email": "[redacted]", "k": null}',
        '{"detail": {"rows": [{"employer_name": "[redacted]", "n": 1}, ["x", {"phone": "[redacted]"}]], '
        '"ok": true, "f": 1.5}, "email": "[redacted]", "count": 3, "event": "structlog \\u00e9", '
        '"level": "info", "timestamp": "T"}',
    ]
