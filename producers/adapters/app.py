"""The two adapters as HTTP services: ``POST /v1/<family>`` (one event), ``/batch`` (many, atomically)
and ``/csv`` (a batch file), each authenticated, authorised and durable on 202.

Each adapter runs the outbox relay in its lifespan, so accepted events reach Kafka when the adapter is
the only thing running (the relay's advisory lock lets just one relay publish at a time).
"""

# No ``from __future__ import annotations``: FastAPI must see the handlers' dependency types as objects.

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, File, Header, Request, UploadFile
from fastapi.responses import Response
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from contracts.envelope import MODELS, PERSONAL_MODELS, Family
from infra.auth import AuthError, Principal, Role, authenticate, require_role
from infra.codecs.csv_columns import COLUMNS
from infra.codecs.csv_rows import FileError
from infra.codecs.field_errors import FieldError, client_errors
from infra.config import Settings, get_settings
from infra.crypto import KeyStore
from infra.http import JsonAnswer
from producers.adapters.authorization import FAMILIES, Adapter, check_client
from producers.adapters.service import Accepted, AdapterService, IdempotencyConflict, Rejected
from producers.outbox import OutboxRelay

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")

_DESCRIPTIONS = {
    Adapter.WELFARE: "Authority side (自治体). Authority client systems publish consent signed at the "
    "authority, referrals (送り込み) and retention follow-ups about their own sites.",
    Adapter.EMPLOYMENT: "Hello Work side (ハローワーク). Office systems (or the national system) publish "
    "registrations (求職申込), consent signed at Hello Work or the joint reception, placements and "
    "retention follow-ups about their own offices.",
}
_COMMON = (
    " A 202 means the event is durably in the outbox and will reach Kafka once. Send an "
    "`Idempotency-Key` header to make retries safe. Errors: 401 (who are you), 403 (not yours), "
    "409 (key reused for another body), 422 (which field broke which rule, with the value). "
    "Personal fields go in clear under `personal`; they are encrypted with the person's data key "
    "before they leave the adapter."
)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        out = {k: _inline(v, defs) for k, v in node.items()}
        if "properties" in out:  # the edge forbids unknown fields at every level, and says so
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def submission_schema(family: Family) -> dict[str, Any]:
    """The request body: the event contract with ``personal`` in clear, unknown fields forbidden."""
    schema = MODELS[family].model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})
    personal_model = PERSONAL_MODELS.get(family)
    if personal_model is not None:
        personal = personal_model.model_json_schema()
        defs |= personal.pop("$defs", {})
        personal["additionalProperties"] = False
        schema["properties"]["personal"] = personal
    schema["additionalProperties"] = False
    inlined: dict[str, Any] = _inline(schema, defs)
    return inlined


class CredentialCache:
    """Credentials verified in the last ``ttl_s`` seconds (default 1 s), so a stream of requests from one
    client costs one ``clients`` lookup per second instead of one per request.

    Revocation is not delayed by it where it matters: every commit re-reads its clients' revocation in
    the database before anything is written (the group commit's first read) and again, FOR SHARE, in its
    accepting statement (migration 035), and so does an idempotent replay, so a revoked credential never
    gets an event accepted or a replayed answer after its revocation commits; a commit's 401 drops the
    credential from the cache (``FamilyEndpoints._accept``).
    Within ``ttl_s`` of the revocation, a request that fails earlier (422, 403) may still get that answer
    instead of 401. Only successful verifications are kept, keyed by a hash of the header (no secret is
    stored); a CSV upload always verifies afresh. When an entry expires under a stream of requests, one
    lookup is made and the requests that arrive meanwhile wait for it (``verified``), instead of each
    concurrent request making its own (32 lookups a second at concurrency 32).
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._looking: dict[bytes, asyncio.Future[Principal]] = {}

    @staticmethod
    def _key(authorization: str) -> bytes:
        return hashlib.sha256(authorization.encode()).digest()

    async def verified(
        self, authorization: str | None, lookup: Callable[[], Awaitable[Principal]]
    ) -> Principal:
        """The cached principal, or the one ``lookup`` finds (one lookup at a time per header: a refusal
        is every waiting request's answer too)."""
        found = self.get(authorization)
        if found is not None:
            return found
        key = self._key(authorization or "")
        pending = self._looking.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled, not the lookup it waited for
            return await lookup()  # the lookup's own request was cancelled: look up for this one
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._looking[key] = future
        try:
            principal = await lookup()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._looking[key]
        future.set_result(principal)
        assert authorization is not None
        self.put(authorization, principal)
        return principal

    def get(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        entry = self._entries.get(self._key(authorization))
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def put(self, authorization: str, principal: Principal) -> None:
        if len(self._entries) >= self.MAX_ENTRIES:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
        self._entries[self._key(authorization)] = (time.monotonic() + self.ttl_s, principal)

    def forget(self, authorization: str | None) -> None:
        """Drop a credential the commit found revoked: its next request looks it up (and gets its 401)
        instead of being answered from the cache until the entry expires."""
        if authorization:
            self._entries.pop(self._key(authorization), None)


def _json(body: Any, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return JsonAnswer(orjson.dumps(body), status, headers)


_REPLAYED = [(b"idempotent-replayed", b"true")]


# --- who publishes: the credential checks every endpoint starts with ----------------------------------


async def verify(request: Request, authorization: str | None, *, cached: bool) -> Principal:
    """A publisher of this adapter: authenticated (through the app's ``CredentialCache`` when ``cached``),
    holding ``publish``, of an organisation on this adapter's side. A refusal is counted and answered
    by ``AdapterService.forbid``."""
    state = request.app.state
    try:
        # A credential verified within the cache's second is the usual case: no coroutine, no closure.
        principal = state.credentials.get(authorization) if cached else None
        if principal is None:
            principal = await _authenticated(state, authorization, cached=cached)
        require_role(principal, Role.PUBLISH)
        check_client(state.adapter, principal)
    except AuthError as exc:
        path: str = request.scope["path"]  # not request.url: building the URL cost more than the rest here
        family = path.split("/")[2] if path.count("/") >= 2 else "(none)"
        raise await state.service.forbid(family, exc) from None
    return principal


async def _authenticated(state: Any, authorization: str | None, *, cached: bool) -> Principal:
    """The credential looked up in the database (one lookup at a time per header when ``cached``), and
    kept in the app's ``CredentialCache``. Raises AuthError."""

    async def lookup() -> Principal:
        async with state.pool.acquire() as conn:
            return await authenticate(conn, authorization)

    if cached:
        verified: Principal = await state.credentials.verified(authorization, lookup)
        return verified
    principal = await lookup()
    assert authorization is not None
    state.credentials.put(authorization, principal)
    return principal


async def fresh_publisher(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    return await verify(request, authorization, cached=False)


async def uploader(request: Request) -> Principal:
    return await verify(request, request.headers.get("authorization"), cached=False)


FreshPublisher = Annotated[Principal, Depends(fresh_publisher)]


def idempotency_key(value: str | None) -> str | None:
    if value is not None and not _IDEMPOTENCY_KEY.fullmatch(value):
        raise Rejected(
            [FieldError("Idempotency-Key", "must be 1 to 200 visible ASCII characters", value, "format")]
        )
    return value


def _credential_and_key(request: Request) -> tuple[str | None, str | None]:
    """The ``Authorization`` and ``Idempotency-Key`` headers, as ``request.headers.get`` reads each (the
    first of its name, Latin-1), in one pass over the request's headers instead of one per header."""
    authorization = key = None
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"idempotency-key" and key is None:
            key = value.decode("latin-1")
    return authorization, key


async def read_json(request: Request) -> Any:
    try:
        return orjson.loads(await _body(request))
    except orjson.JSONDecodeError as exc:
        raise Rejected([FieldError("(body)", f"not valid JSON: {exc}", None, "json")]) from None


async def _body(request: Request) -> bytes:
    """The request's body as ``request.body()`` reads it (through the same ``receive``, so the body
    limits apply as it arrives; ``ClientDisconnect`` if the client goes), without its stream's async
    generator: a single-event body is one message, and the generator's layers cost more than reading it."""
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


# --- one family's endpoints ----------------------------------------------------------------------------


class FamilyEndpoints:
    """The handlers of ``/v1/<family>``, ``/v1/<family>/batch`` and ``/v1/<family>/csv``, with the family
    bound. ``publish_one``, ``publish_batch`` and ``import_csv_first_authenticated`` serve the requests;
    ``import_csv`` is the FastAPI route that describes the upload in the OpenAPI (see ``_add_routes``)."""

    def __init__(self, family: Family) -> None:
        self.family = family

    async def publish_one(self, request: Request) -> Response:
        authorization, key = _credential_and_key(request)
        principal = await verify(request, authorization, cached=True)
        key = idempotency_key(key)
        body = await read_json(request)
        result = await self._accept(request, principal, [body], key, batch=False)
        headers = _REPLAYED if result.replayed else None
        return _json({"event_id": result.event_ids[0], "replayed": result.replayed}, 202, headers)

    async def publish_batch(self, request: Request) -> Response:
        authorization, key = _credential_and_key(request)
        principal = await verify(request, authorization, cached=True)
        key = idempotency_key(key)
        body = await read_json(request)
        if not isinstance(body, list) or not 1 <= len(body) <= 1000:
            raise Rejected(
                [FieldError("(body)", "expected a JSON array of 1 to 1000 events", None, "batch size")]
            )
        result = await self._accept(request, principal, body, key, batch=True)
        headers = _REPLAYED if result.replayed else None
        return _json({"event_ids": result.event_ids, "replayed": result.replayed}, 202, headers)

    async def _accept(
        self, request: Request, principal: Principal, bodies: list[Any], key: str | None, *, batch: bool
    ) -> Accepted:
        service: AdapterService = request.app.state.service
        try:
            return await service.accept_events(principal, self.family, bodies, key, batch=batch)
        except AuthError as exc:
            if exc.status == 401:  # revoked since the credential was cached: the cache forgets it
                request.app.state.credentials.forget(request.headers.get("authorization"))
            raise

    async def import_csv(
        self, request: Request, principal: FreshPublisher, file: Annotated[UploadFile, File()]
    ) -> Response:
        return await self._import(request, principal, file)

    async def import_csv_first_authenticated(self, request: Request) -> Response:
        # Served ahead of the FastAPI route (which stays for the OpenAPI description) because FastAPI
        # reads and parses a form body before it resolves dependencies: the credential is checked here
        # before a byte of the file is read (the body-size limit has already applied).
        principal = await uploader(request)
        form = await request.form(max_files=1, max_fields=10)
        file = form.get("file")
        if not isinstance(file, StarletteUploadFile):
            raise Rejected(
                [
                    FieldError(
                        "file",
                        "expected multipart/form-data with the file in a part named 'file'",
                        None,
                        "file",
                    )
                ]
            )
        return await self._import(request, principal, file)

    async def _import(self, request: Request, principal: Principal, file: StarletteUploadFile) -> Response:
        service: AdapterService = request.app.state.service
        try:
            # The upload as Starlette spooled it (to disk past 1 MB): read a block at a time, not whole.
            summary = await service.import_csv(principal, self.family, file.file)
        except FileError as exc:
            error = FieldError("(file)", str(exc), None, "file")
            await service.record_rejections(self.family.value, [(error.operator_rule, error.rule_class)])
            return _json({"errors": [error.for_client()]}, 422)
        return _json(summary.as_dict(), 202)


# The JSON endpoints take the bare request (headers read directly, body parsed once with orjson), so
# their headers are documented here rather than derived from parameters.
_JSON_HEADERS = [
    {
        "name": "Authorization",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^Bearer ith_[^.]+[.].+$"},
        "description": "Bearer ith_<client>.<secret>",
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"},
        "description": "Retry-safe key (1–200 visible ASCII characters), scoped by organisation",
    },
]


def _add_routes(app: FastAPI, family: Family) -> None:
    """A family's three endpoints. Each is served by a plain Starlette route ahead of a FastAPI route
    that remains for the OpenAPI description: the JSON endpoints take the bare request anyway, and
    FastAPI's per-request machinery (dependency solving, route context, query parsing) cost as much as
    validating the event; the CSV upload must check the credential before FastAPI reads the form. The
    app's exception handlers (401/403/409/422) apply to these routes the same way."""
    endpoints = FamilyEndpoints(family)
    path = f"/v1/{family.value}"
    schema = submission_schema(family)
    batch = {"type": "array", "items": schema, "minItems": 1, "maxItems": 1000}
    for suffix, endpoint, summary, body_schema, name in (
        ("", endpoints.publish_one, f"Publish one {family.value} event", schema, f"publish_{family.value}"),
        ("/batch", endpoints.publish_batch, f"Publish many {family.value} events, all or none", batch,
         f"publish_{family.value}_batch"),
    ):  # fmt: skip
        app.add_api_route(
            path + suffix,
            endpoint,
            methods=["POST"],
            status_code=202,
            tags=[family.value],
            summary=summary,
            openapi_extra={
                "parameters": _JSON_HEADERS,
                "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}},
            },
            name=name,
        )
    app.router.routes[0:0] = [
        Route(path, endpoints.publish_one, methods=["POST"], include_in_schema=False),
        Route(f"{path}/batch", endpoints.publish_batch, methods=["POST"], include_in_schema=False),
    ]
    columns = ", ".join(f"`{c.en}`/{c.ja}" for c in COLUMNS[family.value])
    app.add_api_route(
        f"{path}/csv",
        endpoints.import_csv,
        methods=["POST"],
        status_code=202,
        tags=[family.value],
        summary=f"Import a {family.value} batch file (CSV)",
        description=(
            "UTF-8 (with or without BOM) or CP932/Shift_JIS, CRLF or LF, a header row. Dates ISO or Japanese "
            "era (令和6年4月1日, R6.4.1). Valid rows are accepted, invalid rows reported by line; a row "
            f"already imported is a duplicate and creates nothing. Columns: {columns}."
        ),
        name=f"import_{family.value}_csv",
    )
    app.router.routes[0:0] = [
        Route(
            f"{path}/csv", endpoints.import_csv_first_authenticated, methods=["POST"], include_in_schema=False
        )
    ]


# --- the app -------------------------------------------------------------------------------------------


async def _start(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    keystore = KeyStore.from_settings(settings)
    app.state.service = AdapterService(app.state.adapter, settings, app.state.pool, keystore)
    if app.state.runs_relay:
        relay = OutboxRelay(settings, app.state.pool)
        app.state.relay = (
            relay,
            asyncio.create_task(relay.run(), name=f"{app.state.adapter.value}-outbox-relay"),
        )


async def _stop(app: FastAPI) -> None:
    if app.state.relay is None:
        return
    relay, task = app.state.relay
    await relay.stop_task(task, grace_s=2)


async def _rejected(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Rejected)
    return _json(client_errors(exc.errors), 422)


async def _conflict(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotencyConflict)
    return _json({"error": exc.reason}, 409)


def build_app(adapter: Adapter, settings: Settings | None = None, *, relay: bool | None = None) -> FastAPI:
    """``relay=False`` when another adapter in the same process already runs the outbox relay; by
    default the setting ``adapter_runs_relay`` decides."""
    from infra.http import create_app

    s = settings or get_settings()
    app = create_app(
        f"Ittai Hub {adapter.value} adapter",
        description=_DESCRIPTIONS[adapter] + _COMMON,
        settings=s,
        on_startup=_start,
        on_shutdown=_stop,
        lean_routes=True,  # the JSON and CSV endpoints are plain routes (``_add_routes``): see LeanRoutes
        follows_erasures=True,  # its key store forgets an erased person's key at once
    )
    app.state.adapter = adapter
    app.state.runs_relay = s.adapter_runs_relay if relay is None else relay
    app.state.relay = None  # (OutboxRelay, its task) while the app runs one
    app.state.credentials = CredentialCache()
    app.add_exception_handler(Rejected, _rejected)
    app.add_exception_handler(IdempotencyConflict, _conflict)
    for family in FAMILIES[adapter]:
        _add_routes(app, family)
    return app


def welfare_app(settings: Settings | None = None, *, relay: bool | None = None) -> FastAPI:
    return build_app(Adapter.WELFARE, settings, relay=relay)


def employment_app(settings: Settings | None = None, *, relay: bool | None = None) -> FastAPI:
    return build_app(Adapter.EMPLOYMENT, settings, relay=relay)
