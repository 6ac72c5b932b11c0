"""Who may use the portal and what they may see.

Authority staff log in with their authority's reader credential (org kind ``authority``, role
``read``) and see that authority's feed only; any other credential is refused with the reason. A
request for another authority's feed is refused and written to the feed access log as denied.
The session holds the client id; the client is re-read on every request (a revoked one is out).
"""

from __future__ import annotations

import asyncpg

from infra.auth import AuthError, OrgKind, Principal, Role, require_role


class LoginRequired(Exception):
    """No valid session: the page sends the browser to the login form."""


def require_reader(principal: Principal) -> None:
    # The ministry's login (national and prefectural roll-ups) attaches here once the feed publishes
    # roll-ups and the hub has a ministry organisation kind; until then only authorities get in.
    if principal.org_kind is not OrgKind.AUTHORITY:
        raise AuthError(
            403,
            f"client {principal.client_id} belongs to {principal.organisation}: the feed portal admits "
            "authority staff only (org kind 'authority', role 'read')",
        )
    require_role(principal, Role.READ)


async def reader_by_id(conn: asyncpg.Connection, client_id: str) -> Principal | None:
    row = await conn.fetchrow(
        "SELECT client_id, name, org_kind, org_code, roles FROM clients WHERE client_id = $1 AND revoked_at IS NULL",
        client_id,
    )
    if row is None:
        return None
    principal = Principal(
        client_id=row["client_id"],
        name=row["name"],
        org_kind=OrgKind(row["org_kind"]),
        org_code=row["org_code"],
        roles=frozenset(Role(r) for r in row["roles"]),
    )
    try:
        require_reader(principal)
    except AuthError:
        return None
    return principal
