"""The ministry's pages: the national and per-prefecture roll-up of a fiscal year (authorities and sites
by achievement class, placements by target group, the 連携指標), with charts and downloads.

The roll-ups are those ``hub feed rollup`` keeps (``consumers.feed.rollup``); the downloads are the
roll-up exporters of ``consumers.feed.exports`` (the same files as ``hub feed rollup --out`` and the
feed API's ``GET /rollups/{fy}``). Aggregates only: these pages open no feed and no person. Addresses
carry the fiscal year, the month counted through and the table's name only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consumers.feed.exports import rollup_csv, rollup_workbook
from consumers.feed.rollup import load_rollup
from domain.calendar import MONTH_PATTERN
from domain.ministry import TABLE_KEYS
from hub.portal import queries
from hub.portal.access import require_ministry
from hub.portal.app import download_response, page, reader
from hub.portal.downloads import XLSX
from hub.portal.rollup_view import (
    class_order,
    class_segments,
    fiscal_year_label,
    group_bars,
    rollup_tables,
    through_label,
    year_end,
)
from hub.web.i18n import gettext
from infra.auth import Principal

FiscalYear = Annotated[int, Path(ge=2011, le=2100, description="Fiscal year (年度), April to March")]
Through = Annotated[str | None, Query(pattern=MONTH_PATTERN)]
Table = Literal["authorities", "sites", "groups", "coordination"]


async def ministry(request: Request) -> Principal:
    """The ministry user behind this request's session; an authority's login is refused these pages."""
    principal = await reader(request)
    require_ministry(principal)
    return principal


Ministry = Annotated[Principal, Depends(ministry)]


def register(app: FastAPI) -> None:
    @app.get("/rollups", include_in_schema=False)
    async def latest_year(request: Request, who: Ministry) -> Response:
        async with request.app.state.pool.acquire() as conn:
            years = await queries.fiscal_years(conn)
        if not years:
            reason = gettext("No roll-up has been built yet (hub feed rollup --fy YEAR).")
            return page(request, "error.html", 404, status=404, reason=reason)
        return RedirectResponse(f"/rollups/{years[0]}", status_code=303)

    @app.get("/rollups/{fiscal_year}", response_class=HTMLResponse, include_in_schema=False)
    async def rollup_page(
        request: Request,
        who: Ministry,
        fiscal_year: FiscalYear,
        through: Through = None,
        prefectures: Annotated[Literal["with-figures", "all"], Query()] = "with-figures",
    ) -> HTMLResponse:
        async with request.app.state.pool.acquire() as conn:
            body = await load_rollup(conn, fiscal_year, through)
            years = await queries.fiscal_years(conn)
            built = await queries.rollup_months(conn, fiscal_year)
        built_at = next((b["built_at"] for b in built if b["through"] == body["through"]), None)
        context: dict[str, Any] = {
            "fiscal_year": fiscal_year,
            "title": fiscal_year_label(fiscal_year),
            "body": body,
            "years": [(y, fiscal_year_label(y)) for y in years],
            "built": built,
            "built_at": built_at,
            "through": through_label(body["through"]),
            "year_end": year_end(body["through"]),
            "every_prefecture": prefectures == "all",
            "tables": rollup_tables(body, every_prefecture=prefectures == "all"),
            "classes": [
                (gettext("Authorities"), class_segments(body, "authorities")),
                (gettext("Joint sites"), class_segments(body, "sites")),
            ],
            "groups": group_bars(body),
            "class_order": class_order(),
            "table_keys": list(TABLE_KEYS),
        }
        return page(request, "rollup.html", **context)

    @app.get("/rollups/{fiscal_year}/download", include_in_schema=False)
    async def rollup_download(
        request: Request,
        who: Ministry,
        fiscal_year: FiscalYear,
        through: Through = None,
        format: Annotated[Literal["csv", "xlsx"], Query()] = "xlsx",
        table: Annotated[Table, Query()] = "authorities",
        encoding: Annotated[Literal["utf-8", "cp932"], Query()] = "utf-8",
    ) -> Response:
        async with request.app.state.pool.acquire() as conn:
            body = await load_rollup(conn, fiscal_year, through)
        revision = str(body.get("revision", 1))
        stem = f"rollup_FY{fiscal_year}_{body['through']}_r{revision}"
        if format == "xlsx":
            return download_response(
                rollup_workbook(body), XLSX, f"{stem}.xlsx", {"X-Rollup-Revision": revision}
            )
        data, substituted = rollup_csv(body, table, encoding)
        charset = "shift_jis" if encoding == "cp932" else "utf-8"
        return download_response(
            data,
            f"text/csv; charset={charset}",
            f"{stem}_{table}{'_cp932' if encoding == 'cp932' else ''}.csv",
            {"X-Rollup-Revision": revision, "X-CP932-Substitutions": str(substituted)},
        )
