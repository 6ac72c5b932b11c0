"""The feed pages: a month's revision with its history and changes, tables, indicators and the chart of
the year; the consented individual list; downloads. Every look is written to the feed access log
(aggregates, or the individual list with the people it showed), and so is every refusal."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import asyncpg
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consumers.feed.delivery import INDIVIDUAL_FIELDS, Delivery, deliver, load_revision, record_access
from domain.calendar import DateFormatError, parse_month
from domain.feed import shift_month
from hub.portal import downloads, queries
from hub.portal.access import feed_refusal
from hub.portal.app import Reader, download_response, page
from hub.portal.view import change_rows, group_tables, group_views, indicator_rows, target_rows, yearly_series
from hub.web.i18n import gettext
from infra.auth import AuthError, Principal

PURPOSE = "feed portal: monthly placement results"
AGGREGATES = ("aggregates",)
_CODE = re.compile(r"[0-9]{6}")  # ASCII only: \d would take full-width digits (P1)
Revision = Annotated[int | None, Query(ge=1, le=100_000)]


def _checked(authority: str, month: str) -> str:
    """Refuse malformed addresses naming the part and the rule, never echoing what was sent."""
    if not _CODE.fullmatch(authority):
        raise AuthError(422, gettext("authority: expected a 6-digit local government code"))
    try:
        return str(parse_month(month))
    except DateFormatError:
        # One answer for every rule parse_month has (spelling, ASCII digits, the programme's years).
        raise AuthError(
            422,
            gettext(
                "month: expected a month written YYYY-MM in ASCII digits, 2000-01 .. 2099-12, e.g. 2025-05"
            ),
        ) from None


async def _scoped(
    conn: asyncpg.Connection,
    who: Principal,
    authority: str,
    month: str,
    revision: int | None,
    fields: tuple[str, ...],
) -> None:
    """Only the user's own authority; a request for another is recorded as denied and refused."""
    if who.covers_authority(authority):
        return
    await record_access(
        conn, client_id=who.client_id, organisation=who.organisation, authority=authority, month=month,
        revision=revision, fields=fields, purpose=PURPOSE, outcome="denied",
    )  # fmt: skip
    raise AuthError(403, feed_refusal(who))


async def _granted(
    conn: asyncpg.Connection, who: Principal, authority: str, month: str, revision: int,
    fields: tuple[str, ...], person_keys: list[str] | None = None,
) -> None:  # fmt: skip
    await record_access(
        conn, client_id=who.client_id, organisation=who.organisation, authority=authority, month=month,
        revision=revision, fields=fields, purpose=PURPOSE, outcome="granted", person_keys=person_keys or [],
    )  # fmt: skip


def register(app: FastAPI) -> None:
    @app.get("/feed/{authority}", include_in_schema=False)
    async def latest_month(request: Request, who: Reader, authority: str) -> Response:
        if not who.covers_authority(authority):
            raise AuthError(403, feed_refusal(who))
        async with request.app.state.pool.acquire() as conn:
            months = await queries.months(conn, authority)
        if not months:
            return page(request, "error.html", 404, status=404, reason=gettext("No feed has been built yet."))
        return RedirectResponse(f"/feed/{authority}/{months[0]}", status_code=303)

    @app.get("/feed/{authority}/{month}", response_class=HTMLResponse, include_in_schema=False)
    async def feed_month(
        request: Request, who: Reader, authority: str, month: str, revision: Revision = None
    ) -> HTMLResponse:
        month = _checked(authority, month)
        ym = parse_month(month)
        window = [str(shift_month(ym, k)) for k in range(-11, 1)]
        async with request.app.state.pool.acquire() as conn:
            await _scoped(conn, who, authority, month, revision, AGGREGATES)
            row = await load_revision(conn, authority, month, revision)
            history = await queries.revisions(conn, authority, month)
            months = await queries.months(conn, authority)
            bodies = await queries.latest_bodies(conn, authority, window)
            await _granted(conn, who, authority, month, row["revision"], AGGREGATES)
        body = row["body"]
        return page(
            request,
            "feed.html",
            authority=authority,
            month=month,
            body=body,
            revision=row["revision"],
            latest=history[0]["revision"],
            built_at=row["built_at"],
            history=history,
            months=months,
            groups=group_views(body),
            indicators=indicator_rows(body),
            changes=change_rows(body.get("changes", [])),
            series=yearly_series(window, bodies),
            targets=target_rows(body),
            group_tables=group_tables(body),
        )

    @app.get("/feed/{authority}/{month}/individuals", response_class=HTMLResponse, include_in_schema=False)
    async def individuals(
        request: Request, who: Reader, authority: str, month: str, revision: Revision = None
    ) -> HTMLResponse:
        month = _checked(authority, month)
        async with request.app.state.pool.acquire() as conn:
            await _scoped(conn, who, authority, month, revision, INDIVIDUAL_FIELDS)
            delivery = await deliver(conn, request.app.state.keystore, authority, month, revision)
            rev = delivery.body["revision"]
            await _granted(conn, who, authority, month, rev, INDIVIDUAL_FIELDS, delivery.person_keys)
        return page(
            request, "individuals.html", authority=authority, month=month, revision=rev, delivery=delivery
        )

    _register_downloads(app)


def _register_downloads(app: FastAPI) -> None:
    @app.get("/feed/{authority}/{month}/download", include_in_schema=False)
    async def download(
        request: Request,
        who: Reader,
        authority: str,
        month: str,
        part: Annotated[Literal["aggregates", "individuals"], Query()] = "aggregates",
        format: Annotated[Literal["csv", "xlsx"], Query()] = "xlsx",
        encoding: Annotated[Literal["utf-8", "cp932"], Query()] = "utf-8",
        revision: Revision = None,
    ) -> Response:
        month = _checked(authority, month)
        fields = INDIVIDUAL_FIELDS if part == "individuals" else AGGREGATES
        async with request.app.state.pool.acquire() as conn:
            await _scoped(conn, who, authority, month, revision, fields)
            if part == "individuals":
                delivery = await deliver(conn, request.app.state.keystore, authority, month, revision)
            else:  # aggregates only: nothing to open
                delivery = Delivery(
                    body=dict((await load_revision(conn, authority, month, revision))["body"])
                )
            rev = delivery.body["revision"]
            await _granted(conn, who, authority, month, rev, fields, delivery.person_keys)
        stem = f"feed_{authority}_{month}_r{rev}_{part}"
        if format == "xlsx":
            return download_response(
                downloads.xlsx_file(delivery, part),
                downloads.XLSX,
                f"{stem}.xlsx",
                {"X-Feed-Revision": str(rev)},
            )
        data, substituted = downloads.csv_file(delivery, part, encoding)
        charset = "shift_jis" if encoding == "cp932" else "utf-8"
        return download_response(
            data,
            f"text/csv; charset={charset}",
            f"{stem}{'_cp932' if encoding == 'cp932' else ''}.csv",
            {"X-Feed-Revision": str(rev), "X-CP932-Substitutions": str(substituted)},
        )
