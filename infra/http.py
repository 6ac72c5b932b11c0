"""What every HTTP service of the hub shares: auth errors as JSON, health, readiness and metrics, and
the bounds on hostile input.

FastAPI (with uvicorn) is used because it gives typed request models on pydantic v2 — the same models
as the event contracts — and an OpenAPI description for free.

Bounds (README "Limits"): a request body larger than the limit is refused with 413 before it is read
(by its Content-Length, or as it streams in); a request FastAPI refuses (422) gets at most
``MAX_ERRORS`` errors with values cut short, never its own input back whole; every operation's OpenAPI
lists the statuses it can answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
import orjson
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import make_asgi_app
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from infra import health
from infra.auth import AuthError, Principal, Role, authenticate, require_role
from infra.codecs.field_errors import client_errors, from_request_errors
from infra.config import Settings, get_settings
from infra.crypto import KeyStore
from infra.db import TRANSIENT_DB_ERRORS
from infra.erasure_follower import ErasureFollower
from infra.gc import fewer_collections, freeze_what_lives
from infra.logging import ACCESS_ROUTE, NO_ROUTE, get_logger
from infra.runner import prepare
from infra.tracing import instrument, server_span, setup_tracing


def server(app: FastAPI, host: str, port: int, *, access_log: bool = True) -> uvicorn.Server:
    """The one way the hub serves HTTP. ``log_config=None`` and no ``log_level``: uvicorn leaves logging
    as ``infra.logging.configure_logging`` set it, so its lines are the hub's JSON, through the
    redaction guard, and access lines carry no query string. The caller owns signals
    (``infra.runner`` or the CLI). The protocol is httptools' (``_HttpProtocol``), never uvicorn's "auto": its
    fallback, h11, frames a body sent with both Content-Length and Transfer-Encoding by the chunks, where
    httptools (llhttp) refuses the request (``BodyLimit`` refuses it too, whichever parser runs)."""
    named = RouteInAccessLine(app)
    served: ASGIApp = LeanRoutes(app, named) if getattr(app.state, "lean_routes", False) else named
    config = uvicorn.Config(
        Contained(served),
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        lifespan="on",
        http=_HttpProtocol,
        # ``X-Forwarded-For``/``-Proto`` are request headers like any other (hostile): the hub serves its
        # clients directly and names the peer it sees. uvicorn's default trusted them from 127.0.0.1 and
        # parsed the peer's address on every request to decide so (3% of a single-event POST's CPU).
        proxy_headers=False,
        # No ``server: uvicorn`` on every answer: it names the software to whoever asks, and each header
        # written is two regular-expression checks in uvicorn's ``send``.
        server_header=False,
    )
    return uvicorn.Server(config)


class _OneSendPerTurn:
    """A connection's transport whose writes within one turn of the event loop leave in one system call.

    uvicorn writes a response's status line and headers, then its body, each straight to the socket (two
    sends, and two segments for the client to read): a tenth of a single-event POST's CPU was these
    ``write`` calls (py-spy, native frames, under ``bench/bench_ingest.py``). Here the first write of a
    turn schedules a flush for the loop's next turn and every write until then joins it; ``close`` sends
    what is pending first, and so does ``write_eof``. Everything else is the transport's own."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():  # the client went away meanwhile: nobody to send to
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:  # asked several times a request: not through ``__getattr__``
        return self._transport.is_closing()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# A request's line and headers together: at most this many bytes (README "Limits"). httptools sets no bound
# (a 20 MB header, or 100,000 of them, were read into memory and served), and a URL past 64 KiB got
# uvicorn's bare "Invalid HTTP request received."; nginx allows 4 × 8 KiB, Node 16 KiB.
MAX_HEAD_BYTES = 32 * 1024
_HEAD_SLICE = 8 * 1024  # a head is fed to the parser this much at a time, counted between slices
# After refusing a head, the rest of what the client sends is read and dropped (up to these bounds) before
# the connection closes: closed with unread data, the kernel resets it, and the client may lose the answer.
_LINGER_BYTES = 64 * 1024 * 1024
_LINGER_S = 5.0


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) writing through ``_OneSendPerTurn``, with a request's line and
    headers bounded (``MAX_HEAD_BYTES``): past it the request is refused (414 for its line, 431 for its
    headers) before more of it is read, naming the limit and nothing of what was sent."""

    _reading_head = True  # until a request's headers are complete, and again once its body is
    _head_bytes = 0  # of the head being read
    _heads = 0  # heads completed on this connection
    _dropped: int | None = None  # bytes dropped since a head was refused (None: none was)
    _refuse_when_answered = False  # a head past the limit followed requests not answered yet

    # uvloop's transport is not a subclass of asyncio.Transport (no isinstance check here); uvicorn says the same.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = _OneSendPerTurn(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)

    def data_received(self, data: bytes) -> None:
        if self._dropped is not None:  # a head was refused: its answer is out, the rest is dropped
            self._dropped += len(data)
            if self._dropped > _LINGER_BYTES:
                self.transport.close()
            return
        # Fed a slice at a time, so that a head is counted whatever shares its reads (a body, or a whole request
        # pipelined before it) and no more than a slice past the limit is ever buffered. A slice in which a head
        # begins goes uncounted, so a head is refused at MAX_HEAD_BYTES + one slice at the latest.
        for start in range(0, len(data), _HEAD_SLICE):
            end = start + _HEAD_SLICE
            piece = data if start == 0 and end >= len(data) else data[start:end]
            heads, in_head = self._heads, self._reading_head
            super().data_received(piece)
            if self.transport.is_closing():
                return
            if in_head and self._heads == heads:  # the whole slice was one head's
                self._head_bytes += len(piece)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._dropped = max(len(data) - end, 0)
                    if self._answering():  # requests before it are answered first, in order
                        self._refuse_when_answered = True
                    else:
                        self._refuse_head()
                    return

    def on_headers_complete(self) -> None:
        self._reading_head, self._head_bytes, self._heads = False, 0, self._heads + 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True
        super().on_message_complete()

    def _answering(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refuse_when_answered and not self._answering() and not self.transport.is_closing():
            self._refuse_when_answered = False
            self._refuse_head()

    def _refuse_head(self) -> None:
        line = not self.headers  # still in the request line, or at its first header
        status, what = (414, "request line (method and URL)") if line else (431, "request headers")
        error = f"{what}: longer than the limit of {MAX_HEAD_BYTES} bytes for a request's line and headers"
        get_logger("http").warning("request refused before it was read", status=status, limit=MAX_HEAD_BYTES)
        body = orjson.dumps({"error": error})
        reason = b"URI Too Long" if status == 414 else b"Request Header Fields Too Large"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(body), body)
        )
        self.transport.write_eof()  # the answer is whole; what the client still sends is read and dropped
        asyncio.get_running_loop().call_later(_LINGER_S, self.transport.close)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (``hub run …`` of an HTTP-only service)."""
    server(app, host, port).run()


def create_app(
    title: str,
    *,
    description: str,
    settings: Settings | None = None,
    on_startup: Callable[[FastAPI], Awaitable[None]] | None = None,
    on_shutdown: Callable[[FastAPI], Awaitable[None]] | None = None,
    lean_routes: bool = False,
    follows_erasures: bool = False,
) -> FastAPI:
    """A FastAPI app with ``app.state.pool`` (migrated database), ``app.state.settings``, ``/healthz``,
    ``/readyz`` and ``/metrics``. ``lean_routes``: its plain Starlette routes are served by
    ``LeanRoutes`` (see there). ``follows_erasures``: the app keeps data keys in memory, so it runs an
    ``ErasureFollower`` (``app.state.erasure_follower``) that drops an erased person's key at once."""
    s = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = s
        app.state.pool = await prepare(s)
        if on_startup:
            await on_startup(app)
        follower: asyncio.Task[None] | None = None
        if follows_erasures:
            app.state.erasure_follower = ErasureFollower(s)
            follower = follow_erasures(app.state.erasure_follower)
        freeze_what_lives()  # modules, routes, models, pools: out of the collector's sight (infra.gc)
        try:
            # A stream of requests is streaming work (``infra.gc``): each allocates a few hundred containers
            # freed by its answer, and at CPython's thresholds the collector's passes were 3.5% of an
            # adapter's CPU under a stream of single-event POSTs (py-spy, native frames).
            with fewer_collections():
                yield
        finally:
            if follower is not None:
                follower.cancel()  # it holds nothing to finish: forgetting is all it does
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            if on_shutdown:
                await on_shutdown(app)
            await app.state.pool.close()

    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, body_bytes=s.max_body_bytes, file_bytes=s.max_file_bytes)
    app.state.lean_routes = lean_routes  # read by ``server``, with the limits the lean path applies
    app.state.body_limits = (s.max_body_bytes, s.max_file_bytes)
    app.add_exception_handler(_TooLarge, _too_large)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(AuthError, _auth_error)
    # Starlette's ``ServerErrorMiddleware`` calls it for any error nothing else handled (in a route, a
    # dependency or a middleware), inside the request's span: the line carries its trace id.
    app.add_exception_handler(Exception, _unhandled)
    app.openapi = lambda: _documented_openapi(app)  # type: ignore[method-assign]
    setup_tracing(title)
    instrument(app)  # a server span per request; the events it accepts carry its trace context
    app.include_router(_health)
    app.mount("/metrics", make_asgi_app())
    return app


def _documented_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI, with every status the shared machinery can answer (``document_statuses``)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        app.openapi_schema = document_statuses(schema)
    return app.openapi_schema


# The answer to an error nobody handled: fixed (RFC 9457 problem details), nothing of the request or the error.
_INTERNAL_ERROR = orjson.dumps({"type": "about:blank", "title": "Internal Server Error", "status": 500})
_LOGGED = "hub.unhandled_logged"  # in the request's state: the error was logged (and answered) inside the app


def internal_error() -> Response:
    return Response(_INTERNAL_ERROR, status_code=500, media_type="application/problem+json")


def log_unhandled(scope: Scope, exc: BaseException) -> None:
    """One line for an error nobody handled: its type and the route's template (and, from the logging
    processors, the request's trace id), never its message: an error's text may quote what it was given
    (a name, a row's key in a unique violation's DETAIL, the request's own words)."""
    route = getattr(scope.get("route"), "path", None) or NO_ROUTE
    get_logger("http").error("unhandled error", route=route, error=type(exc).__name__)


async def _unhandled(request: Request, exc: Exception) -> Response:
    log_unhandled(request.scope, exc)
    state = request.scope.get("state")
    if isinstance(state, dict):
        state[_LOGGED] = True
    return internal_error()


class Contained:
    """The outermost layer of every app the hub serves: no error leaves it for the server. Starlette's
    ``ServerErrorMiddleware`` answers (``_unhandled``) and then re-raises, "so that servers can log the
    error", and uvicorn logged it whole ("Exception in ASGI application", with the traceback and the
    error's message), past the redaction guard. An error raised outside that middleware (the layers
    ``server`` adds) is logged here as ``_unhandled`` logs, and answered if nothing was sent yet."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if not state.get(_LOGGED):
                log_unhandled(scope, exc)
            if not started:
                await internal_error()(scope, receive, send)


async def _too_large(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, _TooLarge)
    return JSONResponse({"error": exc.detail}, status_code=413)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(client_errors(from_request_errors(exc.errors())), status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own refusals as it answers them, but a body it could not read (a 400 raised from the
    parser's error) in the hub's shape, naming the rule: FastAPI said only "There was an error parsing
    the body"."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        return JSONResponse({"error": unreadable_body(exc.__cause__)}, status_code=400)
    return await http_exception_handler(request, exc)


def unreadable_body(cause: BaseException) -> str:
    """Why a body could not be read, from the parser's error (whose own text may quote the body)."""
    if isinstance(cause, RecursionError):
        return "(body): JSON nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return "(body): not UTF-8"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return f"(body): a number with more than {sys.get_int_max_str_digits()} digits"
    return "(body): not readable as JSON or as a form"


async def _auth_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)


def follow_erasures(follower: ErasureFollower) -> asyncio.Task[None]:
    """Run ``follower`` as a task of this process. Should it ever end on an error, the process would keep
    erased people's data keys from then on: ``/readyz`` says so (``erasure-follower``) instead of staying
    ready."""
    task = asyncio.create_task(follower.run(), name="erasure-follower")
    task.add_done_callback(_follower_ended)
    return task


def _follower_ended(task: asyncio.Task[None]) -> None:
    if task.cancelled():  # a shutdown
        return
    exc = task.exception()
    if exc is not None:
        health.report("erasure-follower", False, f"stopped: {type(exc).__name__}")
        get_logger("erasure-follower").error("erasure follower stopped", error=type(exc).__name__)


_health = APIRouter()


@_health.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@_health.get("/readyz", tags=["health"])
async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers now and every component of the process (relay, leadership,
    ...) last found its dependency working; otherwise 503 naming each failing component."""
    components = {name: r.detail for name, r in health.snapshot().items()}
    try:
        async with request.app.state.pool.acquire() as conn:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=2)
        components["database"] = "ok"
    except (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError) as exc:
        components["database"] = type(exc).__name__
    failing = {name: detail for name, detail in health.failing().items() if name != "database"}
    if components["database"] != "ok":
        failing["database"] = components["database"]
    if failing:
        return JSONResponse({"status": "not ready", "failing": failing, "components": components}, 503)
    return JSONResponse({"status": "ready"})


async def attach_keystore(app: FastAPI) -> None:
    """``on_startup`` for services that open sealed personal data (only under consent): ``app.state.keystore``."""
    app.state.keystore = KeyStore.from_settings(app.state.settings)


async def current_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    async with request.app.state.pool.acquire() as conn:
        return await authenticate(conn, authorization)


def requires(role: Role) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency: an authenticated principal holding ``role`` (401/403 otherwise)."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        require_role(principal, role)
        return principal

    return dependency


class RouteInAccessLine:
    """Names the route that answered (its template) for the access line uvicorn writes as the response
    starts (``infra.logging.ACCESS_ROUTE``): never the path as sent, which may carry anything."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def naming_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ACCESS_ROUTE.set(getattr(scope.get("route"), "path", None) or NO_ROUTE)
            await send(message)

        await self.app(scope, receive, naming_send)


# --- the lean path ------------------------------------------------------------------------------------


class LeanRoutes:
    """Serves an app's plain Starlette routes (``Route`` objects not in the OpenAPI description and with
    no path parameters: the adapters' ``POST /v1/<family>``, ``/batch`` and ``/csv``) with only what they
    need, and everything else through the app as usual.

    Why: on this project's 2-core machine the framework's stack cost more CPU per single-event POST than
    validating and accepting the event (profiled under ``bench/bench_ingest.py``: the instrumentation's
    middleware scanning every route to name its span, then nine more ASGI layers). What these routes
    get is the same as through the stack: the body limits (``BodyLimit``), a server span named and
    attributed as the instrumentation names it (``infra.tracing.server_span``), and the app's own
    exception handlers (401/403/409/413/422 exactly as before); anything unhandled is a 500 whose log
    line names the exception's type only. The access line names a lean route as ``RouteInAccessLine``
    names the others' (``rest``: the app behind it), set here as the request starts: its route is known."""

    def __init__(self, app: FastAPI, rest: ASGIApp | None = None) -> None:
        self.app = app
        self.rest: ASGIApp = rest if rest is not None else app
        self._routes: dict[str, tuple[frozenset[str], BodyLimit, Any]] | None = None

    def _lean(self) -> dict[str, tuple[frozenset[str], BodyLimit, Any]]:
        """Each lean route's methods and its endpoint behind the body limits, built once (the app's routes
        are all added by its first request)."""
        if self._routes is None:
            from starlette.routing import Route

            body_bytes, file_bytes = self.app.state.body_limits
            self._routes = {
                r.path: (
                    frozenset(r.methods or ()),
                    BodyLimit(_Endpoint(self.app, r.endpoint), body_bytes=body_bytes, file_bytes=file_bytes),
                    r,
                )
                for r in self.app.router.routes
                if type(r) is Route and not r.include_in_schema and not r.param_convertors
            }
        return self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self._lean().get(scope["path"])
            if found is not None and scope["method"] in found[0]:
                scope["app"] = self.app
                scope["route"] = found[2]  # as the router would
                ACCESS_ROUTE.set(found[2].path)  # the access line names it
                limits = found[1]
                # A body declared within its limit (the usual request) goes straight to the endpoint: the
                # limits' layer would only pass it on; any other is refused or counted there.
                await (limits.app if limits.declared_within(scope) else limits)(scope, receive, send)
                return
        await self.rest(scope, receive, send)


class _Endpoint:
    """One lean route's endpoint as an ASGI app: its server span, the app's exception handlers."""

    def __init__(self, app: FastAPI, endpoint: Callable[[Request], Awaitable[Any]]) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        with server_span(scope["method"], scope["path"], scope.get("scheme", "http")) as span:
            try:
                response = await self.endpoint(request)
            except Exception as exc:
                handler = next(
                    (
                        self.app.exception_handlers[k]
                        for k in type(exc).__mro__
                        if k in self.app.exception_handlers
                    ),
                    None,
                )
                if handler is None:
                    log_unhandled(scope, exc)  # its route is set (``LeanRoutes``): a fixed path
                    response = internal_error()
                else:  # the app's handlers here are all coroutines (they answer JSON)
                    answered = handler(request, exc)
                    response = await answered if inspect.isawaitable(answered) else answered
            span.set_attribute("http.response.status_code", response.status_code)
            await response(scope, receive, send)


class JsonAnswer(Response):
    """A JSON answer (``body``: JSON bytes already), with the headers and their order Starlette's
    ``Response(body, status, headers, media_type="application/json")`` gives it, written here at once:
    Starlette works them out per answer (a third of what answering a single-event POST cost in Python)."""

    media_type = "application/json"

    def __init__(
        self, body: bytes, status_code: int, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [
            *(headers or ()),
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
        ]


# --- bounds on hostile input ---------------------------------------------------------------------------


class _TooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes its limit. An HTTPException, so that FastAPI's
    body parsing passes it on instead of calling it a parse error; the app's handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


def _is_file_upload(path: str) -> bool:
    return path.endswith("/csv")


class BodyLimit:
    """Refuse a body past its limit with 413 before the application reads it: by its declared
    Content-Length at once, or by counting a streamed (chunked) body as it arrives. A Content-Length
    beside Transfer-Encoding (or a second one) is refused with 400: the length would not frame the body.
    File uploads (paths ending ``/csv``) have the file limit, every other request the body limit."""

    def __init__(self, app: ASGIApp, *, body_bytes: int, file_bytes: int) -> None:
        self.app = app
        self.body_bytes = body_bytes
        self.file_bytes = file_bytes

    def declared_within(self, scope: Scope) -> bool:
        """True where the request declares one Content-Length, within its limit, and no other framing:
        the server's HTTP parser frames the body by this length, so no more than it can arrive, and
        there is nothing to count or refuse (``__call__`` does the rest)."""
        declared, framings = _framing(scope)
        return (
            declared is not None
            and framings == 1
            and declared.isdigit()
            and _declared_bytes(declared) <= self._limit(scope)
        )

    def _limit(self, scope: Scope) -> int:
        return self.file_bytes if _is_file_upload(scope["path"]) else self.body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared, framings = _framing(scope)
        if declared is not None:
            if framings > 1:
                # Two framings (request smuggling): h11 would frame the body by its chunks and ignore the
                # length, so the length would bound nothing; RFC 9112 §6.3 lets a server refuse it.
                await _answer(send, 400, AMBIGUOUS_FRAMING)
                return
            if not declared.isdigit():
                await _answer(send, 400, "Content-Length: not a whole number of bytes")
                return
            if _declared_bytes(declared) > limit:
                await _answer(send, 413, too_large(limit))
                return
            # Within the limit as declared, and the only framing (``declared_within``).
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge as exc:
            if not started:
                await _answer(send, 413, str(exc.detail))


def _declared_bytes(digits: bytes) -> int:
    """A Content-Length (ASCII digits) as a number: its leading zeros dropped, and one of more digits than
    any limit has read as one past every limit. ``int()`` refuses a text of more than 4,300 digits
    (Python's bound on integer strings), and llhttp takes any number of leading zeros: a length written
    with thousands of them was a ValueError and a 500 (review12 F3)."""
    significant = digits.lstrip(b"0") or b"0"
    return int(significant) if len(significant) <= _DIGITS_MAX else _PAST_EVERY_LIMIT


_DIGITS_MAX = 18  # a length of 10^18 bytes or more is past every limit (and past what llhttp holds)
_PAST_EVERY_LIMIT = 10**_DIGITS_MAX


def _framing(scope: Scope) -> tuple[bytes | None, int]:
    """The request's (last) Content-Length, if any, and how many framing headers it has (Content-Length
    and Transfer-Encoding each count): more than one and the length frames nothing."""
    declared = None
    framings = 0
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = value
            framings += 1
        elif name == b"transfer-encoding":
            framings += 1
    return declared, framings


AMBIGUOUS_FRAMING = (
    "Content-Length: only one, and not with Transfer-Encoding (the body's length must be unambiguous)"
)


def too_large(limit: int) -> str:
    return (
        f"request body is larger than the limit of {limit} bytes ({limit / 1048576:g} MiB) for this endpoint"
    )


async def _answer(send: Send, status: int, error: str) -> None:
    body = orjson.dumps({"error": error})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_ERROR = {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}
_ERRORS = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {
                "errors": {"type": "array", "items": {"type": "object"}},
                "errors_total": {"type": "integer"},
                "errors_shown": {"type": "integer"},
            },
        }
    }
}
_STATUSES: dict[str, tuple[str, dict[str, Any]]] = {
    "400": ("Malformed request (e.g. a Content-Length that is not a number)", _ERROR),
    "401": ("Missing, malformed, unknown or revoked credentials", _ERROR),
    "403": ("Authenticated, but this credential may not do this", _ERROR),
    "409": ("Idempotency-Key already used for a different request", _ERROR),
    "413": ("Body larger than the limit for this endpoint (refused before it is read)", _ERROR),
    "422": ("Which field broke which rule (values cut short, at most 100 errors)", _ERRORS),
}


def document_statuses(schema: dict[str, Any]) -> dict[str, Any]:
    """Every answer the shared machinery can give, in every operation it applies to: 401/403 where a
    credential is needed (all but health), 413 and 400 where a body is taken, 422 where anything is
    validated. Statuses an operation documents itself (202, 404, 409…) are kept as they are."""
    for operations in schema.get("paths", {}).values():
        for method, op in operations.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            wanted = []
            if "health" not in op.get("tags", []):
                wanted += ["401", "403"]
            if "requestBody" in op or method in ("post", "put", "patch"):
                wanted += ["400", "413", "422"]
            if op.get("parameters"):
                wanted += ["422"]
            if any(p.get("name") == "Idempotency-Key" for p in op.get("parameters", [])):
                wanted += ["409"]
            for status in wanted:
                description, content = _STATUSES[status]
                if status == "422" and status in responses:
                    responses[status] = {"description": description, "content": content}
                responses.setdefault(status, {"description": description, "content": content})
    return schema
