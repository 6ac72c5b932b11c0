"""HTTP reads of the shared view: scoped to the caller's organisation, limited to one purpose, recorded.

Every read of personal data — granted or refused — adds a row to ``sv_access_log`` (who, which
organisation, whom, which fields, purpose, when) in the same transaction that reads the data, so there
is no read without its record. ``GET /persons/{key}/access-history`` returns a person's exchange
history, as the My Number portal (マイナポータル) shows citizens theirs.

Search takes its terms in a POST body: a name is personal data and must not end up in URLs, proxies'
logs or the access log. Refusals say which rule refused, never a personal value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from consumers import registers
from consumers.shared_view import store
from consumers.shared_view.erasure import erase_person
from consumers.shared_view.handler import today_jst
from consumers.shared_view.store import VIEW_FIELDS, view_from_row
from contracts.types import INT32_MAX, PRINTABLE_PATTERN, JobSeekerNumber
from domain.agreements import Registers
from domain.consent import ConsentRecord, Scope
from domain.shared_view import PersonView, Reader, ReaderKind, as_disclosed, decide_disclosure, disclose
from infra.auth import OrgKind, Principal, Role
from infra.config import Settings
from infra.http import attach_keystore, create_app, current_principal, requires
from infra.signing import erasure_signer_if_held

PersonKeyPath = Annotated[
    str, Path(pattern=r"^[0-9a-f]{32}$", description="Pseudonymous person key (32 hex)")
]
PurposeQuery = Annotated[
    Scope, Query(description="Why you read: one of the consent scopes; the answer carries its fields only")
]
MAX_PAGE = 200
_COLUMNS = ", ".join(VIEW_FIELDS)  # what every read selects from sv_persons
# Module-level aliases: with postponed annotations FastAPI resolves them from the module's globals.
ReadingPrincipal = Annotated[Principal, Depends(requires(Role.READ))]
AnyPrincipal = Annotated[Principal, Depends(current_principal)]
OperatingPrincipal = Annotated[Principal, Depends(requires(Role.OPERATE))]


class SearchRequest(BaseModel):
    """At least one term. Names match as substrings of the name or its kana."""

    model_config = ConfigDict(
        extra="forbid",
        # "at least one term", said in the schema: a term is present when it is a string
        json_schema_extra={
            "anyOf": [
                {"required": [term], "properties": {term: {"type": "string"}}}
                for term in ("name", "job_seeker_number", "case_number")
            ]
        },
    )
    purpose: Scope
    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=PRINTABLE_PATTERN)
    job_seeker_number: JobSeekerNumber | None = None
    case_number: str | None = Field(default=None, min_length=1, max_length=40, pattern=PRINTABLE_PATTERN)
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)


def reader_of(principal: Principal) -> Reader | None:
    if principal.org_kind is OrgKind.AUTHORITY:
        return Reader(ReaderKind.AUTHORITY, principal.org_code)
    if principal.org_kind is OrgKind.OFFICE:
        return Reader(ReaderKind.OFFICE, principal.org_code)
    if principal.org_kind is OrgKind.HELLO_WORK_NATIONAL:
        return Reader(ReaderKind.NATIONAL, "*")
    return None  # operators never read personal data


def is_operator(principal: Principal) -> bool:
    """Erasure and access-history powers: an operator organisation with the ``operate`` role — not any
    client that happens to carry the role."""
    return principal.org_kind is OrgKind.OPERATOR and Role.OPERATE in principal.roles


def _scope_filter(reader: Reader, first: int) -> tuple[str, list[Any]]:
    """SQL narrowing candidates to the reader's own, consenting people (the domain decides again)."""
    a, b = f"${first}", f"${first + 1}"
    if reader.kind is ReaderKind.AUTHORITY:
        sql = f"(authority = {a} OR referring_authorities ? {a}) AND recipient_authorities ? {a} AND scopes ? {b}"
        return sql, [reader.code]
    if reader.kind is ReaderKind.OFFICE:
        return f"office = {a} AND recipient_offices ? {a} AND scopes ? {b}", [reader.code]
    return f"office IS NOT NULL AND recipient_offices ? office AND {a}::text IS NOT NULL AND scopes ? {b}", [
        "*"
    ]


async def record_reads(
    conn: asyncpg.Connection,
    principal: Principal,
    action: str,
    purpose: str,
    entries: Sequence[tuple[str, Sequence[str], str, str]],
) -> None:
    """entries: (person_key, fields, outcome, reason)."""
    if not entries:
        return
    await conn.executemany(
        "INSERT INTO sv_access_log (client_id, client_name, organisation, person_key, action, purpose, fields, "
        "outcome, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            (
                principal.client_id,
                principal.name,
                principal.organisation,
                pk,
                action,
                purpose,
                list(f),
                out,
                why,
            )
            for pk, f, out, why in entries
        ],
    )


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


async def registers_for(
    conn: asyncpg.Connection, reader: Reader, views: Sequence[PersonView]
) -> tuple[Registers, dict[str, list[ConsentRecord]]]:
    """What ``decide_disclosure`` needs besides the views: the registers (holders, fences, agreements) and
    the people's kept consent records."""
    people = [v.person_key for v in views]
    kind = "authority" if reader.kind is ReaderKind.AUTHORITY else "office"
    authorities = {reader.code} if reader.kind is ReaderKind.AUTHORITY else {v.authority for v in views}
    on_record = await registers.load(
        conn, people, kind=kind, code=reader.code, authorities=authorities, today=today_jst()
    )
    return on_record, (await store.consents.load(conn, people) if people else {})


async def _granted_rows(
    conn: asyncpg.Connection,
    principal: Principal,
    reader: Reader,
    purpose: Scope,
    rows: Sequence[asyncpg.Record],
    action: str,
    *,
    matched_under: Scope | None = None,
) -> list[dict[str, Any]]:
    """The rows the reader may read for ``purpose``, disclosed, and the reads recorded. ``matched_under``:
    the rows were matched on fields of that scope, so each must also be one a read for it would grant."""
    answers, entries = [], []
    views = [view_from_row(row) for row in rows]
    on_record, consents = await registers_for(conn, reader, views)
    for view in views:
        kept = consents.get(view.person_key, ())
        if (
            matched_under is not None
            and not decide_disclosure(view, reader, matched_under, on_record, kept).granted
        ):
            continue
        view = as_disclosed(view, reader, purpose, on_record)  # each placement under its own office's A2
        decision = decide_disclosure(view, reader, purpose, on_record, kept)
        if decision.granted:
            answers.append(disclose(view, purpose))
            entries.append((view.person_key, decision.fields, "granted", ""))
    await record_reads(conn, principal, action, purpose.value, entries)
    return answers


async def _sees_history(conn: asyncpg.Connection, principal: Principal, person_key: str) -> bool:
    """A person's access history is for operators and for the organisations the person is with."""
    if is_operator(principal):
        return True
    reader = reader_of(principal) if Role.READ in principal.roles else None
    if reader is None:
        return False
    kind = "authority" if reader.kind is ReaderKind.AUTHORITY else "office"
    return bool(await registers.held_by(conn, [person_key], kind, reader.code))


# --- the routes: each a small named handler; the pool and key store are on app.state -----------------

router = APIRouter()


@router.get("/persons", tags=["shared view"])
async def list_persons(
    request: Request,
    principal: ReadingPrincipal,
    purpose: PurposeQuery,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> Any:
    reader = reader_of(principal)
    if reader is None:
        return _refuse(403, f"{principal.organisation} does not read personal data")
    where, params = _scope_filter(reader, 1)
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM sv_persons WHERE {where} ORDER BY person_key LIMIT $3 OFFSET $4",
            *params,
            purpose.value,
            limit,
            offset,
        )
        answers = await _granted_rows(conn, principal, reader, purpose, rows, "list")
    return {"persons": answers, "count": len(answers), "offset": offset}


@router.post("/persons/search", tags=["shared view"])
async def search_persons(request: Request, principal: ReadingPrincipal, body: SearchRequest) -> Any:
    reader = reader_of(principal)
    if reader is None:
        return _refuse(403, f"{principal.organisation} does not read personal data")
    if not (body.name or body.job_seeker_number or body.case_number):
        return _refuse(422, "search needs at least one of: name, job_seeker_number, case_number")
    where, params = _scope_filter(reader, 1)
    args: list[Any] = [*params, body.purpose.value]
    terms = []
    # Identifying terms only match where share_registration lets the reader see them.
    if body.name:
        args.append("%" + body.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        terms.append(f"(name ILIKE ${len(args)} OR name_kana ILIKE ${len(args)})")
    if body.job_seeker_number:
        args.append(body.job_seeker_number)
        terms.append(f"job_seeker_number = ${len(args)}")
    if body.case_number:
        # An authority's search matches its own case numbers only (another authority's are not shown to
        # it, ``as_disclosed``): $1 is its code. Hello Work's, any authority's.
        args.append(body.case_number)
        own = "'authority', $1::text, " if reader.kind is ReaderKind.AUTHORITY else ""
        terms.append(
            f"case_numbers @> jsonb_build_array(jsonb_build_object({own}'case_number', ${len(args)}::text))"
        )
    args.append(body.limit)
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM sv_persons WHERE {where} AND scopes ? 'share_registration' "
            f"AND {' AND '.join(terms)} ORDER BY person_key LIMIT ${len(args)}",
            *args,
        )
        # Matched on share_registration's fields: only where a read for it would be granted (consent,
        # agreement, fence, holding, validity), whatever the purpose answered for; the SQL above is
        # its consent part only.
        answers = await _granted_rows(
            conn, principal, reader, body.purpose, rows, "search", matched_under=Scope.SHARE_REGISTRATION
        )
    return {"persons": answers, "count": len(answers)}


@router.get("/persons/{person_key}", tags=["shared view"])
async def fetch_person(
    request: Request,
    principal: AnyPrincipal,
    person_key: PersonKeyPath,
    purpose: PurposeQuery,
) -> Any:
    # Authenticated but not allowed to read is still an attempt on this person: record it.
    reader = reader_of(principal) if Role.READ in principal.roles else None
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        if reader is None:
            reason = f"{principal.organisation} (client {principal.client_id}) does not read personal data"
            await record_reads(conn, principal, "fetch", purpose.value, [(person_key, (), "refused", reason)])
            return _refuse(403, reason)
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM sv_persons WHERE person_key = $1", person_key)
        view = view_from_row(row) if row is not None else None
        on_record, consents = await registers_for(conn, reader, [view] if view is not None else [])
        if view is not None:
            view = as_disclosed(view, reader, purpose, on_record)  # each placement under its own office's A2
        decision = decide_disclosure(view, reader, purpose, on_record, consents.get(person_key, ()))
        outcome = "granted" if decision.granted else "refused"
        await record_reads(
            conn,
            principal,
            "fetch",
            purpose.value,
            [(person_key, decision.fields, outcome, decision.reason)],
        )
    if not decision.granted or view is None:
        # Same answer whether the person exists or not: no oracle for keys outside one's remit.
        return _refuse(403, decision.reason)
    return disclose(view, purpose)


@router.get("/persons/{person_key}/access-history", tags=["shared view"])
async def access_history(
    request: Request,
    principal: AnyPrincipal,
    person_key: PersonKeyPath,
) -> Any:
    async with request.app.state.pool.acquire() as conn:
        if not await _sees_history(conn, principal, person_key):
            return _refuse(
                403, "access history is shown to operators and to the organisations the person is with"
            )
        # An authority is shown its own reads and Hello Work's, not another authority's: that one reads
        # (or tried to) would tell it the other's welfare involvement with the person.
        reader = None if is_operator(principal) else reader_of(principal)
        an_authority = reader is not None and reader.kind is ReaderKind.AUTHORITY
        rows = await conn.fetch(
            "SELECT read_at, client_id, client_name, organisation, action, purpose, fields, outcome, reason "
            "FROM sv_access_log WHERE person_key = $1 "
            "AND ($2::text IS NULL OR organisation = $2 OR organisation NOT LIKE 'authority:%') ORDER BY id",
            person_key,
            principal.organisation if an_authority else None,
        )
    return {
        "person_key": person_key,
        "reads": [
            {
                "at": r["read_at"].isoformat(),
                "client_id": r["client_id"],
                "client_name": r["client_name"],
                "organisation": r["organisation"],
                "action": r["action"],
                "purpose": r["purpose"],
                "fields": list(r["fields"]),
                "outcome": r["outcome"],
                "reason": r["reason"],
            }
            for r in rows
        ],
    }


@router.delete("/persons/{person_key}", tags=["erasure"])
async def erase(
    request: Request,
    principal: OperatingPrincipal,
    person_key: PersonKeyPath,
) -> Any:
    if not is_operator(principal):
        return _refuse(
            403,
            f"erasure is for operator organisations; {principal.organisation} is not one "
            "(the 'operate' role alone does not make a client an operator)",
        )
    signer = request.app.state.erasure_signer
    if signer is None:
        return _refuse(
            403,
            "erasure is not enabled on this service: HUB_ERASURE_SIGNING_KEY (the operator's erasure key) "
            "is not set here; use `hub erase` where it is",
        )
    async with request.app.state.pool.acquire() as conn:
        result = await erase_person(
            conn,
            request.app.state.keystore,
            person_key,
            requested_by=f"api:{principal.client_id}",
            namespace=request.app.state.settings.topic_namespace,
            signer=signer,
        )
    return {
        "person_key": person_key,
        "key_deleted": result.key_deleted,
        "rows_deleted": result.rows_deleted,
        "already_erased": result.already_erased,
        "erasure_event": result.event_id,
    }


async def _attach_keys(app: FastAPI) -> None:
    await attach_keystore(app)
    # DELETE /persons signs the erasure it publishes: only where this process holds the operator's key.
    app.state.erasure_signer = erasure_signer_if_held(app.state.settings)


def build_app(settings: Settings | None = None) -> FastAPI:
    app = create_app(
        "Ittai Hub — consented shared view",
        description="What an authority or a Hello Work office may see about its people, under their consent. "
        "Every read of personal data is recorded.",
        settings=settings,
        on_startup=_attach_keys,
        follows_erasures=True,
    )
    app.include_router(router)
    return app
