"""Operator login for the console: a token pasted once, then a signed, expiring session cookie.

Operators are clients of org kind ``operator`` with role ``operate`` (``infra.auth``); authority, office,
national Hello Work and publisher credentials are refused with 403 and the reason. The cookie holds the
client id and a CSRF token, signed and time-stamped with itsdangerous; every request re-reads the client
so a revoked operator is out at their next click. Forms carry the CSRF token (SameSite=Strict as well).
"""

from __future__ import annotations

import asyncpg

from hub.web.pages import Sessions
from infra.auth import AuthError, OrgKind, Principal, Role, require_role, session_principal
from infra.config import Settings

COOKIE = "ittai_console"


def console_sessions(settings: Settings) -> Sessions:
    return Sessions(
        settings.console_session_secret,
        salt="ittai-console-session",
        max_age_s=settings.console_session_max_age_s,
    )


def require_operator(principal: Principal) -> None:
    if principal.org_kind is not OrgKind.OPERATOR:
        raise AuthError(
            403,
            f"client {principal.client_id} belongs to {principal.organisation}: the console admits operator "
            "clients only (org kind 'operator', role 'operate')",
        )
    require_role(principal, Role.OPERATE)


async def operator_by_id(conn: asyncpg.Connection, client_id: str) -> Principal | None:
    """The operator behind a session, or None if the client is gone, revoked or no longer an operator."""
    return await session_principal(conn, client_id, require_operator)
