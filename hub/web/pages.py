"""Conventions every server-rendered page of the hub follows (console and portal).

- Security headers: a Content-Security-Policy that allows no script at all, no framing, no referrer
  (so a page address never travels to another site), no caching of pages that hold figures or names.
- Signed, expiring session cookies (itsdangerous) holding a client id, a session id and a CSRF token; the
  client is re-read from the database on every request, so a revoked credential is out at its next click,
  and logout revokes the session id on the server, so a copy of the cookie is dead from then on (a signed
  cookie alone would stay valid until it expires).
- Every form that changes something carries the CSRF token (cookies are SameSite=Strict as well).
- The language switch: ``GET /lang/{ja|en}?next=/path`` sets the ``lang`` cookie and goes back.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from hub.web.i18n import LANG_COOKIE, LANGS
from infra.auth import AuthError

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Session:
    client_id: str
    csrf: str
    session_id: str


async def session_revoked(conn: Any, session: Session) -> bool:
    """Was this session logged out? (One indexed lookup, in the request's own database round trip.)"""
    return bool(
        await conn.fetchval(
            "SELECT true FROM console_session_revocations WHERE session_id = $1", session.session_id
        )
    )


async def revoke_session(conn: Any, session: Session, max_age_s: int) -> None:
    """Logout: this session's cookie is refused from now on, wherever a copy of it is."""
    await conn.execute(
        "INSERT INTO console_session_revocations (session_id, expires_at) "
        "VALUES ($1, now() + make_interval(secs => $2)) ON CONFLICT DO NOTHING",
        session.session_id,
        float(max_age_s),
    )
    # A revocation needs to outlive only the cookie it stops.
    await conn.execute("DELETE FROM console_session_revocations WHERE expires_at < now()")


class Sessions:
    """Signed, time-stamped session cookies. Without a configured secret each process draws one
    (sessions then end when it restarts)."""

    def __init__(self, secret: str | None, *, salt: str, max_age_s: int) -> None:
        self._signer = URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), salt=salt)
        self.max_age_s = max_age_s

    def issue(self, client_id: str) -> tuple[str, Session]:
        session = Session(client_id, secrets.token_urlsafe(24), secrets.token_urlsafe(18))
        cookie = self._signer.dumps({"c": session.client_id, "x": session.csrf, "s": session.session_id})
        return cookie, session

    def read(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:  # also SignatureExpired
            return None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("c"), str)
            or not isinstance(data.get("x"), str)
            or not isinstance(data.get("s"), str)
        ):
            return None
        return Session(data["c"], data["x"], data["s"])


def logged_in(sessions: Sessions, client_id: str, cookie_name: str, next: str, *, secure: bool) -> Response:
    """A login's answer: a new session's cookie (signed, HTTP only, this site only) and the way on to
    ``next`` (a local path only, ``safe_next``)."""
    cookie, _ = sessions.issue(client_id)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        cookie_name, cookie, max_age=sessions.max_age_s, httponly=True, samesite="strict", secure=secure
    )
    return response


def logged_out(cookie_name: str) -> Response:
    """A logout's answer (its session revoked already, ``revoke_session``): the cookie gone, the login form."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(cookie_name)
    return response


def check_csrf(request: Request, token: str) -> None:
    expected = getattr(request.state, "csrf", "")
    if not expected or not secrets.compare_digest(token, expected):
        raise AuthError(403, "csrf: the form's token does not match this session (reload the page)")


_LOCAL_PATH = re.compile(r"/(?![/\\])[\x21-\x7e]{0,500}")


def safe_next(target: str) -> str:
    """Only local paths of visible ASCII: a login link must not send the visitor elsewhere, nor put a
    control character into a Location header."""
    return target if _LOCAL_PATH.fullmatch(target) else "/"


class LoginRequired(Exception):
    """No valid session: the page sends the browser to the login form (``install_page_conventions``)."""


def install_page_conventions(app: FastAPI, *, cookie_secure: bool) -> None:
    """Security headers on every response, the language switch, and the login form for a page asked
    for without a valid session (``LoginRequired``), which comes back to the page once logged in."""

    @app.exception_handler(LoginRequired)
    async def login_first(request: Request, _: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/lang/{lang}", include_in_schema=False)
    async def switch_language(lang: str, next: str = "/") -> Response:
        response = RedirectResponse(safe_next(next), status_code=303)
        if lang in LANGS:
            response.set_cookie(
                LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict", secure=cookie_secure
            )
        return response
