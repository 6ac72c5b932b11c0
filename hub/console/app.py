"""The operator console: flows, lag, adapters, dead letters with redrive, feeds, consent, latency.

Built on ``infra.http.create_app`` (``/healthz``, ``/readyz``, ``/metrics``). Pages are server-rendered
(Jinja2, autoescaped) and run no script. This process never holds the master key: it imports nothing
that opens a sealed block, and shows envelope headers and counts only.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from consumers.monitoring import queries
from consumers.monitoring.deadletters import DeadLetterDesk
from consumers.monitoring.figures import ConsumerFigures, TopicFigures, group_letters, rates_between
from consumers.monitoring.kafka_probe import KafkaProbe
from consumers.monitoring.sampler import Sampler, register_collector
from consumers.monitoring.snapshot import RATE_WINDOWS_S, Snapshot, collect
from hub.console.session import COOKIE, LoginRequired, Sessions, operator_by_id, require_operator
from hub.web.charts import bar_chart, line_chart
from infra.auth import AuthError, Principal, authenticate
from infra.config import Settings, get_settings
from infra.http import create_app

HERE = Path(__file__).parent
PAGES = (
    ("/", "Overview"),
    ("/topics", "Topics"),
    ("/consumers", "Consumer groups"),
    ("/adapters", "Adapters"),
    ("/dead-letters", "Dead letters"),
    ("/feeds", "Feeds"),
    ("/consent", "Consent & latency"),
    ("/audit", "Audit"),
)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _series(topic: TopicFigures) -> list[tuple[datetime, float]]:
    return [(s.at, float(s.end_total)) for s in topic.samples]


def _lag_bars(consumer: ConsumerFigures) -> list[tuple[str, float]]:
    return [
        (f"{p.topic.rsplit('.', 2)[-2]} p{p.partition}", float(p.lag))
        for p in consumer.partitions
        if p.end or p.next_offset is not None
    ]


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(ago=_ago, time=_time, num=_num)
templates.env.globals.update(
    pages=PAGES,
    line_chart=line_chart,
    bar_chart=bar_chart,
    rates_between=rates_between,
    series=_series,
    lag_bars=_lag_bars,
)


@dataclasses.dataclass
class Console:
    settings: Settings
    sessions: Sessions
    probe: KafkaProbe
    desk: DeadLetterDesk
    sampler: Sampler
    task: asyncio.Task[None] | None = None


def create_console_app(settings: Settings | None = None, *, sample: bool = True) -> FastAPI:
    """The console app. ``sample=False`` leaves the background sampler off (tests call ``tick``)."""
    s = settings or get_settings()

    async def startup(app: FastAPI) -> None:
        probe = KafkaProbe(s.kafka_bootstrap)
        desk = DeadLetterDesk(s, app.state.pool, probe)
        console = Console(s, Sessions(s), probe, desk, Sampler(s, app.state.pool, probe, desk))
        register_collector()
        if sample:
            console.task = asyncio.create_task(console.sampler.run())
        app.state.console = console

    async def shutdown(app: FastAPI) -> None:
        console: Console = app.state.console
        console.sampler.stop()
        if console.task is not None:
            await console.task
        await console.desk.close()
        await console.probe.close()

    app = create_app(
        "Ittai Hub operator console",
        description="Flows, lag, dead letters, feeds and consent figures for operators. No personal data.",
        settings=s,
        on_startup=startup,
        on_shutdown=shutdown,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    _routes(app)
    return app


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def operator(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """The operator behind this request: a session cookie, or a bearer token for ``/api``."""
    console = _console(request)
    if authorization and request.url.path.startswith("/api/"):
        async with request.app.state.pool.acquire() as conn:
            principal = await authenticate(conn, authorization)
        require_operator(principal)
        return principal
    session = console.sessions.read(request.cookies.get(COOKIE))
    if session is None:
        if request.url.path.startswith("/api/"):
            raise AuthError(
                401, "missing credentials (bearer token of an operator client, or a console session)"
            )
        raise LoginRequired
    async with request.app.state.pool.acquire() as conn:
        principal_or_none = await operator_by_id(conn, session.client_id)
    if principal_or_none is None:
        raise LoginRequired
    request.state.csrf = session.csrf
    return principal_or_none


Operator = Annotated[Principal, Depends(operator)]


def _page(
    request: Request, template: str, operator: Principal, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {
            "operator": operator,
            "csrf": getattr(request.state, "csrf", ""),
            "namespace": _console(request).settings.topic_namespace,
            "now": datetime.now(UTC),
            "rate_windows": RATE_WINDOWS_S,
            **context,
        },
        status_code=status_code,
    )


# Pages that render the current snapshot of flows and counts: path → (template, title).
SNAPSHOT_PAGES = {
    "/": ("overview.html", "Overview"),
    "/topics": ("topics.html", "Topics"),
    "/consumers": ("consumers.html", "Consumer groups"),
    "/adapters": ("adapters.html", "Adapters"),
    "/feeds": ("feeds.html", "Feeds"),
    "/consent": ("consent.html", "Consent & latency"),
}


def _snapshot_page(template: str, title: str) -> Callable[..., Awaitable[HTMLResponse]]:
    async def page(request: Request, who: Operator) -> HTMLResponse:
        return _page(request, template, who, snap=await _snapshot(request), title=title)

    return page


async def _snapshot(request: Request) -> Snapshot:
    console = _console(request)
    return await collect(console.settings, request.app.state.pool, console.probe)


def _routes(app: FastAPI) -> None:
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": None})

    @app.post("/login", include_in_schema=False)
    async def login(
        request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
    ) -> Response:
        console = _console(request)
        claimed = token.strip()[4:].partition(".")[0][:32] if token.strip().startswith("ith_") else ""
        async with request.app.state.pool.acquire() as conn:
            try:
                principal = await authenticate(conn, f"Bearer {token.strip()}")
                require_operator(principal)
            except AuthError as exc:
                await queries.record_action(
                    conn,
                    client_id=claimed,
                    actor="?",
                    action="login_refused",
                    outcome=str(exc.status),
                    detail=exc.reason,
                )
                return templates.TemplateResponse(
                    request,
                    "login.html",
                    {"next": _safe_next(next), "error": exc.reason},
                    status_code=exc.status,
                )
            await queries.record_action(
                conn, client_id=principal.client_id, actor=principal.name, action="login", outcome="ok"
            )
        cookie, _ = console.sessions.issue(principal.client_id)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=console.sessions.max_age_s,
            httponly=True,
            samesite="strict",
            secure=console.settings.console_cookie_secure,
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request, who: Operator, csrf: Annotated[str, Form()] = "") -> Response:
        _check_csrf(request, csrf)
        async with request.app.state.pool.acquire() as conn:
            await queries.record_action(
                conn, client_id=who.client_id, actor=who.name, action="logout", outcome="ok"
            )
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    for path, (template, title) in SNAPSHOT_PAGES.items():
        app.add_api_route(
            path, _snapshot_page(template, title), response_class=HTMLResponse, include_in_schema=False
        )

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    async def audit(request: Request, who: Operator) -> HTMLResponse:
        async with request.app.state.pool.acquire() as conn:
            actions = await queries.recent_actions(conn)
        return _page(request, "audit.html", who, actions=actions, title="Audit")

    @app.get("/dead-letters", response_class=HTMLResponse, include_in_schema=False)
    async def dead_letters(request: Request, who: Operator) -> HTMLResponse:
        return await _letters_page(request, who, outcomes=[])

    @app.post("/dead-letters", response_class=HTMLResponse, include_in_schema=False)
    async def act_on_letters(
        request: Request,
        who: Operator,
        op: Annotated[str, Form()],
        csrf: Annotated[str, Form()] = "",
        selected: Annotated[list[int] | None, Form()] = None,
    ) -> HTMLResponse:
        _check_csrf(request, csrf)
        action, _, which = op.partition(":")
        if action not in ("redrive", "discard"):
            raise AuthError(400, f"op: unknown action {action!r} (expected redrive or discard)")
        if which == "selected":
            ids = list(selected or [])
        elif which.isdigit():
            ids = [int(which)]
        else:
            raise AuthError(400, f"op: expected '{action}:selected' or '{action}:<letter id>', got {op!r}")
        if not ids:
            return await _letters_page(request, who, outcomes=[], notice="Select at least one dead letter.")
        desk = _console(request).desk
        outcomes = await (desk.redrive(ids, who) if action == "redrive" else desk.discard(ids, who))
        return await _letters_page(request, who, outcomes=outcomes, action=action)

    @app.get("/api/snapshot", tags=["console"])
    async def api_snapshot(request: Request, who: Operator) -> JSONResponse:
        """The figures behind the pages, as JSON (operator bearer token or console session)."""
        return JSONResponse(snapshot_json(await _snapshot(request)))


async def _letters_page(
    request: Request, who: Principal, *, outcomes: list[Any], action: str = "", notice: str = ""
) -> HTMLResponse:
    console = _console(request)
    await console.desk.sync()
    async with request.app.state.pool.acquire() as conn:
        rows = await queries.open_letters(conn, console.settings.event_topics)
        counts = await queries.letter_counts(conn, console.settings.event_topics)
    return _page(
        request,
        "dead_letters.html",
        who,
        groups=group_letters(rows),
        counts=counts,
        outcomes=outcomes,
        action=action,
        notice=notice,
        title="Dead letters",
    )


def _check_csrf(request: Request, token: str) -> None:
    expected = getattr(request.state, "csrf", "")
    if not expected or token != expected:
        raise AuthError(403, "csrf: the form's token does not match this session (reload the page)")


def _safe_next(target: str) -> str:
    """Only local paths: a login link must not send the operator elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {
        "taken_at": snap.taken_at.isoformat(),
        "kafka_error": snap.kafka_error,
        "topics": [
            {
                "topic": t.topic,
                "end_total": t.end_total,
                "partitions": plain(t.partitions),
                **{f"rate_{int(w)}s": t.rate(w) for w in RATE_WINDOWS_S},
            }
            for t in snap.topics
        ],
        "consumers": [
            {
                "consumer": c.consumer,
                "total_lag": c.total_lag,
                "last_processed_at": plain(c.last_processed_at),
                "partitions": plain(c.partitions),
            }
            for c in snap.consumers
        ],
        "outbox": plain(snap.outbox),
        "rejections": plain(snap.rejections),
        "dead_letters": plain(snap.letters),
        "feeds": plain(snap.feeds),
        "consent": plain(snap.consent),
        "shared_view_latency": plain(snap.latency),
    }
