"""Logging in and out of the portal, and where ``/`` goes."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hub.portal.access import require_reader
from hub.portal.app import COOKIE, Reader, language, page, portal
from hub.web.pages import check_csrf, logged_in, logged_out, revoke_session, safe_next
from infra.auth import AuthError, OrgKind, authenticate


def register(app: FastAPI) -> None:
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, next: str = "/") -> HTMLResponse:
        language(request)
        return page(request, "login.html", next=safe_next(next), error=None)

    @app.post("/login", include_in_schema=False)
    async def login(
        request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
    ) -> Response:
        language(request)
        async with request.app.state.pool.acquire() as conn:
            try:
                principal = await authenticate(conn, f"Bearer {token.strip()}")
                require_reader(principal)
            except AuthError as exc:
                return page(request, "login.html", exc.status, next=safe_next(next), error=exc.reason)
        p = portal(request)
        return logged_in(
            p.sessions, principal.client_id, COOKIE, next, secure=p.settings.portal_cookie_secure
        )

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request, who: Reader, csrf: Annotated[str, Form()] = "") -> Response:
        check_csrf(request, csrf)
        async with request.app.state.pool.acquire() as conn:
            await revoke_session(conn, request.state.session, portal(request).sessions.max_age_s)
        return logged_out(COOKIE)

    @app.get("/", include_in_schema=False)
    async def home(who: Reader) -> Response:
        if who.org_kind is OrgKind.MINISTRY:
            return RedirectResponse("/rollups", status_code=303)
        return RedirectResponse(f"/feed/{who.org_code}", status_code=303)
