"""Tracing across the hops, on the real stack: the W3C trace context of a POST to the welfare adapter
travels in the CloudEvents ``traceparent`` extension (``ce_traceparent``) through the outbox row, the
relay and Kafka to the shared-view consumer, whose batch-commit span links it to the event it stored.
Spans are collected with the SDK's in-memory exporter, through the same allow-list as OTLP export.
A malformed ``ce_traceparent`` from a rogue producer is dropped with a logged reason: the event is
applied, untraced, never dead-lettered."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator, Sequence

import asyncpg
import httpx
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from structlog.testing import capture_logs

from consumers.catchup import end_offsets, run_until
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import TRACEPARENT_HEADER, TRACESTATE_HEADER, Family, encode
from domain.trace_context import tracestate_members
from infra.auth import OrgKind, Role, add_client
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from infra.kafka import client_options
from infra.tracing import export_to, tracer
from producers.adapters.app import welfare_app
from producers.adapters.serve import running
from producers.adapters.sites import add_sites
from producers.outbox import OutboxRelay, accept_sealed
from producers.submission import to_event
from tests import factories
from tests.browser.console_server import RunningConsole
from tests.browser.flows import Picky, consume_all, publish
from tests.helpers import free_port, read_topic, wait_for


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = export_to(exporter)  # through the allow-list, as OTLP export would be
    try:
        yield exporter
    finally:
        processor.shutdown()


async def _catch_up_shared_view(pool: asyncpg.Pool, settings: Settings) -> None:
    handler = SharedViewHandler(settings)
    ends = await end_offsets(settings, handler.topics)
    await run_until(ConsumerRuntime(handler, settings, pool), pool, ends, timeout_s=120)


def _trace_of(traceparent: str | bytes) -> str:
    text = traceparent.decode() if isinstance(traceparent, bytes) else traceparent
    return text.split("-")[1]


def _linked(spans: Sequence[ReadableSpan], name: str, trace_id: int) -> list[str]:
    """The events that spans named ``name`` link into trace ``trace_id`` (``traced_event_ids`` names
    each link's event, in order)."""
    return [
        event_id
        for span in spans
        if span.name == name
        for link, event_id in zip(span.links, (span.attributes or {})["traced_event_ids"], strict=True)
        if link.context.trace_id == trace_id
    ]


async def test_a_trace_id_followed_from_a_post_to_the_welfare_adapter_to_the_shared_view_row(
    pool: asyncpg.Pool, isolated: Settings, spans: InMemorySpanExporter
) -> None:
    settings = isolated
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "新宿")])  # the referral's site (P2)
        _, token = await add_client(
            conn,
            name="trace shinjuku",
            org_kind=OrgKind.AUTHORITY,
            org_code=factories.AUTHORITY,
            roles=frozenset({Role.PUBLISH}),
        )
    referral = factories.referral(factories.person_key())
    async with (
        running(welfare_app(settings), "127.0.0.1", free_port()) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        # A client's own trace context is not taken: the hub's trace ids are its own.
        chosen = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
        response = await http.post("/v1/referral", json=referral.data, headers={"traceparent": chosen})
        assert response.status_code == 202, response.text
        event_id = response.json()["event_id"]
        async with pool.acquire() as conn:  # the adapter's relay publishes it
            row = await wait_for(
                lambda: conn.fetchrow(
                    "SELECT id, headers, id NOT IN (SELECT id FROM outbox_pending) AS published FROM outbox "
                    "WHERE event_id = $1",
                    event_id,
                ),
                until=lambda r: r is not None and r["published"],
                timeout_s=120,
            )

    # 1. The request: the adapter's server span for the POST.
    (request,) = [
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.SERVER and (s.attributes or {}).get("http.route") == "/v1/referral"
    ]
    assert request.context is not None
    trace_id = request.context.trace_id
    assert f"{trace_id:032x}" != "c" * 32 and request.parent is None
    # 2. The outbox row stores the request's trace context with the event.
    assert _trace_of(row["headers"][TRACEPARENT_HEADER]) == f"{trace_id:032x}"
    # 3. The relay's publishing span links to it.
    # (A batch retried after a broker or database hiccup links it again: "in", not "==".)
    assert event_id in _linked(spans.get_finished_spans(), "outbox publish", trace_id)
    # 4. Kafka: the record carries it as ce_traceparent.
    (record,) = [
        r
        for r in await read_topic(settings, settings.topic(Family.REFERRAL))
        if dict(r.headers)["ce_id"] == event_id.encode()
    ]
    assert _trace_of(dict(record.headers)[TRACEPARENT_HEADER]) == f"{trace_id:032x}"

    # 5. The shared view: its batch-commit span links the event it stored to the request's trace.
    await _catch_up_shared_view(pool, settings)
    assert await pool.fetchval("SELECT count(*) FROM sv_events WHERE event_id = $1", event_id) == 1
    assert event_id in _linked(spans.get_finished_spans(), "shared-view batch commit", trace_id)

    # No personal data in any span that could leave the process.
    exported = orjson.dumps(
        [
            [s.name, dict(s.attributes or {}), [dict(link.attributes or {}) for link in s.links]]
            for s in spans.get_finished_spans()
        ]
    ).decode()
    assert referral.data["personal"]["case_number"] not in exported


async def test_a_csv_import_s_events_carry_its_request_s_trace(
    pool: asyncpg.Pool, isolated: Settings, spans: InMemorySpanExporter
) -> None:
    settings = isolated
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "新宿")])
        _, token = await add_client(
            conn,
            name="trace csv shinjuku",
            org_kind=OrgKind.AUTHORITY,
            org_code=factories.AUTHORITY,
            roles=frozenset({Role.PUBLISH}),
        )
    rows = [factories.referral(factories.person_key()).data for _ in range(3)]
    async with (
        running(welfare_app(settings), "127.0.0.1", free_port()) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        content = write_csv("referral", rows, japanese=True)
        response = await http.post("/v1/referral/csv", files={"file": ("r.csv", content, "text/csv")})
        assert response.status_code == 202 and response.json()["accepted"] == 3, response.text
    (request,) = [
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.SERVER and (s.attributes or {}).get("http.route") == "/v1/referral/csv"
    ]
    assert request.context is not None
    stored = await pool.fetch(
        "SELECT headers FROM outbox WHERE key = ANY($1::bytea[])", [r["person_key"].encode() for r in rows]
    )
    assert [_trace_of(r["headers"][TRACEPARENT_HEADER]) for r in stored] == [
        f"{request.context.trace_id:032x}"
    ] * 3


MALFORMED: dict[str, list[bytes]] = {
    "not 55 bytes": [b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01-x"],
    "a name": ["髙橋 花子".encode()],
    "uppercase hex": [b"00-" + b"A" * 32 + b"-" + b"b" * 16 + b"-01"],
    "another version": [b"01-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"],
    "not UTF-8": [b"\xff" * 55],
    "zero trace id": [b"00-" + b"0" * 32 + b"-" + b"b" * 16 + b"-01"],
    "zero parent id": [b"00-" + b"a" * 32 + b"-" + b"0" * 16 + b"-01"],
    "repeated": [b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"] * 2,
}
REASONS = {
    "header ce_traceparent: not 55 bytes (W3C traceparent version 00)",
    "header ce_traceparent: does not match 00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>",
    "header ce_traceparent: trace id is all zeros",
    "header ce_traceparent: parent id is all zeros",
    "header ce_traceparent: repeated (W3C: more than one makes it invalid)",
}


async def test_a_malformed_traceparent_is_dropped_with_a_reason_and_the_event_applied_untraced(
    pool: asyncpg.Pool, isolated: Settings, spans: InMemorySpanExporter
) -> None:
    settings = isolated
    people: list[str] = []
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for values in MALFORMED.values():
            pk = factories.person_key()
            people.append(pk)
            key, headers, value = encode(to_event(factories.consent(pk), None))
            headers += [(TRACEPARENT_HEADER, v) for v in values]
            await producer.send_and_wait(settings.topic(Family.CONSENT), value, key=key, headers=headers)
    finally:
        await producer.stop()

    with capture_logs() as logs:
        await _catch_up_shared_view(pool, settings)

    applied = await pool.fetchval(
        "SELECT count(DISTINCT person_key) FROM sv_consents WHERE person_key = ANY($1::text[])", people
    )
    assert applied == len(people)  # every event applied: none refused for its trace context
    letters = await pool.fetchval(
        "SELECT count(*) FROM dead_letters WHERE source_topic = $1", settings.topic(Family.CONSENT)
    )
    assert letters == 0
    dropped = [line for line in logs if line["event"] == "trace context dropped"]
    # One line per batch; a batch fetched again after a rebalance is decoded, and logged, again.
    assert dropped and sum(int(line["events"]) for line in dropped) >= len(people)
    assert {reason for line in dropped for reason in line["reasons"]} == REASONS
    text = repr(logs)
    assert "髙橋" not in text and "a" * 32 not in text and "A" * 32 not in text  # never the value
    # Untraced: no commit span links into the malformed contexts.
    traces = {int("a" * 32, 16), int("A" * 32, 16)}
    assert not [s for s in spans.get_finished_spans() for link in s.links if link.context.trace_id in traces]


async def test_the_console_shows_a_dead_letters_trace_id(
    ready: asyncpg.Pool, console: RunningConsole, console_settings: Settings
) -> None:
    """An event accepted inside a request's span and dead-lettered by a consumer: the operator finds its
    trace id on the dead-letter page (and nothing of the person)."""
    pool, s = ready, console_settings
    async with pool.acquire() as conn:
        _, operator = await add_client(
            conn,
            name="trace operator",
            org_kind=OrgKind.OPERATOR,
            org_code="*",
            roles=frozenset({Role.OPERATE}),
        )
    sub = factories.registration(factories.person_key())
    with tracer().start_as_current_span("POST /v1/registration") as request:  # stands for the request
        await publish(s, pool, [sub], origin="trace-test")
    trace_id = f"{request.get_span_context().trace_id:032x}"
    await consume_all(ConsumerRuntime(Picky(s, {sub.event_id: "site not yet configured"}), s, pool), pool, s)
    async with httpx.AsyncClient(base_url=console.url) as http:
        await http.post("/login", data={"token": operator})
        page = await http.get("/dead-letters")
    assert page.status_code == 200
    row = page.text.split('data-letter="', 1)[1].split("</tr>", 1)[0]
    assert "site not yet configured" in row
    assert f'<code class="trace-id">{trace_id}</code>' in row
    assert sub.data["personal"]["name"] not in page.text


_PROCESS = """
from infra.tracing import setup_tracing, tracer

provider = setup_tracing("otlp-test")
print(len(provider._active_span_processor._span_processors))  # exporting processors installed
with tracer().start_as_current_span("probe") as span:
    span.set_attribute("rows", 3)
    span.set_attribute("http.target", "/v1/referral?name=Tanaka")
provider.shutdown()  # flushes the batch
"""


async def _hub_process(env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PROCESS, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode().strip()


async def test_spans_are_exported_over_otlp_only_where_the_endpoint_is_set() -> None:
    received: list[ExportTraceServiceRequest] = []

    async def collector(request: web.Request) -> web.Response:
        received.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collector)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        assert await _hub_process(env) == "0"  # off by default: no exporter at all
        assert received == []
        assert await _hub_process(env | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}) == "1"
    finally:
        await runner.cleanup()
    (span,) = [
        span for req in received for rs in req.resource_spans for ss in rs.scope_spans for span in ss.spans
    ]
    assert span.name == "probe"
    assert {a.key: a.value.int_value for a in span.attributes} == {"rows": 3}  # allow-listed
    (resource,) = [rs.resource for req in received for rs in req.resource_spans]
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "otlp-test"


async def test_the_console_shows_a_slow_events_trace_id(
    ready: asyncpg.Pool, console: RunningConsole, console_settings: Settings
) -> None:
    """Events accepted inside a request's span and applied by the shared view: the consent page's slowest
    events name their trace id (ids, family and milliseconds only)."""
    pool, s = ready, console_settings
    async with pool.acquire() as conn:
        _, operator = await add_client(
            conn,
            name="trace slow operator",
            org_kind=OrgKind.OPERATOR,
            org_code="*",
            roles=frozenset({Role.OPERATE}),
        )
    pk = factories.person_key()
    subs = [factories.registration(pk), factories.consent(pk)]
    with tracer().start_as_current_span("POST /v1/registration") as request:  # stands for the request
        await publish(s, pool, subs, origin="trace-test")
    trace_id = f"{request.get_span_context().trace_id:032x}"
    await _catch_up_shared_view(pool, s)
    registration = subs[0].event_id  # (consents are kept apart from the view's events)
    async with httpx.AsyncClient(base_url=console.url) as http:
        await http.post("/login", data={"token": operator})
        page = await wait_for(  # the page shows the console's latest sample (every 0.5 s here)
            lambda: http.get("/consent"), until=lambda p: f'data-event="{registration}"' in p.text
        )
    assert page.status_code == 200
    row = page.text.split(f'data-event="{registration}"', 1)[1].split("</tr>", 1)[0]
    assert f'<code class="trace-id">{trace_id}</code>' in row and "registration" in row
    assert pk not in page.text and subs[0].data["personal"]["name"] not in page.text


async def test_a_tracestate_travels_beside_its_traceparent_and_a_malformed_one_is_dropped(
    pool: asyncpg.Pool, isolated: Settings, spans: InMemorySpanExporter
) -> None:
    """An event accepted in a span whose trace carries vendors' state (a sampler's, a vendor
    processor's): the W3C ``tracestate`` goes with the ``traceparent`` through the outbox row, the relay
    and Kafka (``ce_tracestate``) to the consumer's commit span's link. A rogue producer's malformed
    ``ce_tracestate`` is dropped with the rule it broke (the event applied, its trace kept), never
    echoed."""
    settings = isolated
    state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    parent = SpanContext(
        int("e" * 32, 16), int("f" * 16, 16), is_remote=True, trace_flags=TraceFlags(1),
        trace_state=TraceState(tracestate_members(state)),
    )  # fmt: skip
    traced = to_event(factories.consent(factories.person_key()), None)
    with tracer().start_as_current_span("accept", context=set_span_in_context(NonRecordingSpan(parent))):
        async with pool.acquire() as conn:
            verdicts = await accept_sealed(
                conn, [[traced]], {}, origin="test-tracestate", namespace=settings.topic_namespace
            )
    assert verdicts.kept == {0}
    row = await pool.fetchrow("SELECT headers FROM outbox WHERE event_id = $1", traced.id)
    assert (
        row["headers"][TRACESTATE_HEADER] == state
        and _trace_of(row["headers"][TRACEPARENT_HEADER]) == "e" * 32
    )
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()
    (record,) = [
        r
        for r in await read_topic(settings, settings.topic(Family.CONSENT))
        if dict(r.headers)["ce_id"] == traced.id.encode()
    ]
    assert dict(record.headers)[TRACESTATE_HEADER] == state.encode()

    rogue = to_event(factories.consent(factories.person_key()), None)
    key, headers, value = encode(rogue)
    headers += [
        (TRACEPARENT_HEADER, f"00-{'d' * 32}-{'b' * 16}-01".encode()),
        (TRACESTATE_HEADER, "髙橋=花子".encode()),
    ]
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(Family.CONSENT), value, key=key, headers=headers)
    finally:
        await producer.stop()
    with capture_logs() as logs:
        await _catch_up_shared_view(pool, settings)

    applied = await pool.fetchval(
        "SELECT count(DISTINCT person_key) FROM sv_consents WHERE person_key = ANY($1::text[])",
        [traced.subject, rogue.subject],
    )
    assert applied == 2
    links = {
        event_id: link.context
        for s in spans.get_finished_spans()
        if s.name == "shared-view batch commit"
        for link, event_id in zip(s.links, (s.attributes or {})["traced_event_ids"], strict=True)
    }
    assert links[traced.id].trace_state.to_header() == state and links[traced.id].trace_id == int(
        "e" * 32, 16
    )
    assert links[rogue.id].trace_id == int("d" * 32, 16) and not links[rogue.id].trace_state
    dropped = [line for line in logs if line["event"] == "trace context dropped"]
    assert {r for line in dropped for r in line["reasons"]} == {
        f"header {TRACESTATE_HEADER}: list-member 1: not key=value in W3C tracestate characters"
    }
    assert "髙橋" not in repr(logs) and "花子" not in repr(logs)
