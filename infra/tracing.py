"""Tracing across the hops, with OpenTelemetry: adapter request → outbox → relay → Kafka → consumers.

- Every hub process has an SDK tracer provider (``setup_tracing``), so requests get real trace ids
  whether or not anything is exported. Nothing is exported by default; with the standard
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans go to that collector over OTLP/HTTP, in batches.
- The HTTP services are instrumented (``instrument``: a server span per request). The request's W3C
  trace context travels with each event it accepts as the CloudEvents ``traceparent`` extension
  (``contracts.envelope``: header ``ce_traceparent``), stored with the event in its outbox row.
- The relay's span around publishing a batch, and each consumer's span around committing a batch, are
  linked to the trace of every traced event in it (one link per event; the span's ``traced_event_ids``
  names them in the links' order): OpenTelemetry's messaging conventions for batches, and one span per
  batch, not per event.
- What leaves the process is allow-listed (``_Redacting``): span attributes by name (HTTP method, route
  and status; event ids and counts), exception events reduced to the exception's type. An
  instrumentation library may record a URL's query or an exception's message, which could quote a
  value; neither is exported. Span names are route templates (never a raw path) or the hub's own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from contracts.envelope import (
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    traceparent_of,
    traceparent_refusal,
    tracestate_refusal,
)
from domain.trace_context import tracestate_members

__all__ = [
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "batch_span",
    "current_trace_context",
    "current_traceparent",
    "current_tracestate",
    "export_to",
    "instrument",
    "publish_span",
    "server_span",
    "setup_tracing",
    "trace_id",
]

# A batch span links every traced event in it; the SDK's default (128) would drop the rest of a batch
# (the consumers read up to ``batch_max_records``, 2000 by default; the relay ``outbox_batch_size``).
MAX_LINKS = 4096
_exporting: set[SpanProcessor] = set()  # ``export_to``'s processors not shut down: spans leave the process
_NOT_TRACED = ("healthz", "readyz", "metrics")  # probes and scrapes: no span, no trace


def setup_tracing(service: str) -> TracerProvider:
    """The process's tracer provider, created on the first call (later calls return it): spans are
    recorded, and exported over OTLP only where ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service}),
        span_limits=SpanLimits(max_links=MAX_LINKS),
    )
    trace.set_tracer_provider(provider)
    # A client's own ``traceparent``/``tracestate`` HTTP headers are hostile input: never let a caller pick
    # the hub's trace ids (or join a request to another's trace). Every request starts a trace of its own;
    # the hub's propagation is the CloudEvents extension, not HTTP headers.
    propagate.set_global_textmap(_OwnTraces())
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        export_to(OTLPSpanExporter(), batched=True)
    return provider


class _OwnTraces(TextMapPropagator):
    """Takes no trace context from a carrier (a request starts a trace of its own) and puts none in one."""

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        return context if context is not None else Context()

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        pass

    @property
    def fields(self) -> set[str]:
        return set()


def export_to(exporter: SpanExporter, *, batched: bool = False) -> SpanProcessor:
    """Send finished spans to ``exporter`` (OTLP, or a test's in-memory exporter), through the allow-list.
    ``batched`` exports from a background thread (production); otherwise as each span ends."""
    provider = setup_tracing("ittai-hub")
    inner = BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
    processor = _Redacting(inner)
    provider.add_span_processor(processor)
    _exporting.add(processor)
    return processor


# The API's proxy: it follows the provider ``setup_tracing`` installs, whenever that happens (a tracer
# looked up per span costs the SDK a third of an empty span, measured).
_TRACER = trace.get_tracer("ittai-hub")


def tracer() -> trace.Tracer:
    return _TRACER


def instrument(app: Any) -> None:
    """A server span per request of a FastAPI app (not for probes and scrapes). Events the request
    accepts carry its trace context (``current_traceparent``)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=",".join(_NOT_TRACED),
        exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
    )


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


def server_span(method: str, route: str, scheme: str) -> AbstractContextManager[Span]:
    """A server span for one request to ``route`` (a fixed path: the route is its own template), as the
    instrumentation names it (``POST /v1/referral``) with the allow-listed attributes only, current
    within the ``with`` block. For the lean routes of ``infra.http`` (the adapters' JSON endpoints),
    which the instrumentation does not see.

    While no span leaves the process (nothing set up by ``export_to``), the request gets its trace
    context without a recorded span: ids from the provider's generator, sampled as its sampler decides,
    so the events it accepts and its log lines carry the same ids a recorded span would have given them.
    Recording a span nobody reads was a fifth of a lean request's CPU. The SDK's default sampler
    (``parentbased_always_on``, unless ``OTEL_TRACES_SAMPLER`` names another) is decided here without
    its calls: a root is sampled, a child follows its parent's flag; its own path cost as much as the
    rest of this function, for a decision known in advance."""
    provider = trace.get_tracer_provider()
    if not _exporting and isinstance(provider, TracerProvider):
        ids = provider.id_generator
        trace_id = ids.generate_trace_id()
        sampler = provider.sampler
        if sampler is DEFAULT_ON:
            parent = trace.get_current_span().get_span_context()
            sampled = not parent.is_valid or parent.trace_flags.sampled
        else:
            attributes = {"http.request.method": method, "http.route": route, "url.scheme": scheme}
            name = f"{method} {route}"
            decision = sampler.should_sample(None, trace_id, name, SpanKind.SERVER, attributes)
            sampled = decision.decision.is_sampled()
        flags = _SAMPLED if sampled else _NOT_SAMPLED
        return _Current(NonRecordingSpan(SpanContext(trace_id, ids.generate_span_id(), False, flags)))
    return tracer().start_as_current_span(
        f"{method} {route}",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route, "url.scheme": scheme},
        record_exception=False,  # an exception's message may quote a value: its type is enough
        set_status_on_exception=False,
    )


class _Current:
    """``span`` made current for a ``with`` block, as ``trace.use_span`` would (its exception handling is
    for recording spans only). A class, not a generator: ``contextlib``'s layers and ``use_span``'s cost
    a lean request more than making the span current."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *_: object) -> None:
        otel_context.detach(self._token)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the span in progress (None outside any valid span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_tracestate() -> str | None:
    """The W3C ``tracestate`` of the span in progress (None outside any valid span, or where it has none:
    the hub's own traces start with an empty one; a sampler or a vendor's processor may add entries)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return context.trace_state.to_header() or None


def current_trace_context() -> tuple[str | None, str | None]:
    """``current_traceparent()`` and ``current_tracestate()`` from one look-up of the span in progress
    (an acceptance takes both for every request)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    return traceparent, context.trace_state.to_header() or None


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a well-formed ``traceparent`` (what an operator searches for in a tracing
    backend); None for a missing or malformed one."""
    if not traceparent:
        return None
    value, _ = traceparent_of([(TRACEPARENT_HEADER, traceparent.encode())])
    return value[3:35] if value else None


def _span_context(traceparent: str, tracestate: str | None = None) -> SpanContext:
    """A remote span context from a well-formed traceparent (ValueError if not: an outbox row's headers
    may come from a redriven dead letter, so the relay checks them as ``contracts.envelope`` does), with
    its tracestate where that is well-formed too (a malformed one is left out, never parsed by the SDK,
    whose parser logs the members it refuses)."""
    if traceparent_refusal(traceparent.encode()) is not None:
        raise ValueError("not a W3C traceparent")
    state = TraceState()
    if tracestate and tracestate_refusal(tracestate.encode()) is None:
        state = TraceState(tracestate_members(tracestate))
    return SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:55], 16)),
        trace_state=state,
    )


# A traced event: (traceparent, event id) or (traceparent, event id, tracestate).
Traced = tuple[str, str] | tuple[str, str, str | None]


def _linked(traced: Iterable[Traced]) -> tuple[list[Link], tuple[str, ...]]:
    """Links to each (traceparent, event id[, tracestate])'s context, and the event ids in the links'
    order.

    A link costs the SDK several µs (measured: ~10 µs per traced event on this machine's loaded cores),
    so links are made only while spans leave the process (``export_to``), and only to sampled traces
    (an unsampled trace was not recorded upstream: OTEL_TRACES_SAMPLER sets the ratio). Links carry no
    attributes of their own (the SDK copies each link's attributes): the ids go once on the span. A
    malformed context is skipped: a span never stops a relay or a consumer."""
    links: list[Link] = []
    ids: list[str] = []
    if not _exporting:
        return links, ()
    for traceparent, event_id, *state in traced:
        try:
            context = _span_context(traceparent, state[0] if state else None)
        except ValueError:
            continue
        if not context.trace_flags.sampled:
            continue
        links.append(Link(context))
        ids.append(event_id)
    return links, tuple(ids)


@contextmanager
def _span(name: str, kind: SpanKind, traced: Iterable[Traced], attributes: dict[str, Any]) -> Iterator[Span]:
    links, ids = _linked(traced)
    with tracer().start_as_current_span(
        name,
        kind=kind,
        links=links,
        attributes={**attributes, "traced_event_ids": ids},
        record_exception=False,  # an exception's message may quote a value: its type is enough
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


@contextmanager
def publish_span(traced: Iterable[Traced], *, rows: int) -> Iterator[Span]:
    """The relay's span around publishing a batch of ``rows`` outbox rows, linked to the trace of each
    traced row: (traceparent, event id[, tracestate])."""
    with _span(
        "outbox publish", SpanKind.PRODUCER, traced, {"messaging.system": "kafka", "rows": rows}
    ) as span:
        yield span


@contextmanager
def batch_span(consumer: str, traced: Sequence[Traced], *, events: int, dead_letters: int) -> Iterator[Span]:
    """A consumer's span around one batch's transaction (effects, dead letters and positions), linked to
    the trace of each traced event in it, (traceparent, event id[, tracestate]); marked failed with the exception's
    type if it rolls back."""
    attributes = {
        "messaging.system": "kafka",
        "consumer": consumer,
        "events": events,
        "dead_letters": dead_letters,
    }
    with _span(f"{consumer} batch commit", SpanKind.CONSUMER, traced, attributes) as span:
        yield span


# --- what leaves the process ---------------------------------------------------------------------

_ATTRIBUTES = frozenset(
    {
        # the HTTP instrumentation's (old and stable semantic conventions): method, route, status, scheme
        "http.method",
        "http.request.method",
        "http.route",
        "http.status_code",
        "http.response.status_code",
        "http.scheme",
        "url.scheme",
        "http.flavor",
        "network.protocol.version",
        # the hub's own: event ids and counts
        "messaging.system",
        "consumer",
        "events",
        "dead_letters",
        "rows",
        "traced_event_ids",
    }
)
_EXCEPTION_TYPE = "exception.type"
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,120}")


def _allowed(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if k in _ATTRIBUTES}


def redacted(span: ReadableSpan) -> ReadableSpan:
    """``span`` as it may leave the process: allow-listed attributes (the span's and its links'), exception
    events with the exception's type only, a status description only where it is a class name."""
    status = span.status
    if status.description and not _CLASS_NAME.fullmatch(status.description):
        status = Status(status.status_code)
    events = [
        SpanEvent(e.name, {_EXCEPTION_TYPE: e.attributes[_EXCEPTION_TYPE]}, e.timestamp)
        if e.attributes and _EXCEPTION_TYPE in e.attributes
        else SpanEvent(e.name, _allowed(e.attributes), e.timestamp)
        for e in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_allowed(span.attributes),
        events=events,
        links=[
            Link(link.context, _allowed(link.attributes)) if link.attributes else link for link in span.links
        ],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class _Redacting(SpanProcessor):
    """Hands each finished span, redacted, to the exporting processor it wraps."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner
        self._stopped = False

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        pass  # nothing is exported before a span ends

    def on_end(self, span: ReadableSpan) -> None:
        if not self._stopped and span.context is not None and span.context.trace_flags.sampled:
            self._inner.on_end(redacted(span))

    def shutdown(self) -> None:
        """Stop exporting (a provider keeps its processors: a stopped one costs nothing after this)."""
        self._stopped = True
        _exporting.discard(self)
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
