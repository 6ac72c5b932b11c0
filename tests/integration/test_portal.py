"""The feed portal over HTTP on the real stack: who gets in, one authority's feed only (refusals
recorded), Japanese first with marks and a legend, revisions and what changed, the consented list
recorded in the access log, downloads in every format, no value echoed from a malformed request."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import openpyxl

from infra.auth import OrgKind, Role, add_client
from tests.browser.console_server import RunningConsole
from tests.browser.portal_data import PortalFeed


async def _token(pool: asyncpg.Pool, kind: OrgKind, code: str, roles: set[Role]) -> tuple[str, str]:
    async with pool.acquire() as conn:
        return await add_client(
            conn, name=f"portal {kind.value}", org_kind=kind, org_code=code, roles=frozenset(roles)
        )


@asynccontextmanager
async def _logged_in(
    pool: asyncpg.Pool, portal: RunningConsole, authority: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    client_id, token = await _token(pool, OrgKind.AUTHORITY, authority, {Role.READ})
    async with httpx.AsyncClient(base_url=portal.url) as http:
        ok = await http.post("/login", data={"token": token})
        assert ok.status_code == 303, ok.text
        yield http, client_id


async def test_only_authority_readers_get_in(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    _, operator = await _token(pool, OrgKind.OPERATOR, "*", {Role.OPERATE})
    _, publisher = await _token(pool, OrgKind.AUTHORITY, a, {Role.PUBLISH})
    _, reader = await _token(pool, OrgKind.AUTHORITY, a, {Role.READ})
    async with httpx.AsyncClient(base_url=portal.url) as http:
        first = await http.get(f"/feed/{a}/2023-02")
        assert first.status_code == 303 and first.headers["location"] == f"/login?next=/feed/{a}/2023-02"
        refused = await http.post("/login", data={"token": operator})
        assert refused.status_code == 403 and "authority staff only" in refused.text
        assert "ittai_portal" not in refused.cookies
        lacking = await http.post("/login", data={"token": publisher})
        assert lacking.status_code == 403 and "lacks role" in lacking.text
        wrong = await http.post("/login", data={"token": reader + "x"})
        assert wrong.status_code == 401
        ok = await http.post("/login", data={"token": reader, "next": f"/feed/{a}/2023-02"})
        assert ok.status_code == 303 and ok.headers["location"] == f"/feed/{a}/2023-02"
        page = await http.get(f"/feed/{a}/2023-02")
        assert page.status_code == 200
        for name, value in page.headers.items():
            if name.lower() == "content-security-policy":
                assert "script-src" not in value and "default-src 'none'" in value


async def test_feed_page_japanese_first_with_marks_revisions_and_changes(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    assert portal_feed.revised, "the late events must change a published figure of some feed"
    a, month = portal_feed.revised[0]
    async with _logged_in(pool, portal, a) as (http, _):
        latest = await http.get(f"/feed/{a}/{month}")
        html = latest.text
        assert '<html lang="ja">' in html
        assert f"令和5年{int(month[5:])}月分（2023年{int(month[5:])}月）" in html
        assert "秘匿" in html and "該当なし" in html  # the legend of x and －
        assert 'class="n hidden"' in html and ">x<" in html  # some cell is suppressed
        assert ">－<" in html
        assert "第2版" in html and "第2版での変更点" in html
        assert 'id="changes"' in html  # revision 2 lists what changed
        assert "<svg" in html and "stroke-dasharray" in html  # the chart and its pace line
        first = await http.get(f"/feed/{a}/{month}", params={"revision": 1})
        assert "第1版" in first.text and "過去の版を表示中" in first.text
        await http.get("/lang/en", params={"next": f"/feed/{a}/{month}"})
        english = await http.get(f"/feed/{a}/{month}")
        assert '<html lang="en">' in english.text and " 2023" in english.text
        assert "Revision 2" in english.text and "What changed in revision 2" in english.text


async def test_another_authoritys_feed_is_refused_and_recorded(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    own, other = portal_feed.authorities
    async with _logged_in(pool, portal, own) as (http, client_id):
        for path in (f"/feed/{other}/2023-01", f"/feed/{other}/2023-01/individuals",
                     f"/feed/{other}/2023-01/download?part=individuals&format=csv"):  # fmt: skip
            refused = await http.get(path)
            assert refused.status_code == 403, path
            assert "ご所属の自治体の提供データのみ" in refused.text
    rows = await pool.fetch(
        "SELECT outcome, fields, person_keys FROM feed_access_log WHERE client_id = $1 AND authority = $2",
        client_id,
        other,
    )
    assert len(rows) == 3 and all(r["outcome"] == "denied" and r["person_keys"] == [] for r in rows)


async def test_individual_list_names_only_the_consented_and_is_recorded(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    never = portal_feed.never_consented[a]
    assert never, "the stream must place people who never consented to disclosure to this authority"
    async with _logged_in(pool, portal, a) as (http, client_id):
        listed = 0
        for month in portal_feed.months:
            page = await http.get(f"/feed/{a}/{month}/individuals")
            assert page.status_code == 200
            listed += page.text.count("<tr><td>")
            for name in never:
                assert name not in page.text, (month, "a name without consent")
    assert listed > 0
    rows = await pool.fetch(
        "SELECT fields, person_keys, outcome, purpose FROM feed_access_log WHERE client_id = $1 AND 'name' = ANY(fields)",
        client_id,
    )
    assert len(rows) == len(portal_feed.months) and all(r["outcome"] == "granted" for r in rows)
    assert sum(len(r["person_keys"]) for r in rows) == listed


async def test_downloads_in_each_format(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    never = portal_feed.never_consented[a]
    base = f"/feed/{a}/2023-02/download"
    async with _logged_in(pool, portal, a) as (http, _):
        xlsx = await http.get(base, params={"part": "aggregates", "format": "xlsx"})
        book = openpyxl.load_workbook(io.BytesIO(xlsx.content))
        sheet = book["集計"]
        header = [c.value for c in sheet[1]]
        assert header[:2] == ["区分", "表"] and "値" in header
        values = [r[header.index("値")] for r in sheet.iter_rows(min_row=2, values_only=True)]
        assert any(isinstance(v, int) for v in values)  # counts are numbers Excel can sum
        cp932 = await http.get(base, params={"part": "aggregates", "format": "csv", "encoding": "cp932"})
        assert cp932.headers["content-type"].startswith("text/csv; charset=shift_jis")
        rows = list(csv.reader(io.StringIO(cp932.content.decode("cp932"))))
        assert rows[0][:2] == ["区分", "表"] and b"\r\n" in cp932.content
        utf8 = await http.get(base, params={"part": "aggregates", "format": "csv", "encoding": "utf-8"})
        assert utf8.content.decode("utf-8").startswith("区分,表")
        people = await http.get(base, params={"part": "individuals", "format": "xlsx"})
        sheet = openpyxl.load_workbook(io.BytesIO(people.content))["個人一覧"]
        names = {r[0] for r in sheet.iter_rows(min_row=2, values_only=True)}
        assert names and not names & never
        assert 'filename="feed_' in people.headers["content-disposition"]


async def test_malformed_requests_are_refused_without_echo(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    async with _logged_in(pool, portal, a) as (http, _):
        for path, params in (
            (f"/feed/{a}/2023-13", {}),
            (f"/feed/{a}/2023-02", {"revision": "<b>evil</b>"}),
            (f"/feed/{a}/2023-02/download", {"format": "<b>evil</b>"}),
            ("/feed/<b>evil</b>/2023-02", {}),
        ):
            r = await http.get(path, params=params)
            assert r.status_code in (403, 404, 422), (path, r.status_code)
            assert "evil" not in r.text and "2023-13" not in r.text
        missing = await http.get(f"/feed/{a}/2019-01")
        assert missing.status_code == 404
