"""The joint sites registry (拠点): which authority runs a site and which Hello Work office serves it."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from domain.codes import validate_local_government_code


def check_site(site_id: str, office: str) -> None:
    """Raise ValueError naming the rule a site id or office code breaks."""
    if len(site_id) != 9 or site_id[6] != "-" or not (site_id[7:].isascii() and site_id[7:].isdigit()):
        raise ValueError(f"site {site_id!r}: expected <local government code>-<two digits>, e.g. 131041-01")
    validate_local_government_code(site_id[:6])
    if len(office) != 4 or not (office.isascii() and office.isdigit()):
        raise ValueError(f"office {office!r}: expected a 4-digit Hello Work office code")


async def add_sites(conn: asyncpg.Connection, sites: Iterable[tuple[str, str, str]]) -> int:
    """Add or update (site_id, office, name) rows; returns how many were given."""
    rows = list(sites)
    for site_id, office, _ in rows:
        check_site(site_id, office)
    await conn.executemany(
        "INSERT INTO sites (site_id, authority, office, name) VALUES ($1, left($1, 6), $2, $3) "
        "ON CONFLICT (site_id) DO UPDATE SET office = EXCLUDED.office, name = EXCLUDED.name",
        rows,
    )
    return len(rows)


async def list_sites(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT site_id, authority, office, name, created_at FROM sites ORDER BY site_id")
