"""The operator console: flows, lag, adapters, dead letters with redrive, feeds, consent, latency.

Built on ``infra.http.create_app`` (``/healthz``, ``/readyz``, ``/metrics``) with the page conventions of
``hub.web.pages``. Pages are server-rendered (Jinja2, autoescaped), run no script, and speak Japanese or
English (``Accept-Language``, or the switch on every page; wording in the Babel catalogue of
``hub.web``), with times in JST. This process never holds the master key: it imports nothing that opens
a sealed block, and shows envelope headers and counts only. Routes are registered per resource in
``hub.console.routes``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from consumers.monitoring.deadletters import DeadLetterDesk
from consumers.monitoring.kafka_probe import KafkaProbe
from consumers.monitoring.sampler import Sampler, register_collector
from consumers.monitoring.snapshot import RATE_WINDOWS_S, Snapshot, collect
from domain.monitoring import ConsumerFigures, TopicFigures, rates_between
from hub.console.session import COOKIE, console_sessions, operator_by_id, require_operator
from hub.web import i18n
from hub.web.charts import bar_chart, line_chart
from hub.web.i18n import N_
from hub.web.pages import LoginRequired, Sessions, install_page_conventions, session_revoked
from infra.auth import AuthError, Principal, authenticate
from infra.config import Settings, get_settings
from infra.http import create_app
from infra.tracing import trace_id

HERE = Path(__file__).parent
PAGES = (
    ("/", N_("Overview")),
    ("/topics", N_("Topics")),
    ("/consumers", N_("Consumer groups")),
    ("/adapters", N_("Adapters")),
    ("/dead-letters", N_("Dead letters")),
    ("/feeds", N_("Feeds")),
    ("/consent", N_("Consent & latency")),
    ("/audit", N_("Audit")),
)


def _series(topic: TopicFigures) -> list[tuple[datetime, float]]:
    return [(s.at, float(s.end_total)) for s in topic.samples]


def _lag_bars(consumer: ConsumerFigures) -> list[tuple[str, float]]:
    return [
        (f"{p.topic.rsplit('.', 2)[-2]} p{p.partition}", float(p.lag))
        for p in consumer.partitions
        if p.end or p.next_offset is not None
    ]


templates = Jinja2Templates(directory=HERE / "templates")
i18n.install(templates.env)
templates.env.filters.update(time=i18n.jst)
templates.env.globals.update(
    pages=PAGES,
    line_chart=line_chart,
    bar_chart=bar_chart,
    rates_between=rates_between,
    series=_series,
    lag_bars=_lag_bars,
    trace_id=trace_id,  # a dead letter's trace id, to find its request in a tracing backend
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
        probe = KafkaProbe(s)
        desk = DeadLetterDesk(s, app.state.pool, probe)
        console = Console(s, console_sessions(s), probe, desk, Sampler(s, app.state.pool, probe, desk))
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
    install_page_conventions(app, cookie_secure=s.console_cookie_secure)

    from hub.console import routes

    routes.register(app)
    return app


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def language(request: Request) -> i18n.Lang:
    lang = i18n.negotiate(request, default=None)  # the switch, else Accept-Language
    i18n.use(lang)
    return lang


async def operator(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """The operator behind this request: a session cookie, or a bearer token for ``/api``."""
    language(request)
    console = console_of(request)
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
        if principal_or_none is not None and await session_revoked(conn, session):
            principal_or_none = None  # logged out: a copy of the cookie is no session
    if principal_or_none is None:
        raise LoginRequired
    request.state.csrf = session.csrf
    request.state.session = session
    return principal_or_none


Operator = Annotated[Principal, Depends(operator)]


def page(
    request: Request, template: str, operator: Principal | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    language(request)
    return templates.TemplateResponse(
        request,
        template,
        {
            "operator": operator,
            "csrf": getattr(request.state, "csrf", ""),
            "namespace": console_of(request).settings.topic_namespace,
            "now": datetime.now(UTC),
            "rate_windows": RATE_WINDOWS_S,
            "here": request.url.path,
            **context,
        },
        status_code=status_code,
    )


async def snapshot(request: Request) -> Snapshot:
    console = console_of(request)
    return await collect(console.settings, request.app.state.pool, console.probe)


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
