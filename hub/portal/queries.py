"""What the portal reads besides a delivery: the months and revisions of an authority's feed and the
latest revision of each of the last months (for the chart); the fiscal years and months of the
ministry's roll-ups. Aggregates only; no personal data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg


async def months(conn: asyncpg.Connection, authority: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT month FROM feed_revisions WHERE authority = $1 ORDER BY month DESC", authority
    )
    return [r["month"] for r in rows]


async def revisions(conn: asyncpg.Connection, authority: str, month: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT revision, built_at, json_array_length(changes) AS changed FROM feed_revisions "
        "WHERE authority = $1 AND month = $2 ORDER BY revision DESC",
        authority,
        month,
    )


async def latest_bodies(
    conn: asyncpg.Connection, authority: str, months: Sequence[str]
) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT DISTINCT ON (month) month, body FROM feed_revisions "
        "WHERE authority = $1 AND month = ANY($2::text[]) ORDER BY month, revision DESC",
        authority,
        list(months),
    )
    return {r["month"]: r["body"] for r in rows}


# --- the ministry's roll-ups (aggregates only) ---------------------------------------------------------


async def fiscal_years(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT DISTINCT fiscal_year FROM feed_rollups ORDER BY fiscal_year DESC")
    return [r["fiscal_year"] for r in rows]


async def rollup_months(conn: asyncpg.Connection, fiscal_year: int) -> list[asyncpg.Record]:
    """The months a fiscal year's roll-up was built through, latest first, with each one's latest
    revision and when it was built."""
    return await conn.fetch(
        "SELECT DISTINCT ON (through) through, revision, built_at FROM feed_rollups WHERE fiscal_year = $1 "
        "ORDER BY through DESC, revision DESC",
        fiscal_year,
    )
