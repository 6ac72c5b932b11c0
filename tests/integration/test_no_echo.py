"""No refusal echoes the value it refuses: not in a 4xx body, a CSV row's error, a dead-letter reason or
a log line.

Hostile values go through every refusal path on the real stack: a unique marker string, full-width
digits where a code belongs (they pass ``\\d`` and reach the check-digit rule), an impossible era date,
a NUL, and a megabyte string. Every HTTP service is walked from its own routes (each path and query
parameter, each field of each body, the adapters' events field by field, CSV cells and header), records
a rogue producer writes straight to the topics are dead-lettered by every consumer, and the logs of all
of it are captured. The values are then looked for in everything that came back.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from consumers.feed.api import create_feed_app
from consumers.shared_view.api import build_app as shared_view_app
from contracts.envelope import Family, encode
from hub.console.app import create_console_app
from hub.portal.app import create_portal_app
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from infra.logging import configure_logging
from infra.topics import ensure_topics
from producers.adapters.app import employment_app, welfare_app
from producers.adapters.serve import running
from producers.submission import to_event
from tests import factories
from tests.helpers import delete_namespace, free_port, read_topic, three_clients
from tests.integration.test_hostile_consumers import _catch_up_all, _publish_raw, _raw

MARK = f"zq{uuid.uuid4().hex[:14]}"  # appears nowhere unless something repeats what it was sent
FULL_WIDTH = "１３１０４１"  # a code in full-width digits: \d takes it, the check-digit rule sees it
ERA_DATE = "令和6年2月30日"  # an impossible date in the form a paper form writes it
NEEDLES = (MARK, FULL_WIDTH, ERA_DATE, "R6.2.30")

# In a URL a megabyte is refused by the server before any route (and some clients refuse to send it):
# 8 KB there, a megabyte in bodies and files.
URL_VALUES = (MARK, FULL_WIDTH, f"{MARK}\x00", "R6.2.30", MARK + "x" * 8_000)
BODY_VALUES = (MARK, FULL_WIDTH, f"{MARK}\x00", ERA_DATE)
MEGABYTE = MARK + "x" * 1_000_000


def _leaks(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str], settings: Settings) -> Iterator[pytest.CaptureFixture[str]]:
    """The hub's logging, bound to this test's captured stderr (configured in the test: pytest swaps the
    stream between setup and call), put back afterwards."""
    try:
        yield capsys
    finally:
        configure_logging(settings.log_level)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tokens(pool: asyncpg.Pool) -> dict[str, str]:
    return await three_clients(pool, "no-echo")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own(settings: Settings) -> AsyncIterator[Settings]:
    """A topic namespace of this module's own (the adapters write to it, the consumers read it)."""
    mine = settings.model_copy(
        update={
            "topic_namespace": f"e{uuid.uuid4().hex[:10]}",
            "console_session_secret": "no-echo",
            "portal_session_secret": "no-echo",
        }
    )
    await ensure_topics(mine)
    yield mine
    await delete_namespace(mine)


# --- the requests ------------------------------------------------------------------------------------

_VALID_PATH = {"authority": factories.AUTHORITY, "month": "2025-04", "fiscal_year": "2025", "lang": "en"}


def _path(template: str, params: dict[str, str]) -> str:
    for name, value in params.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template


def _url_requests(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(method, path, query): each path parameter hostile in turn, then each query parameter."""
    for template, operations in openapi["paths"].items():
        if template in ("/healthz", "/readyz"):
            continue
        for method, op in operations.items():
            params = op.get("parameters", [])
            in_path = [p["name"] for p in params if p["in"] == "path"]
            valid = {n: _VALID_PATH.get(n, factories.person_key()) for n in in_path}
            for value in URL_VALUES:
                for name in in_path:
                    yield method, _path(template, valid | {name: value}), {}
                for p in params:
                    if p["in"] == "query":
                        yield method, _path(template, valid), {p["name"]: value}


def _schema_of(openapi: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    while schema is not None and "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _replaced(data: dict[str, Any], value: Any) -> Iterator[dict[str, Any]]:
    """``data`` with each field (and each field of a nested object, and a list's first item) replaced."""
    for key, old in data.items():
        yield data | {key: value}
        if isinstance(old, dict):
            for inner in _replaced(old, value):
                yield data | {key: inner}
        if isinstance(old, list) and old:
            first = old[0]
            items = _replaced(first, value) if isinstance(first, dict) else iter([value])
            for item in items:
                yield data | {key: [item, *old[1:]]}


def _events(family: Family) -> dict[str, Any]:
    pk = factories.person_key()
    return {
        Family.REGISTRATION: factories.registration(pk),
        Family.CONSENT: factories.consent(pk),
        Family.REFERRAL: factories.referral(pk),
        Family.PLACEMENT: factories.placement(pk),
        Family.RETENTION: factories.retention(pk, uuid.uuid4().hex),
    }[family].data


def _csv_files(family: Family) -> Iterator[bytes]:
    """A valid file, then one row per cell with that cell hostile, and a hostile header column."""
    valid = write_csv(family.value, [_events(family)], japanese=True).decode("utf-8-sig")
    header, row = list(csv.reader(io.StringIO(valid)))[:2]
    for value in (MARK, FULL_WIDTH, ERA_DATE, f"{MARK}\x00", MEGABYTE):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for i in range(len(row)):
            writer.writerow([*row[:i], value, *row[i + 1 :]])
        yield out.getvalue().encode()
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[*header, MARK], [*row, "x"]])
    yield out.getvalue().encode()


async def _walk(app: FastAPI, token: str, families: tuple[Family, ...] = ()) -> tuple[int, list[str]]:
    """Every refusal path of ``app`` with every hostile value; (requests sent, leaks found)."""
    leaks: list[str] = []
    sent = 0
    openapi = app.openapi()
    async with (
        running(app, "127.0.0.1", free_port()) as url,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http,
    ):

        async def send(method: str, path: str, **kw: Any) -> None:
            nonlocal sent
            response = await http.request(method.upper(), path, **kw)
            sent += 1
            assert response.status_code < 500, (method, path[:200], response.status_code)
            if found := _leaks(response.text):
                leaks.append(f"{method} {path[:80]} {response.status_code}: {found} in {response.text[:300]}")

        for method, path, query in _url_requests(openapi):
            await send(method, path, params=query)
        for template, operations in openapi["paths"].items():
            for method, op in operations.items():
                schema = _schema_of(openapi, op)
                if schema is None or "{" in template or schema.get("type") != "object":
                    continue
                fields = {k: "x" for k in schema.get("properties", {})}
                await send(method, template, json=fields | {MARK: "x"})
                for value in (*BODY_VALUES, MEGABYTE):
                    for body in _replaced(fields, value):
                        await send(method, template, json=body)
        for family in families:
            event = _events(family)
            await send("post", f"/v1/{family.value}", json=event | {MARK: 1})  # a field's name too
            personal = event.get("personal")
            if isinstance(personal, dict):
                await send("post", f"/v1/{family.value}", json=event | {"personal": personal | {MARK: "x"}})
            for value in (*BODY_VALUES, MEGABYTE):
                for body in _replaced(event, value):
                    await send("post", f"/v1/{family.value}", json=body)
                    if value is not MEGABYTE:
                        await send("post", f"/v1/{family.value}/batch", json=[event, body])
            for content in _csv_files(family):
                await send("post", f"/v1/{family.value}/csv", files={"file": ("f.csv", content, "text/csv")})
            await send("post", f"/v1/{family.value}", json=event, headers={"Idempotency-Key": MARK + "\x01"})
    return sent, leaks


async def _walk_pages(app: FastAPI, token: str, paths: tuple[str, ...]) -> tuple[int, list[str]]:
    """The console's and the portal's HTML: a refused login, then each page path signed in."""
    leaks: list[str] = []
    sent = 0
    async with (
        running(app, "127.0.0.1", free_port()) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        for value in URL_VALUES:
            response = await http.post("/login", data={"token": value})
            sent += 1
            assert response.status_code < 500
            leaks += [f"login {response.status_code}: {f}" for f in _leaks(response.text)]
        signed_in = await http.post("/login", data={"token": token})
        assert signed_in.status_code == 303, signed_in.text[:300]
        for template in paths:
            for value in URL_VALUES:
                for name in ("authority", "month", "fiscal_year", "lang"):
                    if "{" + name + "}" not in template:
                        continue
                    path = _path(template, {n: v for n, v in _VALID_PATH.items()} | {name: value})
                    for query in ({}, {"revision": value, "format": value, "prefectures": value}):
                        response = await http.get(path, params=query)
                        sent += 1
                        assert response.status_code < 500, (path[:120], response.status_code)
                        found = _leaks(response.text)
                        leaks += [f"GET {path[:80]} {response.status_code}: {found}"] if found else []
    return sent, leaks


# --- the tests -------------------------------------------------------------------------------------


async def test_no_http_refusal_echoes_the_value(
    tokens: dict[str, str], own: Settings, logs: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the test's own client, not the hub, logs URLs
    services: list[tuple[str, FastAPI, str, tuple[Family, ...]]] = [
        ("employment adapter", employment_app(own, relay=False), "national",
         (Family.REGISTRATION, Family.CONSENT, Family.PLACEMENT, Family.RETENTION)),
        ("welfare adapter", welfare_app(own, relay=False), "authority", (Family.REFERRAL, Family.CONSENT)),
        ("shared view", shared_view_app(own), "authority", ()),
        ("feed API", create_feed_app(own), "authority", ()),
    ]  # fmt: skip
    leaks: list[str] = []
    for name, app, who, families in services:
        sent, found = await _walk(app, tokens[who], families)
        assert sent > 20, name
        leaks += [f"{name}: {leak}" for leak in found]
    pages = [
        ("portal", create_portal_app(own), "authority",
         ("/feed/{authority}", "/feed/{authority}/{month}", "/feed/{authority}/{month}/individuals",
          "/feed/{authority}/{month}/download", "/rollups/{fiscal_year}", "/rollups/{fiscal_year}/download",
          "/lang/{lang}")),
        ("console", create_console_app(own, sample=False), "operator", ("/lang/{lang}",)),
    ]  # fmt: skip
    for name, app, who, paths in pages:
        sent, found = await _walk_pages(app, tokens[who], paths)
        assert sent > 5, name
        leaks += [f"{name}: {leak}" for leak in found]
    assert not leaks, "\n".join(leaks[:20])
    logged = [line[:300] for line in logs.readouterr().err.splitlines() if _leaks(line)]
    assert not logged, "a refused value reached the logs:\n" + "\n".join(logged[:10])


async def test_no_dead_letter_reason_echoes_the_value(
    pool: asyncpg.Pool, own: Settings, logs: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    pk = factories.person_key()
    registration = to_event(factories.registration(pk), os.urandom(32))
    consent = to_event(factories.consent(pk), None)
    placement = to_event(factories.placement(pk), os.urandom(32))
    rogue = [
        _raw(own, registration, authority=FULL_WIDTH),
        _raw(own, registration, site=f"{FULL_WIDTH}-01"),
        _raw(own, registration, office=FULL_WIDTH[:4]),
        _raw(own, registration, sex=MARK),
        _raw(own, registration, attributes=[MARK, MARK]),
        _raw(own, registration, desired_occupation={"group": MARK, "classification_version": MARK}),
        _raw(own, registration, registered_on=ERA_DATE),
        _raw(own, consent, recipients=[{"kind": "authority", "code": FULL_WIDTH}]),
        _raw(own, consent, recipients=[{"kind": "office", "code": MARK}]),
        _raw(own, consent, form_version=f"{MARK}\x00"),
        _raw(own, consent, captured=MARK),
        _raw(own, placement, occupation={"group": FULL_WIDTH[:2] + "9", "classification_version": "MHLW-2022"}),
        _raw(own, placement, route=MEGABYTE),
    ]  # fmt: skip
    key, headers, value = encode(consent)
    for header in ("ce_source", "ce_type", "ce_time", "ce_id"):
        swapped = [(k, MARK.encode() if k == header else v) for k, v in headers]
        rogue.append((own.topic(Family.CONSENT), key, swapped, value))
    await _publish_raw(own, rogue)

    await _catch_up_all(pool, own)

    async with pool.acquire() as conn:
        reasons = await conn.fetch(
            "SELECT consumer, reason FROM dead_letters WHERE source_topic = ANY($1::text[])", own.event_topics
        )
    consumers = {r["consumer"] for r in reasons}
    assert {"event-log", "shared-view", "placement-feed"} <= consumers, consumers
    assert len(reasons) >= 3 * len(rogue) - 3, len(reasons)  # every consumer refuses (nearly) all of them
    leaks = [r["reason"] for r in reasons if _leaks(r["reason"])]
    assert not leaks, leaks[:5]
    letters = await read_topic(own, own.deadletter_topic)
    assert letters
    for letter in letters:
        assert not _leaks(dict(letter.headers)["dlq_reason"].decode())
    logged = [line[:300] for line in logs.readouterr().err.splitlines() if _leaks(line)]
    assert not logged, "a refused value reached the logs:\n" + "\n".join(logged[:10])
