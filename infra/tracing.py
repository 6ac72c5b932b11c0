"""Tracing across the hops, with OpenTelemetry: adapter request → outbox → relay → Kafka → consumers.

- Every hub process has an SDK tracer provider (``setup_tracing``), so requests get real trace ids
  whether or not anything is exported. Nothing is exported by default; with the standard
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans go to that collector over OTLP/HTTP, in batches.
- The HTTP services are instrumented (``instrument``: a server span per request). The request's W3C
  trace context travels with each event it accepts as the CloudEvents ``traceparent`` extension
  (``contracts.envelope``: header ``ce_traceparent``), stored with the event in its outbox row.
- The relay's span around publishing a batch, and each consumer's span around committing a batch, are
  linked to the trace of every event in it (one link per event, carrying the event id): the
  OpenTelemetry messaging conventions for batches, and one span per batch, not per event.
- What leaves the process is allow-listed (``_Redacting``): span attributes by name (ids, routes,
  statuses, topics, positions, counts), exception events reduced to the exception's type. An
  instrumentation library may record a URL's query or an exception's message, which could quote a
  value; neither is exported. Personal data never reaches a span.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts.envelope import TRACEPARENT_HEADER, traceparent_of, traceparent_refusal

__all__ = [
    "TRACEPARENT_HEADER",
    "batch_span",
    "current_traceparent",
    "export_to",
    "instrument",
    "publish_span",
    "setup_tracing",
    "trace_id",
]

# A batch span links every traced event in it; the SDK's default (128) would drop the rest of a batch
# (the consumers read up to ``batch_max_records``, 2000 by default; the relay ``outbox_batch_size``).
MAX_LINKS = 4096
_PROPAGATOR = TraceContextTextMapPropagator()
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
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        export_to(OTLPSpanExporter(), batched=True)
    return provider


def export_to(exporter: SpanExporter, *, batched: bool = False) -> SpanProcessor:
    """Send finished spans to ``exporter`` (OTLP, or a test's in-memory exporter), through the allow-list.
    ``batched`` exports from a background thread (production); otherwise as each span ends."""
    provider = setup_tracing("ittai-hub")
    inner = BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
    processor = _Redacting(inner)
    provider.add_span_processor(processor)
    return processor


def tracer() -> trace.Tracer:
    return trace.get_tracer("ittai-hub")


def instrument(app: Any) -> None:
    """A server span per request of a FastAPI app (not for probes and scrapes). Events the request
    accepts carry its trace context (``current_traceparent``)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=",".join(_NOT_TRACED),
        exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
    )


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the span in progress (None outside any valid span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a well-formed ``traceparent`` (what an operator searches for in a tracing
    backend); None for a missing or malformed one."""
    if not traceparent:
        return None
    value, _ = traceparent_of([(TRACEPARENT_HEADER, traceparent.encode())])
    return value[3:35] if value else None


def _span_context(traceparent: str) -> SpanContext:
    """A remote span context from a traceparent already validated by ``contracts.envelope``."""
    return SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:55], 16)),
    )


def _links(traced: Iterable[tuple[str, Mapping[str, str | int]]]) -> list[Link]:
    """Links to each traced item's context (a malformed context, which the hub never writes, is skipped:
    a span is never a reason for a relay or a consumer to stop)."""
    return [
        Link(_span_context(tp), attributes=dict(attrs))
        for tp, attrs in traced
        if traceparent_refusal(tp.encode()) is None
    ]


@contextmanager
def _span(name: str, kind: SpanKind, links: list[Link], attributes: dict[str, Any]) -> Iterator[Span]:
    with tracer().start_as_current_span(
        name,
        kind=kind,
        links=links,
        attributes=attributes,
        record_exception=False,  # an exception's message may quote a value: its type is enough
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


@contextmanager
def publish_span(traced: Sequence[tuple[str, Mapping[str, str | int]]], *, rows: int) -> Iterator[Span]:
    """The relay's span around publishing a batch of ``rows`` outbox rows, linked to the trace of each
    traced row: (traceparent, link attributes)."""
    with _span(
        "outbox publish",
        SpanKind.PRODUCER,
        _links(traced),
        {"messaging.system": "kafka", "rows": rows, "traced_rows": len(traced)},
    ) as span:
        yield span


@contextmanager
def batch_span(
    consumer: str,
    traced: Sequence[tuple[str, Mapping[str, str | int]]],
    *,
    events: int,
    dead_letters: int,
) -> Iterator[Span]:
    """A consumer's span around one batch's transaction (effects, dead letters and positions), linked to
    the trace of each traced event in it; marked failed with the exception's type if it rolls back."""
    with _span(
        f"{consumer} batch commit",
        SpanKind.CONSUMER,
        _links(traced),
        {
            "messaging.system": "kafka",
            "consumer": consumer,
            "events": events,
            "dead_letters": dead_letters,
            "traced_events": len(traced),
        },
    ) as span:
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
        # the hub's own: ids, topics, positions, counts
        "messaging.system",
        "consumer",
        "events",
        "dead_letters",
        "traced_events",
        "rows",
        "traced_rows",
        "event.id",
        "outbox.id",
        "topic",
        "partition",
        "offset",
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
        links=[Link(link.context, _allowed(link.attributes)) for link in span.links],
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
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
