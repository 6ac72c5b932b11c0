"""structlog JSON logging with a last-line guard against personal data, and the trace of each line.

Code never logs personal fields on purpose; the guard drops any key that names one anyway, at any
depth and in the standard library's loggers too, so a mistake shows up as ``"[redacted]"`` in a log
line rather than as a person's name.

A line written while an OpenTelemetry span is in progress (a request, a relay's or a consumer's batch)
carries that span's ``trace_id`` and ``span_id`` (the W3C hex forms a tracing backend searches for),
so an operator can go from a line to its trace and back. Ids only: nothing of the span's attributes.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from opentelemetry import trace

PERSONAL_KEYS = frozenset(
    {
        "name",
        "name_kana",
        "full_name",
        "kana",
        "birth_date",
        "phone",
        "email",
        "address",
        "contact",
        "employer",
        "employer_name",
        "employer_address",
        "case_number",
        "job_seeker_number",
        "personal",
    }
)
REDACTED = "[redacted]"
_MAX_DEPTH = 8


def _scrub(value: Any, depth: int = 0) -> Any:
    """``value`` with every personal key redacted at any depth (dicts in lists in dicts…)."""
    if depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: REDACTED if k in PERSONAL_KEYS else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(v, depth + 1) for v in value]
    return value


# Values the guard has nothing to look into. Most of a line's values are these (a method, a status, a
# timestamp), and an exact type test is far cheaper than ``isinstance`` against ``Mapping``, an ABC.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _redact_personal(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in PERSONAL_KEYS:
            event_dict[key] = REDACTED
        # ``exc_info`` is rendered without its text (``_error_without_text``); scrubbed into a list, it was
        # lost, and the renderer fell back to the exception being handled, if any, whole.
        elif type(event_dict[key]) in _SCALARS or key == "exc_info":
            continue
        elif isinstance(event_dict[key], (Mapping, list, tuple, set, frozenset)):
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The span in progress, if any: its trace and span ids (a line naming its own keeps them)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", f"{context.trace_id:032x}")
        event_dict.setdefault("span_id", f"{context.span_id:016x}")
    return event_dict


# The route that answered the request being logged (its template, e.g. ``/persons/{person_key}``), set
# by ``infra.http.RouteInAccessLine`` as the response starts, in the context uvicorn logs from.
ACCESS_ROUTE: ContextVar[str | None] = ContextVar("access_route", default=None)
NO_ROUTE = "(no route)"


class _AccessLine(logging.Filter):
    """uvicorn's access line as the hub writes it: method, path and status as fields. The path is the
    route's template, not the path as sent: a path parameter and a query are what the client typed
    (a name searched for, a token, a megabyte), and a refused request's values never reach a log. A
    path no route serves is ``(no route)``; outside the hub's servers, the path without its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:  # client, method, path?query, HTTP version, status
            client, method, target, version, status = args
            path = ACCESS_ROUTE.get() or str(target).partition("?")[0]
            record.msg = "%s %s %s"
            record.args = (method, path, status)
            record.__dict__.update(client=client, method=method, path=path, status=status, http=version)
        else:  # not the line uvicorn writes today: keep nothing of its arguments
            record.msg, record.args = "access", ()
        return True


def _error_without_text(exc_info: Any) -> str:
    """An error as a log line may show it: its type, and each frame's file, line and function (the
    innermost last), for the error and for each it was raised from — never a message, a source line or a
    local. An error's text may quote what it was given (a name; a unique violation's DETAIL quotes the
    row's key), and the redaction guard sees a line's keys, not the words in a traceback."""
    parts: list[str] = []
    error: BaseException | None = exc_info[1]
    seen: set[int] = set()
    while error is not None and id(error) not in seen and len(seen) < _MAX_DEPTH:
        seen.add(id(error))
        frames = traceback.extract_tb(error.__traceback__)
        where = "; ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in frames)
        parts.append(f"{type(error).__module__}.{type(error).__qualname__} at {where or '?'}")
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return " <- ".join(parts) if parts else "?"


class _AsyncioLine(logging.Filter):
    """asyncio's "Task exception was never retrieved", "Exception in callback …" and the like (an error in a
    callback or a task nobody awaited: a Kafka or PostgreSQL client's) as their fixed words only: what
    follows them is reprs (the callback's arguments, the task's with the error's own text in it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _LOOP_WORDS.split(str(record.getMessage()), maxsplit=1)[0].strip(), ()
        return True


# Where the fixed words end: a line break, or the start of a repr or of a value.
_LOOP_WORDS = re.compile(r"[\n<(\[{'\":=]| at ")


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a stream
    bound at configure time may be closed later (a test's capture, a daemon's reopened stream), and a
    log line must never turn a request into a 500."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _JsonDumps:
    """``json.dumps`` with one encoder for every line: the same bytes (same options), without building a
    ``JSONEncoder`` per line (``json.dumps`` does as soon as any option, here ``default``, is given)."""

    def __init__(self) -> None:
        self._encoder: json.JSONEncoder | None = None

    def __call__(self, obj: Any, **options: Any) -> str:
        if self._encoder is None:  # the renderer passes the same options on every call
            self._encoder = json.JSONEncoder(**options)
        return self._encoder.encode(obj)


_EXCEPTION = structlog.processors.ExceptionRenderer(_error_without_text)


def configure_logging(level: str = "INFO") -> None:
    # The standard library's loggers (uvicorn, aiokafka, asyncpg, FastAPI…) go through the same
    # processors as structlog's, redaction included: their ``extra`` fields become keys it can see.
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _trace_ids,
    ]
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redact_personal,
                _EXCEPTION,
                structlog.processors.JSONRenderer(_JsonDumps()),
            ],
        )
    )
    # No line the hub writes names its caller's file, line, thread or process, so the standard library
    # need not look them up for every record (the switches its logging HOWTO names under
    # "Optimization"): the caller lookup alone walks the stack on every line, uvicorn's access line
    # (one per request) included.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # uvicorn's own loggers (servers run with ``log_config=None``: ``infra.http.serve``) propagate here.
    for own in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logging.getLogger(own).handlers[:] = []
        logging.getLogger(own).propagate = True
        logging.getLogger(own).setLevel(logging.NOTSET)
    loop = logging.getLogger("asyncio")
    loop.filters[:] = [f for f in loop.filters if not isinstance(f, _AsyncioLine)]
    loop.addFilter(_AsyncioLine())
    access = logging.getLogger("uvicorn.access")
    access.filters[:] = [f for f in access.filters if not isinstance(f, _AccessLine)]
    access.addFilter(_AccessLine())
    structlog.configure(
        processors=[
            *shared,
            _redact_personal,
            _EXCEPTION,
            structlog.processors.JSONRenderer(_JsonDumps()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
