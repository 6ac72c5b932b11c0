"""Log lines carry the trace: every line written while a span is in progress names its ``trace_id`` and
``span_id`` (structlog's lines and the standard library's, uvicorn's access line included), so an
operator goes from a log line to the request's trace and back. Lines outside any span carry neither,
and the ids never bring a personal field with them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import asyncpg
import httpx
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from infra.logging import PERSONAL_KEYS, configure_logging, get_logger
from infra.tracing import export_to, tracer
from producers.adapters.app import welfare_app
from producers.adapters.serve import running
from tests import factories
from tests.helpers import free_port

NAME = "髙橋 花子"


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str], settings: Settings) -> Iterator[pytest.CaptureFixture[str]]:
    try:
        yield capsys
    finally:
        configure_logging(settings.log_level)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = export_to(exporter)
    try:
        yield exporter
    finally:
        processor.shutdown()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


def test_a_line_inside_a_span_names_it_and_one_outside_names_none(
    logged: pytest.CaptureFixture[str], spans: InMemorySpanExporter
) -> None:
    configure_logging("INFO")
    log = get_logger("traced")
    log.info("outside")
    with tracer().start_as_current_span("work") as span:
        log.info("inside", personal={"name": NAME})
        logging.getLogger("asyncpg").warning("stdlib inside", extra={"employer_name": NAME})
    lines = {line["event"]: line for line in _lines(logged)}
    context = span.get_span_context()
    assert [s.context for s in spans.get_finished_spans() if s.name == "work"] == [context]
    for event in ("inside", "stdlib inside"):
        assert lines[event]["trace_id"] == f"{context.trace_id:032x}", lines[event]
        assert lines[event]["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in lines["outside"] and "span_id" not in lines["outside"]
    assert NAME not in orjson.dumps(list(lines.values())).decode()


async def test_a_traced_request_s_log_lines_carry_its_trace_id_and_no_personal_field(
    pool: asyncpg.Pool, settings: Settings, logged: pytest.CaptureFixture[str], spans: InMemorySpanExporter
) -> None:
    """A POST to the welfare adapter refused for a person's name where a birth date belongs (and the name
    in the query string too): uvicorn's access line for it names the trace id of the request's server
    span, and no line names the person."""
    configure_logging("INFO")
    async with pool.acquire() as conn:
        _, token = await add_client(
            conn,
            name="log trace",
            org_kind=OrgKind.AUTHORITY,
            org_code=factories.AUTHORITY,
            roles=frozenset({Role.PUBLISH}),
        )
    referral = factories.referral(factories.person_key())
    referral.data["personal"]["birth_date"] = NAME
    async with (
        running(welfare_app(settings), "127.0.0.1", free_port()) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        response = await http.post("/v1/referral", params={"name": NAME}, json=referral.data)
        assert response.status_code == 422  # (the sender alone sees its own value in the answer)
    (request,) = [
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.SERVER and (s.attributes or {}).get("http.route") == "/v1/referral"
    ]
    assert request.context is not None
    # The hub's lines: the test's own HTTP client (httpx) logs the URL it asked for.
    lines = [line for line in _lines(logged) if line.get("logger") != "httpx"]
    access = [
        line
        for line in lines
        if line.get("logger") == "uvicorn.access" and line.get("path") == "/v1/referral"
    ]
    assert access, [line.get("event") for line in lines]
    assert access[0]["trace_id"] == f"{request.context.trace_id:032x}", access[0]
    assert access[0]["span_id"] == f"{request.context.span_id:016x}"
    text = orjson.dumps(lines).decode()
    assert NAME not in text and referral.data["personal"]["case_number"] not in text, text
    assert not any(
        key in PERSONAL_KEYS and value != "[redacted]" for line in lines for key, value in line.items()
    )
