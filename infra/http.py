"""What every HTTP service of the hub shares: auth errors as JSON, health, readiness and metrics.

FastAPI (with uvicorn) is used because it gives typed request models on pydantic v2 — the same models
as the event contracts — and an OpenAPI description for free.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app

from infra import health
from infra.auth import AuthError, Principal, Role, authenticate, require_role
from infra.config import Settings, get_settings
from infra.crypto import KeyStore
from infra.db import TRANSIENT_DB_ERRORS
from infra.runner import prepare


def create_app(
    title: str,
    *,
    description: str,
    settings: Settings | None = None,
    on_startup: Callable[[FastAPI], Awaitable[None]] | None = None,
    on_shutdown: Callable[[FastAPI], Awaitable[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with ``app.state.pool`` (migrated database), ``app.state.settings``, ``/healthz``,
    ``/readyz`` and ``/metrics``."""
    s = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = s
        app.state.pool = await prepare(s)
        if on_startup:
            await on_startup(app)
        try:
            yield
        finally:
            if on_shutdown:
                await on_shutdown(app)
            await app.state.pool.close()

    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"])
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

    app.mount("/metrics", make_asgi_app())
    return app


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
