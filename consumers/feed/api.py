"""HTTP download of an authority's own feed, and the ministry's roll-up (``hub run feed-api``).

Only a client of that authority holding the ``read`` role may fetch its feed; every attempt, granted or
refused, is written to ``feed_access_log`` (who, organisation, whom, fields, purpose, when). The
roll-up (aggregates only) is for ministry clients (org kind ``ministry``) with the ``read`` role.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from consumers.feed.delivery import (
    INDIVIDUAL_FIELDS,
    Delivery,
    Encoding,
    FeedNotFound,
    aggregates_rows,
    deliver,
    individual_rows,
    record_access,
    to_csv,
    to_json,
)
from consumers.feed.exports import rollup_csv, rollup_workbook
from consumers.feed.rollup import RollupNotFound, load_rollup
from contracts.types import INT32_MAX, PRINTABLE_PATTERN
from domain.calendar import MONTH_PATTERN, DateFormatError, parse_month
from infra.auth import AuthError, OrgKind, Principal, Role
from infra.config import Settings
from infra.http import attach_keystore, create_app, requires

ReadingPrincipal = Annotated[Principal, Depends(requires(Role.READ))]
EncodingQuery = Annotated[Encoding, Query()]

router = APIRouter()


@router.get("/feeds/{authority}/{month}", tags=["feed"])
async def download(
    request: Request,
    authority: Annotated[str, Path(pattern=r"^[0-9]{6}$", description="Local government code")],
    month: Annotated[str, Path(pattern=MONTH_PATTERN, description="YYYY-MM")],
    principal: ReadingPrincipal,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    part: Annotated[Literal["aggregates", "individuals"], Query()] = "aggregates",
    encoding: EncodingQuery = "utf-8",
    revision: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    purpose: Annotated[
        str, Query(min_length=1, max_length=200, pattern=PRINTABLE_PATTERN)
    ] = "monthly placement results",
) -> Response:
    try:
        parse_month(month)
    except DateFormatError as exc:
        return JSONResponse({"error": f"month: {exc}"}, status_code=422)
    personal = format == "json" or part == "individuals"
    fields = list(INDIVIDUAL_FIELDS) if personal else ["aggregates"]
    async with request.app.state.pool.acquire() as conn:
        if not principal.covers_authority(authority):
            await record_access(
                conn, client_id=principal.client_id, organisation=principal.organisation,
                authority=authority, month=month, revision=revision, fields=fields, purpose=purpose,
                outcome="denied",
            )  # fmt: skip
            raise AuthError(403, f"client {principal.client_id} ({principal.organisation}) may only read "
                                 "its own authority's feed")  # fmt: skip
        try:
            delivery = await deliver(conn, request.app.state.keystore, authority, month, revision)
        except FeedNotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        await record_access(
            conn, client_id=principal.client_id, organisation=principal.organisation, authority=authority,
            month=month, revision=delivery.body["revision"], fields=fields, purpose=purpose,
            outcome="granted", person_keys=delivery.person_keys if personal else [],
        )  # fmt: skip
    if format == "json":
        return JSONResponse(to_json(delivery), headers={"X-Feed-Revision": str(delivery.body["revision"])})
    return _feed_csv(delivery, authority, month, part, encoding)


def _feed_csv(delivery: Delivery, authority: str, month: str, part: str, encoding: Encoding) -> Response:
    rev = delivery.body["revision"]
    rows = aggregates_rows(delivery.body) if part == "aggregates" else individual_rows(delivery)
    data, substituted = to_csv(rows, encoding)
    filename = f"feed_{authority}_{month}_r{rev}_{part}.csv"
    headers = {
        "X-Feed-Revision": str(rev),
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-CP932-Substitutions": str(substituted),
    }
    return Response(data, media_type=_csv_media(encoding), headers=headers)


def _csv_media(encoding: str) -> str:
    return f"text/csv; charset={'shift_jis' if encoding == 'cp932' else 'utf-8'}"


@router.get("/rollups/{fiscal_year}", tags=["ministry"])
async def rollup(
    request: Request,
    fiscal_year: Annotated[int, Path(ge=2011, le=2100)],
    principal: ReadingPrincipal,
    through: Annotated[str | None, Query(pattern=MONTH_PATTERN)] = None,
    format: Annotated[Literal["json", "csv", "xlsx"], Query()] = "json",
    table: Annotated[Literal["authorities", "sites", "groups", "coordination"], Query()] = "authorities",
    encoding: EncodingQuery = "utf-8",
) -> Response:
    """The national and per-prefecture roll-up of a fiscal year, in the report's tables."""
    if principal.org_kind is not OrgKind.MINISTRY:
        raise AuthError(403, f"client {principal.client_id} ({principal.organisation}) is not a ministry "
                             "client: the roll-up is for the ministry")  # fmt: skip
    async with request.app.state.pool.acquire() as conn:
        try:
            body = await load_rollup(conn, fiscal_year, through)
        except RollupNotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
    headers = {"X-Rollup-Revision": str(body.get("revision", 1))}
    stem = f"rollup_FY{fiscal_year}_{body['through']}"
    if format == "json":
        return JSONResponse(body, headers=headers)
    if format == "xlsx":
        headers["Content-Disposition"] = f'attachment; filename="{stem}.xlsx"'
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        return Response(rollup_workbook(body), media_type=media, headers=headers)
    data, _ = rollup_csv(body, table, encoding)
    headers["Content-Disposition"] = f'attachment; filename="{stem}_{table}.csv"'
    return Response(data, media_type=_csv_media(encoding), headers=headers)


def create_feed_app(settings: Settings | None = None) -> FastAPI:
    app = create_app(
        "Ittai Hub placement feed",
        description="Monthly placement feed per authority: aggregates with disclosure control and the "
        "consented individual list.",
        settings=settings,
        on_startup=attach_keystore,
        follows_erasures=True,
    )
    app.include_router(router)
    return app
