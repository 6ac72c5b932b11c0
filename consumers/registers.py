"""The registers every disclosure reads besides consent, loaded for the domain to decide
(``domain.agreements.Registers``): the holder register (P3) and the withdrawal fences (P7), both written
with acceptance (``producers.holders``, in the transaction that enqueues the events), and the agreement
register (``consumers.agreements``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

import asyncpg

from consumers.agreements import agreements_of
from domain.agreements import Registers

ANY_CODE = "*"  # the national Hello Work reader: every office


async def held_by(conn: asyncpg.Connection, persons: Iterable[str], kind: str, code: str) -> frozenset[str]:
    """Which of ``persons`` the organisation ``kind:code`` holds (``code`` ``*``: any of that kind)."""
    rows = await conn.fetch(
        "SELECT DISTINCT person_key FROM person_holders WHERE person_key = ANY($1::text[]) "
        "AND org_kind = $2 AND ($3::text = '*' OR org_code = $3)",
        list(persons),
        kind,
        code,
    )
    return frozenset(r[0] for r in rows)


async def fences_of(conn: asyncpg.Connection, persons: Iterable[str]) -> dict[str, datetime]:
    """person -> the ``signed_at`` of their latest withdrawal on record."""
    rows = await conn.fetch(
        "SELECT person_key, signed_at FROM withdrawal_fences WHERE person_key = ANY($1::text[])",
        list(persons),
    )
    return {r[0]: r[1] for r in rows}


async def load(
    conn: asyncpg.Connection,
    persons: Iterable[str],
    *,
    kind: str,
    code: str,
    authorities: Iterable[str | None],
    today: date,
) -> Registers:
    """The registers for disclosing about ``persons`` to ``kind:code`` under the agreements of
    ``authorities``."""
    persons = list(persons)
    if not persons:
        return Registers(frozenset(), {}, (), today)
    return Registers(
        held=await held_by(conn, persons, kind, code),
        fences=await fences_of(conn, persons),
        agreements=tuple(await agreements_of(conn, [a for a in set(authorities) if a])),
        today=today,
    )
