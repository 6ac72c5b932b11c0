"""The ministry's roll-up of a fiscal year: read the kept feed revisions → ``domain.ministry`` → keep.

Read: for every month of the fiscal year up to ``through``, each feed's latest revision: its kept true
counts per site (``tallies``, summed over the months) and, from the ``through`` month, the evaluation
of every site and authority with targets. A roll-up is kept per fiscal year and month with revisions,
like a feed: a rebuild whose figures changed is revision N+1, revised per ``domain.disclosure.revise``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from domain.calendar import YearMonth
from domain.feed import Tally, shift_month
from domain.ministry import Unit, compose_rollup
from infra.config import Settings


class RollupNotFound(LookupError):
    pass


def fiscal_year_months(fiscal_year: int, through: YearMonth) -> list[str]:
    first = YearMonth(fiscal_year, 4)
    out: list[str] = []
    m = first
    while (m.year, m.month) <= (through.year, through.month) and len(out) < 12:
        out.append(str(m))
        m = shift_month(m, 1)
    return out


async def build_rollup(
    pool: asyncpg.Pool, settings: Settings, fiscal_year: int, through: YearMonth | None = None
) -> tuple[int, dict[str, Any]]:
    """Build (or re-build) the roll-up of ``fiscal_year`` through ``through`` (default March, the year
    end); returns (revision, body). No new revision when nothing changed."""
    through = through or YearMonth(fiscal_year + 1, 3)
    months = fiscal_year_months(fiscal_year, through)
    if not months or date(through.year, through.month, 1) < date(fiscal_year, 4, 1):
        raise ValueError(
            f"month {through} is not in fiscal year {fiscal_year} (April {fiscal_year} to March)"
        )
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        rows = await conn.fetch(
            "SELECT DISTINCT ON (authority, month) authority, month, body, tallies FROM feed_revisions "
            "WHERE month = ANY($1::text[]) ORDER BY authority, month, revision DESC",
            months,
        )
        tallies: dict[str, Tally] = {}
        sites: list[Unit] = []
        authorities: list[Unit] = []
        for r in rows:
            for site, t in r["tallies"].items():
                tallies[site] = tallies.get(site, Tally()) + Tally.from_json(t)
            if r["month"] == str(through):
                for e in r["body"]["targets"]:
                    unit = Unit(e["scope"], "excluded" if e["excluded"] else e["achievement"], e["pace"])
                    (sites if len(e["scope"]) == 9 else authorities).append(unit)
        previous = await conn.fetchrow(
            "SELECT revision, body FROM feed_rollups WHERE fiscal_year = $1 AND through = $2 "
            "ORDER BY revision DESC LIMIT 1",
            fiscal_year,
            str(through),
        )
        body = compose_rollup(
            fiscal_year,
            str(through),
            tallies,
            sites,
            authorities,
            threshold=settings.feed_suppression_threshold,
            previous=previous["body"] if previous else None,
        )
        if previous is not None and _same(previous["body"], body):
            return previous["revision"], previous["body"]
        revision = (previous["revision"] if previous else 0) + 1
        body["revision"] = revision
        await conn.execute(
            "INSERT INTO feed_rollups (fiscal_year, through, revision, body) VALUES ($1,$2,$3,$4)",
            fiscal_year,
            str(through),
            revision,
            body,
        )
    return revision, body


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether a rebuild publishes exactly what the kept revision publishes (values, not reasons)."""

    def values(body: dict[str, Any]) -> dict[tuple[str, tuple[str, ...]], Any]:
        return {
            (t["name"], tuple(k)): v
            for ts in body["populations"].values()
            for t in ts
            for k, v, _ in t["cells"]
        }

    return (
        a["achievement"] == b["achievement"] and a["indicators"] == b["indicators"] and values(a) == values(b)
    )


async def load_rollup(
    conn: asyncpg.Connection, fiscal_year: int, through: str | None = None, revision: int | None = None
) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT body FROM feed_rollups WHERE fiscal_year = $1 AND ($2::text IS NULL OR through = $2) "
        "AND ($3::int IS NULL OR revision = $3) ORDER BY through DESC, revision DESC LIMIT 1",
        fiscal_year,
        through,
        revision,
    )
    if row is None:
        raise RollupNotFound(
            f"no roll-up for fiscal year {fiscal_year}; run `hub feed rollup --fy {fiscal_year}`"
        )
    body: dict[str, Any] = row["body"]
    return body
