"""The trace context without a broker: the envelope carries a well-formed one (``traceparent`` and its
``tracestate``) and drops any other with a reason that never quotes it; what leaves the process is
allow-listed."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from contracts.envelope import TRACEPARENT_HEADER, TRACESTATE_HEADER, decode, encode, traceparent_of
from domain.monitoring import HIDDEN, safe_headers
from domain.trace_context import tracestate_refusal
from infra.tracing import (
    _Redacting,
    batch_span,
    current_traceparent,
    current_tracestate,
    export_to,
    trace_id,
    tracer,
)
from producers.submission import to_event
from tests import factories

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BAD = {
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n": "not 55 bytes",
    b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01": "does not match",
    b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "does not match",
    b"00-00000000000000000000000000000000-00f067aa0ba902b7-01": "trace id is all zeros",
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01": "parent id is all zeros",
    "髙橋 花子 1988-06-01 090-1234-5678 xxxxxxxxxxxxxxxxxxxxxxxx".encode()[:55]: "does not match",
    b"\xff" * 55: "does not match",
    b"": "not 55 bytes",
}

RULES = {
    "not 55 bytes": "not 55 bytes (W3C traceparent version 00)",
    "does not match": "does not match 00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>",
    "trace id is all zeros": "trace id is all zeros",
    "parent id is all zeros": "parent id is all zeros",
}


def _record(traceparents: list[bytes]) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    key, headers, value = encode(to_event(factories.consent(factories.person_key()), None))
    return key, headers + [(TRACEPARENT_HEADER, tp) for tp in traceparents], value


@pytest.mark.parametrize("fast", [False, True])
def test_the_envelope_carries_a_traceparent_as_ce_traceparent(fast: bool) -> None:
    event = to_event(factories.consent(factories.person_key()), None)._replace(traceparent=TP)
    key, headers, value = encode(event)
    assert (TRACEPARENT_HEADER, TP.encode()) in headers
    assert decode(key, headers, value, fast=fast).traceparent == TP
    untraced = encode(event._replace(traceparent=None))[1]
    assert TRACEPARENT_HEADER not in dict(untraced)


@pytest.mark.parametrize(("raw", "rule"), BAD.items())
def test_a_malformed_traceparent_is_dropped_with_its_rule_never_its_value(raw: bytes, rule: str) -> None:
    key, headers, value = _record([raw])
    dropped: list[str] = []
    assert decode(key, headers, value, fast=True, dropped=dropped).traceparent is None  # the event is fine
    value_seen, reason = traceparent_of(headers)
    assert value_seen is None and dropped == [reason]
    # One of the fixed wordings: nothing of the value is in it.
    assert reason == f"header {TRACEPARENT_HEADER}: {RULES[rule]}"
    assert trace_id(raw.decode(errors="replace")) is None


def test_a_repeated_traceparent_is_dropped() -> None:
    key, headers, value = _record([TP.encode(), TP.encode()])
    assert decode(key, headers, value).traceparent is None
    assert traceparent_of(headers) == (
        None,
        f"header {TRACEPARENT_HEADER}: repeated (W3C: more than one makes it invalid)",
    )


def test_trace_id_and_the_console_show_only_a_well_formed_context() -> None:
    assert trace_id(TP) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id(None) is None
    assert safe_headers([(TRACEPARENT_HEADER, TP.encode())]) == {TRACEPARENT_HEADER: TP}
    assert safe_headers([(TRACEPARENT_HEADER, "髙橋 花子".encode())]) == {TRACEPARENT_HEADER: HIDDEN}


def test_what_leaves_the_process_is_allow_listed() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(_Redacting(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("test")
    with (
        pytest.raises(ValueError),
        tracer.start_as_current_span("POST /v1/referral", kind=SpanKind.SERVER) as span,
    ):
        span.set_attribute("http.route", "/v1/referral")
        span.set_attribute("http.target", "/v1/referral?name=髙橋")
        span.set_attribute("http.url", "http://hub/v1/referral?name=髙橋")
        span.set_attribute("traced_event_ids", ("e" * 32,))
        ctx = span.get_span_context()
        assert (
            current_traceparent() == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        )
        raise ValueError("birth_date 1988-06-01 is not valid for 髙橋 花子")
    assert current_traceparent() is None  # outside any span
    (finished,) = exporter.get_finished_spans()
    assert dict(finished.attributes or {}) == {"http.route": "/v1/referral", "traced_event_ids": ("e" * 32,)}
    assert [dict(e.attributes or {}) for e in finished.events] == [{"exception.type": "ValueError"}]
    assert not finished.status.description or "髙橋" not in finished.status.description
    assert "髙橋" not in repr(finished.to_json()) and "1988" not in finished.to_json()


def test_a_batch_span_links_only_well_formed_contexts() -> None:
    """An outbox row's headers may come from a redriven dead letter: a malformed context is skipped, and
    never stops the relay or the consumer."""
    exporter = InMemorySpanExporter()
    processor = export_to(exporter)
    sneaky = "00-+" + "1" * 31 + "-" + "2" * 16 + "-01"  # 55 characters int() would read
    unsampled = TP[:-2] + "00"
    try:
        with batch_span(
            "t", [(TP, "e1"), (sneaky, "e2"), ("x", "e3"), (unsampled, "e4")], events=4, dead_letters=0
        ):
            pass
    finally:
        processor.shutdown()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "t batch commit"]
    assert [link.context.trace_id for link in span.links] == [int(TP[3:35], 16)]
    assert (span.attributes or {})["traced_event_ids"] == ("e1",)


# --- tracestate: the W3C vendor list beside the traceparent (CloudEvents ``tracestate``, ``ce_tracestate``)

TS = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
BAD_STATE = {
    ",".join(f"k{i}=v" for i in range(33)).encode(): "more than 32 list-members",
    ",".join(f"k{i}=" + "v" * 60 for i in range(9)).encode(): "longer than 512 bytes",
    b"Congo=t61rcWkgMzE": "list-member 1: not key=value in W3C tracestate characters",
    b"congo=t61,rojo=a=b": "list-member 2: not key=value in W3C tracestate characters",
    b"congo=": "list-member 1: not key=value in W3C tracestate characters",
    b"congo=t61\nrojo=1": "list-member 1: not key=value in W3C tracestate characters",
    "congo=髙橋花子".encode(): "list-member 1: not key=value in W3C tracestate characters",
    b"\xff\xfe=1": "list-member 1: not key=value in W3C tracestate characters",
    b"congo=1,rojo=2,congo=3": "list-member 3: repeats the key of an earlier one",
    b"tenant@" + b"s" * 15 + b"=1": "list-member 1: not key=value in W3C tracestate characters",
}


def _traced_record(
    state: list[bytes], traceparent: bytes | None = TP.encode()
) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    key, headers, value = _record([traceparent] if traceparent else [])
    return key, headers + [(TRACESTATE_HEADER, s) for s in state], value


@pytest.mark.parametrize("fast", [False, True])
def test_the_envelope_carries_a_tracestate_beside_its_traceparent(fast: bool) -> None:
    event = to_event(factories.consent(factories.person_key()), None)._replace(traceparent=TP, tracestate=TS)
    key, headers, value = encode(event)
    assert (TRACESTATE_HEADER, TS.encode()) in headers
    decoded = decode(key, headers, value, fast=fast)
    assert (decoded.traceparent, decoded.tracestate) == (TP, TS)
    # W3C: a tracestate means nothing without its traceparent; an untraced event carries neither.
    alone = encode(event._replace(traceparent=None))[1]
    assert TRACESTATE_HEADER not in dict(alone) and TRACEPARENT_HEADER not in dict(alone)
    # Optional whitespace around members and empty members are W3C too; 32 members and 512 bytes fit.
    for state in (" congo=t61rcWkgMzE , ,rojo=00f067aa0ba902b7", ",".join(f"k{i}=v" for i in range(32)),
                  "tenant@system=" + "v" * 256, ",".join(f"k{i}=" + "v" * 53 for i in range(9))[:512]):  # fmt: skip
        assert tracestate_refusal(state.encode()) is None, state
        k, h, v = _traced_record([state.encode()])
        assert decode(k, h, v).tracestate == state


@pytest.mark.parametrize(("raw", "rule"), BAD_STATE.items())
def test_a_malformed_tracestate_is_dropped_with_its_rule_never_its_value(raw: bytes, rule: str) -> None:
    key, headers, value = _traced_record([raw])
    dropped: list[str] = []
    event = decode(key, headers, value, fast=True, dropped=dropped)
    assert event.traceparent == TP and event.tracestate is None  # the trace is kept, its state dropped
    assert dropped == [f"header {TRACESTATE_HEADER}: {rule}"]
    assert tracestate_refusal(raw) == rule


def test_a_tracestate_without_a_well_formed_traceparent_is_dropped() -> None:
    for traceparent, repeated in ((None, False), (b"00-zz", False), (TP.encode(), True)):
        key, headers, value = _traced_record([TS.encode()] * (2 if repeated else 1), traceparent)
        dropped: list[str] = []
        event = decode(key, headers, value, dropped=dropped)
        assert event.tracestate is None
        assert dropped[-1] == (
            f"header {TRACESTATE_HEADER}: repeated (the binding carries one list)"
            if repeated
            else f"header {TRACESTATE_HEADER}: without a well-formed {TRACEPARENT_HEADER} (W3C: ignored)"
        )
    assert safe_headers([(TRACESTATE_HEADER, TS.encode())]) == {}  # operators never see vendors' values


def test_the_span_in_progress_gives_its_tracestate_and_links_carry_it() -> None:
    exporter = InMemorySpanExporter()
    processor = export_to(exporter)
    parent = SpanContext(int(TP[3:35], 16), int(TP[36:52], 16), is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("congo", "t61rcWkgMzE")]))  # fmt: skip
    try:
        assert current_tracestate() is None
        with tracer().start_as_current_span("request", context=set_span_in_context(NonRecordingSpan(parent))):
            assert current_tracestate() == "congo=t61rcWkgMzE"
        with batch_span("t", [(TP, "e1", TS), (TP, "e2", "Bad=1"), (TP, "e3")], events=3, dead_letters=0):
            pass
    finally:
        processor.shutdown()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "t batch commit"]
    assert [link.context.trace_state.to_header() for link in span.links] == [TS, "", ""]


def test_a_lean_request_gets_its_trace_context_recorded_only_while_spans_leave_the_process() -> None:
    """The lean routes' server span: the same name and allow-listed attributes as the instrumentation's
    when an exporter is set up; without one, no span is recorded, but the request still has a trace
    context of its own (valid, sampled by the provider's sampler), which its events carry."""
    from opentelemetry.trace import get_current_span

    from infra import tracing
    from infra.tracing import server_span, setup_tracing

    setup_tracing("test")
    saved = set(tracing._exporting)
    tracing._exporting.clear()
    try:
        with server_span("POST", "/v1/referral", "http") as span:
            context = span.get_span_context()
            assert not span.is_recording() and context.is_valid and context.trace_flags.sampled
            assert get_current_span() is span
            assert current_traceparent() == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
        exporter = InMemorySpanExporter()
        processor = export_to(exporter)
        try:
            with server_span("POST", "/v1/referral", "http") as span:
                span.set_attribute("http.response.status_code", 202)
                assert span.is_recording()
        finally:
            processor.shutdown()
        (exported,) = exporter.get_finished_spans()
        assert exported.name == "POST /v1/referral" and exported.kind is SpanKind.SERVER
        assert dict(exported.attributes or {}) == {
            "http.request.method": "POST",
            "http.route": "/v1/referral",
            "url.scheme": "http",
            "http.response.status_code": 202,
        }
    finally:
        tracing._exporting.update(saved)


_PARENTS = {
    "none": None,
    "local sampled": SpanContext(int(TP[3:35], 16), int(TP[36:52], 16), False, TraceFlags(1)),
    "local not sampled": SpanContext(int(TP[3:35], 16), int(TP[36:52], 16), False, TraceFlags(0)),
    "remote sampled": SpanContext(int(TP[3:35], 16), int(TP[36:52], 16), True, TraceFlags(1)),
    "remote not sampled": SpanContext(int(TP[3:35], 16), int(TP[36:52], 16), True, TraceFlags(0)),
}


@pytest.mark.parametrize("sampler_name", ["default", "always_off", "parentbased_always_off", "ratio"])
@pytest.mark.parametrize("parent_name", list(_PARENTS))
def test_a_lean_requests_sampling_is_the_providers_samplers_decision(
    parent_name: str, sampler_name: str
) -> None:
    """``server_span`` decides the SDK's default sampler (parent-based, always on) without calling it: for
    a root, and under every kind of parent, its flag is the one the sampler itself gives; any other
    sampler is asked."""
    from opentelemetry.context import attach, detach
    from opentelemetry.sdk.trace import sampling

    from infra import tracing
    from infra.tracing import server_span, setup_tracing

    samplers = {
        "default": sampling.DEFAULT_ON,
        "always_off": sampling.ALWAYS_OFF,
        "parentbased_always_off": sampling.DEFAULT_OFF,
        "ratio": sampling.TraceIdRatioBased(0.5),
    }
    provider = setup_tracing("test")
    saved_sampler, saved_exporting = provider.sampler, set(tracing._exporting)
    provider.sampler = samplers[sampler_name]
    tracing._exporting.clear()
    parent = _PARENTS[parent_name]
    parent_context = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
    token = attach(parent_context) if parent_context is not None else None
    try:
        for _ in range(20):  # the ratio sampler decides by the trace id: both of its answers come up
            with server_span("POST", "/v1/referral", "http") as span:
                context = span.get_span_context()
            expected = samplers[sampler_name].should_sample(
                parent_context, context.trace_id, "POST /v1/referral", SpanKind.SERVER
            )
            assert context.trace_flags.sampled == expected.decision.is_sampled()
            assert context.is_valid and context.trace_id != int(TP[3:35], 16)  # a trace of its own
    finally:
        if token is not None:
            detach(token)
        provider.sampler = saved_sampler
        tracing._exporting.update(saved_exporting)
