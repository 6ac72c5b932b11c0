"""The console's routes, registered per resource: session, snapshot pages, audit, dead letters, API."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import Field

from consumers.monitoring import queries
from domain.monitoring import group_letters
from hub.console.app import COOKIE, Operator, console_of, language, page, snapshot, snapshot_json
from hub.console.session import require_operator
from hub.web.i18n import N_, gettext
from hub.web.pages import check_csrf, logged_in, logged_out, revoke_session, safe_next
from infra.auth import AuthError, Principal, authenticate

# Pages that render the current snapshot of flows and counts: path → (template, title).
SNAPSHOT_PAGES = {
    "/": ("overview.html", N_("Overview")),
    "/topics": ("topics.html", N_("Topics")),
    "/consumers": ("consumers.html", N_("Consumer groups")),
    "/adapters": ("adapters.html", N_("Adapters")),
    "/feeds": ("feeds.html", N_("Feeds")),
    "/consent": ("consent.html", N_("Consent & latency")),
}


_CLAIMED = re.compile(r"ith_([0-9a-f]{1,32})[.]")


def register(app: FastAPI) -> None:
    _session_routes(app)
    _snapshot_routes(app)
    _audit_routes(app)
    _dead_letter_routes(app)
    _api_routes(app)


def _session_routes(app: FastAPI) -> None:
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return page(request, "login.html", None, next=safe_next(next), error=None)

    @app.post("/login", include_in_schema=False)
    async def login(
        request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
    ) -> Response:
        language(request)
        console = console_of(request)
        # Only a client id's shape is recorded: the field is the visitor's to fill with anything.
        claimed = m.group(1) if (m := _CLAIMED.match(token.strip())) else ""
        async with request.app.state.pool.acquire() as conn:
            try:
                principal = await authenticate(conn, f"Bearer {token.strip()}")
                require_operator(principal)
            except AuthError as exc:
                await queries.record_action(conn, client_id=claimed, actor="?", action="login_refused",
                                            outcome=str(exc.status), detail=exc.reason)  # fmt: skip
                return page(request, "login.html", None, exc.status, next=safe_next(next), error=exc.reason)
            await queries.record_action(
                conn, client_id=principal.client_id, actor=principal.name, action="login", outcome="ok"
            )
        return logged_in(
            console.sessions, principal.client_id, COOKIE, next, secure=console.settings.console_cookie_secure
        )

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request, who: Operator, csrf: Annotated[str, Form()] = "") -> Response:
        check_csrf(request, csrf)
        async with request.app.state.pool.acquire() as conn:
            await revoke_session(conn, request.state.session, console_of(request).sessions.max_age_s)
            await queries.record_action(
                conn, client_id=who.client_id, actor=who.name, action="logout", outcome="ok"
            )
        return logged_out(COOKIE)


def _snapshot_page(template: str, title: str) -> Callable[..., Awaitable[HTMLResponse]]:
    async def snapshot_page(request: Request, who: Operator) -> HTMLResponse:
        return page(request, template, who, snap=await snapshot(request), title=title)

    return snapshot_page


def _snapshot_routes(app: FastAPI) -> None:
    for path, (template, title) in SNAPSHOT_PAGES.items():
        app.add_api_route(
            path, _snapshot_page(template, title), response_class=HTMLResponse, include_in_schema=False
        )


def _audit_routes(app: FastAPI) -> None:
    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    async def audit(request: Request, who: Operator) -> HTMLResponse:
        async with request.app.state.pool.acquire() as conn:
            actions = await queries.recent_actions(conn)
        return page(request, "audit.html", who, actions=actions, title=N_("Audit"))


# A dead letter's id as the form sends it: a bigint of at most 18 digits, as ``op``'s single id (a larger one
# overflowed the database's bigint: a 500), and no more of them than the page lists (``open_letters``).
LetterId = Annotated[int, Field(ge=1, le=10**18 - 1)]
LETTERS_SHOWN = 500


def _dead_letter_routes(app: FastAPI) -> None:
    @app.get("/dead-letters", response_class=HTMLResponse, include_in_schema=False)
    async def dead_letters(request: Request, who: Operator) -> HTMLResponse:
        return await _letters_page(request, who, outcomes=[])

    @app.post("/dead-letters", response_class=HTMLResponse, include_in_schema=False)
    async def act_on_letters(
        request: Request,
        who: Operator,
        op: Annotated[str, Form()],
        csrf: Annotated[str, Form()] = "",
        selected: Annotated[list[LetterId] | None, Form(max_length=LETTERS_SHOWN)] = None,
    ) -> HTMLResponse:
        check_csrf(request, csrf)
        action, _, which = op.partition(":")
        if action not in ("redrive", "discard"):
            raise AuthError(400, "op: unknown action (expected redrive or discard)")
        if which == "selected":
            ids = list(selected or [])
        elif which.isascii() and which.isdigit() and len(which) <= 18:  # a bigint id; isdigit() takes ² and ٣
            ids = [int(which)]
        else:
            raise AuthError(400, f"op: expected '{action}:selected' or '{action}:<letter id>'")
        if not ids:
            notice = gettext("Select at least one dead letter.")
            return await _letters_page(request, who, outcomes=[], notice=notice)
        desk = console_of(request).desk
        outcomes = await (desk.redrive(ids, who) if action == "redrive" else desk.discard(ids, who))
        return await _letters_page(request, who, outcomes=outcomes, action=action)


async def _letters_page(
    request: Request, who: Principal, *, outcomes: list[Any], action: str = "", notice: str = ""
) -> HTMLResponse:
    console = console_of(request)
    await console.desk.sync()
    async with request.app.state.pool.acquire() as conn:
        rows = await queries.open_letters(conn, console.settings.event_topics)
        counts = await queries.letter_counts(conn, console.settings.event_topics)
    return page(request, "dead_letters.html", who, groups=group_letters(rows), counts=counts,
                outcomes=outcomes, action=action, notice=notice, title=N_("Dead letters"))  # fmt: skip


def _api_routes(app: FastAPI) -> None:
    @app.get("/api/snapshot", tags=["console"])
    async def api_snapshot(request: Request, who: Operator) -> JSONResponse:
        """The figures behind the pages, as JSON (operator bearer token or console session)."""
        return JSONResponse(snapshot_json(await snapshot(request)))
