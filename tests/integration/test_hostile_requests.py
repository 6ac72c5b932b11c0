"""Hostile request lines and heads, on every HTTP edge over a real server (a client's bytes on the wire).

A month from outside takes one spelling — ASCII ``YYYY-MM`` of the programme's years (2000-01 ..
2099-12) — wherever one is taken: the feed API's ``{month}`` path and ``through`` query, and the portal's
feed pages and roll-ups. Each hostile month is refused with a 4xx that names the field and the rule (in
words: not the pattern's regular expression), never a 5xx and never repeating what was sent. A request's
line and headers are bounded (``infra.http.MAX_HEAD_BYTES``): a megabyte of URL or header is refused
naming the limit before the server has read it (httptools sets no bound: a 20 MB header was read and
served)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote, urlencode, urlsplit

import asyncpg
import httpx
import pytest_asyncio

from consumers.feed.api import create_feed_app
from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from infra.http import MAX_HEAD_BYTES
from producers.adapters.serve import running
from tests import factories
from tests.browser.console_server import RunningConsole
from tests.helpers import free_port
from tests.integration.test_portal import _logged_in, _ministry

# name -> the month as sent. Each must be refused whole (not folded, trimmed or read in part).
HOSTILE = {
    "before the programme": "1999-03",
    "year 0001": "0001-03",
    "full-width digits": "２０２６-０３",
    "month 13": "2026-13",
    "a NUL": "2026-03\x00",
    "a trailing newline": "2026-03\n",
    "a megabyte": "2026-03" + "9" * 1_000_000,
}
# What a refusal must say: a rule (never the value), and the field.
RULES = ("YYYY-MM", "2000-01 .. 2099-12", "01 to 12", "limit of 32768 bytes for a request's line")
FIELDS = ("month", "through", "request line")


async def _get(http: httpx.AsyncClient, path: str, params: Mapping[str, str] | None = None) -> httpx.Response:
    """GET ``path`` as ``http`` would (its base URL, headers and cookies), written on the socket by hand:
    httpx refuses to send a URL past 64 KiB, a hostile client does not."""
    target = path + (f"?{urlencode(params)}" if params else "")
    base = urlsplit(str(http.base_url))
    headers = {**http.headers, "host": base.netloc, "connection": "close"}
    if http.cookies:
        headers["cookie"] = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    headers.pop("accept-encoding", None)
    reader, writer = await asyncio.open_connection(base.hostname, base.port)
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET {target} HTTP/1.1\r\n{head}\r\n".encode())
        await writer.drain()
        raw = await reader.read(-1)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    head_bytes, _, body = rest.partition(b"\r\n\r\n")
    if not status_line:
        return httpx.Response(599, text="(the server closed the connection without an answer)")
    lines = [line.split(b":", 1) for line in head_bytes.split(b"\r\n") if b":" in line]
    parsed = {k.strip().lower().decode(): v.strip().decode("latin-1") for k, v in lines}
    if parsed.get("transfer-encoding") == "chunked":
        body = _unchunked(body)
    return httpx.Response(int(status_line.split()[1]), content=body)


def _unchunked(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, body = out + body[:n], body[n + 2 :]
    return out


def _refused_well(name: str, sent: str, response: httpx.Response) -> list[str]:
    problems = []
    expected = 414 if len(sent) > MAX_HEAD_BYTES else 422
    if response.status_code != expected:
        problems.append(f"{name}: status {response.status_code}, not {expected}")
    text = response.text
    if not any(rule in text for rule in RULES):
        problems.append(f"{name}: {response.status_code} names no rule: {text[:200]!r}")
    if sent[:4] in ("1999", "0001") and "2000-01" not in text:  # well-formed: the rule is the years'
        problems.append(f"{name}: names not the programme's years: {text[:200]!r}")
    if not any(field in text for field in FIELDS):
        problems.append(f"{name}: names no field: {text[:200]!r}")
    core = sent[:7]  # what a refusal could repeat: the month itself (the rules' examples are 2025-04/05)
    if core in text or sent.strip() in text or (len(sent) > 100 and "9" * 100 in text):
        problems.append(f"{name}: echoed: {text[:200]!r}")
    return problems


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def feed_api(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[tuple[str, str, str]]:
    """The feed API over a real server; tokens of an authority reader and of a ministry reader."""
    async with pool.acquire() as conn:
        _, reader = await add_client(
            conn, name="months reader", org_kind=OrgKind.AUTHORITY, org_code=factories.AUTHORITY,
            roles=frozenset({Role.READ}),
        )  # fmt: skip
        _, ministry = await add_client(
            conn,
            name="months ministry",
            org_kind=OrgKind.MINISTRY,
            org_code="*",
            roles=frozenset({Role.READ}),
        )
    async with running(create_feed_app(settings), "127.0.0.1", free_port()) as url:
        yield url, reader, ministry


async def test_the_feed_api_refuses_hostile_months_naming_field_and_rule(
    feed_api: tuple[str, str, str],
) -> None:
    url, reader, ministry = feed_api
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for name, month in HOSTILE.items():
            http.headers["Authorization"] = f"Bearer {reader}"
            response = await _get(http, f"/feeds/{factories.AUTHORITY}/{quote(month, safe='')}")
            problems += _refused_well(f"feed {name}", month, response)
            http.headers["Authorization"] = f"Bearer {ministry}"
            response = await _get(http, "/rollups/2025", {"through": month})
            problems += _refused_well(f"rollup through {name}", month, response)
    assert not problems, "\n".join(problems)


async def test_the_portal_refuses_hostile_months_naming_field_and_rule(
    pool: asyncpg.Pool, portal: RunningConsole
) -> None:
    problems: list[str] = []
    async with _logged_in(pool, portal, factories.AUTHORITY) as (http, _):
        for name, month in HOSTILE.items():
            for page in ("", "/download"):
                response = await _get(http, f"/feed/{factories.AUTHORITY}/{quote(month, safe='')}{page}")
                problems += _refused_well(f"portal feed{page} {name}", month, response)
    async with _ministry(pool, portal) as (http, _):
        for name, month in HOSTILE.items():
            for page in ("/rollups/2025", "/rollups/2025/download"):
                response = await _get(http, page, {"through": month})
                problems += _refused_well(f"portal {page} through {name}", month, response)
    assert not problems, "\n".join(problems)


async def _raw(url: str, request: bytes) -> bytes:
    """``request`` written to the server as it is; what came back before it closed the connection (a
    server that refuses may close before reading all of it: the write's failure is no answer)."""
    base = urlsplit(url)
    reader, writer = await asyncio.open_connection(base.hostname, base.port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await reader.read(-1)
    finally:
        writer.close()


async def test_a_head_past_the_limit_is_refused_naming_it_before_it_is_read(
    feed_api: tuple[str, str, str],
) -> None:
    """A 20 MB header, 100,000 small ones, a URL of a megabyte: each refused (431, 431, 414) naming the
    limit, nothing sent repeated, the connection closed; a head just within the limit is served, and so is
    the next request on a connection whose body was large (a body is not a head)."""
    url = feed_api[0]
    mark = "zq" + "7" * 10
    for name, request, status in (
        ("a 20 MB header", f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: {mark}".encode() + b"a" * 20_000_000
         + b"\r\n\r\n", 431),
        ("100,000 headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
         + b"".join(b"X-%d: %s\r\n" % (i, mark.encode()) for i in range(100_000)) + b"\r\n", 431),
        ("a megabyte URL", f"GET /feeds/131041/{mark}".encode() + b"9" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
         414),
    ):  # fmt: skip
        answer = await _raw(url, request)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1:2] == [str(status).encode()], (name, answer[:200])
        assert b"limit of 32768 bytes" in rest and mark.encode() not in answer, (name, answer[:300])
        assert b"connection: close" in rest.lower(), name
    within = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n\r\n"
    answer = await _raw(url, within + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer[:300]
    # A body of two megabytes (refused by the body limit or served, whichever: it is no head), then a
    # request whose head comes in pieces on the same connection.
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        big = await http.post("/healthz", content=b"a" * 2_000_000)
        assert big.status_code in (405, 413), big.status_code
        again = await http.get("/healthz", headers={"X-Pad": "a" * (MAX_HEAD_BYTES // 2)})
        assert again.status_code == 200


async def test_an_unreadable_json_body_is_a_400_naming_the_rule(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The shared view's search body is read by FastAPI (json.loads): nesting 100,000 deep, bytes that are
    not UTF-8 or a number of 5,000 digits were answered ``{"detail": "There was an error parsing the
    body"}`` — no rule, and not the hub's error shape (``{"error": …}``, as the OpenAPI documents 400)."""
    from consumers.shared_view.api import build_app as shared_view_app

    async with pool.acquire() as conn:
        _, reader = await add_client(
            conn, name="body reader", org_kind=OrgKind.AUTHORITY, org_code=factories.AUTHORITY,
            roles=frozenset({Role.READ}),
        )  # fmt: skip
    headers = {"Authorization": f"Bearer {reader}", "content-type": "application/json"}
    mark = b"zq4b1d7c9e"
    async with (
        running(shared_view_app(settings), "127.0.0.1", free_port()) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        for body, rule in (
            (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
            (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
            (b'{"purpose":"share_registration","name":"' + mark + b'\xff"}', "not UTF-8"),
            (b'{"purpose":"share_registration","name":"' + mark + b'","limit":' + b"9" * 5000 + b"}",
             "more than 4300 digits"),
        ):  # fmt: skip
            response = await http.post("/persons/search", content=body, headers=headers)
            assert response.status_code == 400, (rule, response.status_code, response.text[:200])
            assert rule in response.json()["error"], (rule, response.text[:300])
            assert mark.decode() not in response.text
