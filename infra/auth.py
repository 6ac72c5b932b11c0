"""Who is calling: client credentials bound to one organisation, stored hashed.

Every caller of the hub's HTTP services (a client system publishing events, an authority or Hello Work
user reading the shared view or the feed, an operator on the console) presents a bearer token
``ith_<client_id>.<secret>``. Only ``sha256(secret)`` is stored: tokens are 256-bit random values, so a
fast hash is the right tool (a slow password hash buys nothing against a random secret and costs
latency on every request). Tokens are shown once, at ``hub clients add``.

An organisation is an authority (local government code), a Hello Work office (office code), the
national Hello Work system (all offices), or the operators' team. Roles say what the client may do.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import asyncpg


class OrgKind(StrEnum):
    AUTHORITY = "authority"
    OFFICE = "office"
    HELLO_WORK_NATIONAL = "hello_work_national"
    OPERATOR = "operator"
    MINISTRY = (
        "ministry"  # 厚生労働省: reads the national and per-prefecture roll-up of the feeds (aggregates)
    )


class Role(StrEnum):
    PUBLISH = "publish"  # a client system sending events through an adapter
    READ = "read"  # an organisation's user reading the shared view / the feed
    OPERATE = "operate"  # an operator on the console: flows and counts, never personal data


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: str
    name: str
    org_kind: OrgKind
    org_code: str  # local government code, office code, or "*" for national / operators
    roles: frozenset[Role]

    @property
    def organisation(self) -> str:
        return f"{self.org_kind.value}:{self.org_code}"

    def covers_authority(self, authority: str) -> bool:
        return self.org_kind is OrgKind.AUTHORITY and self.org_code == authority

    def covers_office(self, office: str) -> bool:
        return self.org_kind is OrgKind.HELLO_WORK_NATIONAL or (
            self.org_kind is OrgKind.OFFICE and self.org_code == office
        )


class AuthError(Exception):
    """``status`` is 401 (who are you?) or 403 (not allowed); ``reason`` is safe to return."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def add_client(
    conn: asyncpg.Connection, *, name: str, org_kind: OrgKind, org_code: str, roles: frozenset[Role]
) -> tuple[str, str]:
    """Create a client; returns (client_id, token). The token is not stored and cannot be shown again."""
    client_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO clients (client_id, name, org_kind, org_code, roles, secret_hash) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        client_id,
        name,
        org_kind.value,
        org_code,
        sorted(r.value for r in roles),
        _hash(secret),
    )
    return client_id, f"ith_{client_id}.{secret}"


async def revoke_client(conn: asyncpg.Connection, client_id: str) -> bool:
    status = await conn.execute(
        "UPDATE clients SET revoked_at = now() WHERE client_id = $1 AND revoked_at IS NULL", client_id
    )
    return status != "UPDATE 0"


async def list_clients(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT client_id, name, org_kind, org_code, roles, created_at, revoked_at FROM clients ORDER BY created_at"
    )


_TOKEN = re.compile(r"ith_[0-9a-f]{1,64}\.[A-Za-z0-9_-]{1,128}")


async def authenticate(conn: asyncpg.Connection, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer ith_<id>.<secret>`` header or raise AuthError(401)."""
    if not authorization:
        raise AuthError(401, "missing Authorization header (expected 'Bearer ith_<client>.<secret>')")
    scheme, _, token = authorization.partition(" ")
    # The shape before the database: a NUL or a megabyte in a header must not reach a query.
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        raise AuthError(401, "malformed credentials (expected 'Bearer ith_<client>.<secret>')")
    client_id, _, secret = token[4:].partition(".")
    row = await conn.fetchrow(
        "SELECT client_id, name, org_kind, org_code, roles, secret_hash, revoked_at FROM clients "
        "WHERE client_id = $1",
        client_id,
    )
    if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), _hash(secret)):
        raise AuthError(401, "unknown client or wrong secret")
    if row["revoked_at"] is not None:
        raise AuthError(
            401, f"credentials of client {client_id} were revoked at {row['revoked_at'].isoformat()}"
        )
    return _principal(row)


async def session_principal(
    conn: asyncpg.Connection, client_id: str, admits: Callable[[Principal], None]
) -> Principal | None:
    """The client behind a web session (the console's, the portal's), read again on each request: None
    where it is gone, revoked, or no longer passes ``admits`` (which raises AuthError)."""
    row = await conn.fetchrow(
        "SELECT client_id, name, org_kind, org_code, roles FROM clients WHERE client_id = $1 AND revoked_at IS NULL",
        client_id,
    )
    if row is None:
        return None
    principal = _principal(row)
    try:
        admits(principal)
    except AuthError:
        return None
    return principal


def _principal(row: asyncpg.Record) -> Principal:
    return Principal(
        client_id=row["client_id"],
        name=row["name"],
        org_kind=OrgKind(row["org_kind"]),
        org_code=row["org_code"],
        roles=frozenset(Role(r) for r in row["roles"]),
    )


def require_role(principal: Principal, role: Role) -> None:
    if role not in principal.roles:
        raise AuthError(
            403, f"client {principal.client_id} ({principal.organisation}) lacks role '{role.value}'"
        )
