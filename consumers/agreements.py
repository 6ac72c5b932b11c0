"""The agreement register (個人情報保護協定) in PostgreSQL: what ``hub agreements`` writes and every
disclosure (shared-view reads, the feed's individual list) reads. The rules are ``domain.agreements``."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import date

import asyncpg

from domain.agreements import Agreement
from domain.codes import require_ascii_digits, validate_local_government_code
from domain.consent import Scope


def _agreement(r: asyncpg.Record) -> Agreement:
    return Agreement(
        agreement_id=r["agreement_id"],
        authority=r["authority"],
        offices=frozenset(r["offices"]),
        sites=frozenset(r["sites"]),
        purposes=frozenset(Scope(p) for p in r["purposes"]),
        valid_from=r["valid_from"],
        valid_until=r["valid_until"],
    )


async def agreements_of(conn: asyncpg.Connection, authorities: Iterable[str]) -> list[Agreement]:
    """Every agreement of these authorities (in force or not: the domain decides per day)."""
    rows = await conn.fetch(
        "SELECT * FROM sharing_agreements WHERE authority = ANY($1::text[])", sorted(set(authorities))
    )
    return [_agreement(r) for r in rows]


async def add_agreement(
    conn: asyncpg.Connection,
    *,
    authority: str,
    offices: Sequence[str],
    sites: Sequence[str],
    purposes: Sequence[str],
    valid_from: date,
    valid_until: date | None,
    title: str,
    created_by: str,
) -> str:
    """Register an agreement; raises ValueError naming the rule a code or purpose breaks."""
    validate_local_government_code(authority)
    if not offices:
        raise ValueError("an agreement names at least one Hello Work office (--office)")
    for office in offices:
        require_ascii_digits(office, "office code")
        if len(office) != 4 or not office.isdigit():
            raise ValueError(f"office {office!r}: expected a 4-digit Hello Work office code")
    for site in sites:
        if site[:6] != authority:
            raise ValueError(f"site {site} is not run by authority {authority}")
    if not purposes:
        raise ValueError("an agreement states at least one purpose (--purpose)")
    known = {s.value for s in Scope}
    for purpose in purposes:
        if purpose not in known:
            raise ValueError(f"purpose {purpose!r}: expected one of {', '.join(sorted(known))}")
    if valid_until is not None and valid_until < valid_from:
        raise ValueError(f"valid until {valid_until} is before valid from {valid_from}")
    agreement_id = f"agr-{secrets.token_hex(6)}"
    await conn.execute(
        "INSERT INTO sharing_agreements (agreement_id, authority, offices, sites, purposes, valid_from, "
        "valid_until, title, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        agreement_id,
        authority,
        sorted(set(offices)),
        sorted(set(sites)),
        sorted(set(purposes)),
        valid_from,
        valid_until,
        title,
        created_by,
    )
    return agreement_id


async def end_agreement(conn: asyncpg.Connection, agreement_id: str, *, on: date, ended_by: str) -> bool:
    """End an agreement on ``on`` (inclusive): from the next day nothing it covered is disclosed."""
    status = await conn.execute(
        "UPDATE sharing_agreements SET valid_until = least(coalesce(valid_until, $2), $2), "
        "ended_at = now(), ended_by = $3 WHERE agreement_id = $1",
        agreement_id,
        on,
        ended_by,
    )
    return status != "UPDATE 0"


async def list_agreements(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM sharing_agreements ORDER BY authority, valid_from, agreement_id")
