"""Who may use the portal and what they may see.

Authority staff log in with their authority's reader credential (org kind ``authority``, role
``read``) and see that authority's feed only. Ministry staff log in with the ministry's reader
credential (org kind ``ministry``, role ``read``) and see the national and per-prefecture roll-ups only
(aggregates): no authority's feed, no individual list. Any other credential is refused with the reason.
A request for a feed that is not the user's own is refused and written to the feed access log as denied;
an authority's request for a roll-up page is refused. The session holds the client id; the client is
re-read on every request (a revoked one is out).
"""

from __future__ import annotations

import asyncpg

from hub.web.i18n import gettext
from infra.auth import AuthError, OrgKind, Principal, Role, require_role, session_principal

PORTAL_KINDS = (OrgKind.AUTHORITY, OrgKind.MINISTRY)


def require_reader(principal: Principal) -> None:
    if principal.org_kind not in PORTAL_KINDS:
        raise AuthError(
            403,
            f"client {principal.client_id} belongs to {principal.organisation}: the feed portal admits "
            "authority staff and the ministry only (org kind 'authority' or 'ministry', role 'read')",
        )
    require_role(principal, Role.READ)


def require_ministry(principal: Principal) -> None:
    """The roll-up pages: the ministry's login only."""
    if principal.org_kind is not OrgKind.MINISTRY:
        raise AuthError(
            403, gettext("The national and prefectural roll-ups are for the ministry's login only.")
        )


def feed_refusal(principal: Principal) -> str:
    """Why a feed page is refused to this user (another authority's, or any authority's to the ministry)."""
    if principal.org_kind is OrgKind.MINISTRY:
        return gettext(
            "The ministry's login sees the national and prefectural roll-ups, not an authority's feed."
        )
    return gettext("This portal shows your own authority's feed only.")


async def reader_by_id(conn: asyncpg.Connection, client_id: str) -> Principal | None:
    """The reader behind a session, or None if the client is gone, revoked or no longer a reader."""
    return await session_principal(conn, client_id, require_reader)
