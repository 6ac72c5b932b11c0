"""``hub run portal``: the monthly placement feed for authority staff, and the national and
prefectural roll-ups for the ministry; server-rendered, Japanese first.

Built on ``infra.http.create_app`` (``/healthz``, ``/readyz``, ``/metrics``) with the page conventions
of ``hub.web.pages`` (no script, CSP, signed sessions, CSRF on forms, no personal data in addresses:
paths carry the authority code, the month and the revision only). This process opens the consented
individual list, so it holds the master key like the feed API; every look at the list is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from consumers.feed.delivery import FeedNotFound
from consumers.feed.rollup import RollupNotFound
from hub.portal.access import reader_by_id
from hub.portal.rollup_view import through_label
from hub.portal.view import category, retention_label
from hub.web import i18n
from hub.web.charts import bar_chart, month_bars, stacked_bars
from hub.web.pages import LoginRequired, Sessions, install_page_conventions, session_revoked
from infra.auth import AuthError, Principal
from infra.codecs.field_errors import client_errors, from_request_errors
from infra.config import Settings, get_settings
from infra.http import attach_keystore, create_app

HERE = Path(__file__).parent
COOKIE = "ittai_portal"

templates = Jinja2Templates(directory=HERE / "templates")
i18n.install(templates.env)
templates.env.filters["through_label"] = through_label
templates.env.filters["retention_label"] = retention_label
templates.env.globals.update(
    month_bars=month_bars, bar_chart=bar_chart, stacked_bars=stacked_bars, category=category
)


@dataclass
class Portal:
    settings: Settings
    sessions: Sessions


def create_portal_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()

    async def startup(app: FastAPI) -> None:
        await attach_keystore(app)
        app.state.portal = Portal(
            s,
            Sessions(
                s.portal_session_secret, salt="ittai-portal-session", max_age_s=s.portal_session_max_age_s
            ),
        )

    app = create_app(
        "Ittai Hub feed portal",
        description="The monthly placement feed for authority staff and the roll-ups for the ministry "
        "(Japanese first, English switchable).",
        settings=s,
        on_startup=startup,
        follows_erasures=True,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    install_page_conventions(app, cookie_secure=s.portal_cookie_secure)

    @app.exception_handler(AuthError)
    async def _refused(request: Request, exc: AuthError) -> HTMLResponse:
        return error_page(request, exc.status, exc.reason)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        # Field and rule only, by the JSON APIs' renderer: what was sent is never echoed back.
        shown = client_errors(from_request_errors(exc.errors()))
        return error_page(request, 422, "; ".join(e["message"] for e in shown["errors"]))

    @app.exception_handler(FeedNotFound)
    async def _missing(request: Request, _: FeedNotFound) -> HTMLResponse:
        return error_page(request, 404, i18n.gettext("No feed has been built for this month yet."))

    @app.exception_handler(RollupNotFound)
    async def _no_rollup(request: Request, _: RollupNotFound) -> HTMLResponse:
        return error_page(request, 404, i18n.gettext("No roll-up has been built for this fiscal year yet."))

    from hub.portal import routes_feed, routes_ministry, routes_session

    routes_session.register(app)
    routes_feed.register(app)
    routes_ministry.register(app)
    return app


def portal(request: Request) -> Portal:
    p: Portal = request.app.state.portal
    return p


def language(request: Request) -> i18n.Lang:
    lang = i18n.negotiate(request, default="ja")  # Japanese first; the switch sets a cookie
    i18n.use(lang)
    return lang


async def reader(request: Request) -> Principal:
    """The authority or ministry user behind this request's session (else off to the login form)."""
    language(request)
    session = portal(request).sessions.read(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequired
    async with request.app.state.pool.acquire() as conn:
        principal = await reader_by_id(conn, session.client_id)
        if principal is not None and await session_revoked(conn, session):
            principal = None  # logged out: a copy of the cookie is no session
    if principal is None:
        raise LoginRequired
    request.state.csrf = session.csrf
    request.state.session = session
    request.state.principal = principal
    return principal


Reader = Annotated[Principal, Depends(reader)]


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    i18n.use(i18n.negotiate(request, default="ja"))
    return templates.TemplateResponse(
        request,
        template,
        {
            "who": getattr(request.state, "principal", None),
            "csrf": getattr(request.state, "csrf", ""),
            **({"here": request.url.path + (f"?{request.url.query}" if request.url.query else "")} | context),
        },
        status_code=status_code,
    )


def error_page(request: Request, status: int, reason: str) -> HTMLResponse:
    # "here" is the home page: the address asked for is not echoed back, not even in a link.
    return page(request, "error.html", status_code=status, status=status, reason=reason, here="/")


def download_response(data: bytes, media_type: str, filename: str, headers: dict[str, str]) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **headers},
    )
