"""The feed portal over HTTP on the real stack: who gets in, one authority's feed only (refusals
recorded), Japanese first with marks and a legend, revisions and what changed, the consented list
recorded in the access log, downloads in every format, no value echoed from a malformed request; the
ministry's login: the roll-ups of each fiscal year and their downloads, and no authority's feed."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
import httpx
import openpyxl
from fastapi import Query
from fastapi.testclient import TestClient
from pydantic import AfterValidator

from consumers.feed.exports import rollup_csv
from consumers.feed.rollup import load_rollup
from domain.ministry import TABLE_KEYS, report_tables
from hub.portal.app import create_portal_app
from infra.auth import OrgKind, Role, add_client, revoke_client
from infra.config import Settings
from tests.browser.console_server import RunningConsole
from tests.browser.portal_data import PortalFeed


async def _token(pool: asyncpg.Pool, kind: OrgKind, code: str, roles: set[Role]) -> tuple[str, str]:
    async with pool.acquire() as conn:
        return await add_client(
            conn, name=f"portal {kind.value}", org_kind=kind, org_code=code, roles=frozenset(roles)
        )


@asynccontextmanager
async def _logged_in(
    pool: asyncpg.Pool, portal: RunningConsole, authority: str, kind: OrgKind = OrgKind.AUTHORITY
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    client_id, token = await _token(pool, kind, authority, {Role.READ})
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
        assert refused.status_code == 403 and "authority staff and the ministry only" in refused.text
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


async def test_a_revoked_reader_s_session_ends_at_the_next_request(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    """The session's client is read again on each request (``infra.auth.session_principal``)."""
    a = portal_feed.authorities[0]
    async with _logged_in(pool, portal, a) as (http, client_id):
        assert (await http.get(f"/feed/{a}/2023-02")).status_code == 200
        async with pool.acquire() as conn:
            assert await revoke_client(conn, client_id)
        ended = await http.get(f"/feed/{a}/2023-02")
        assert ended.status_code == 303 and ended.headers["location"].startswith("/login")


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
        # Full-width digits are refused as malformed (P1), not judged as another authority's code and
        # written to the access log as such.
        full_width = a.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
        r = await http.get(f"/feed/{full_width}/2023-02")
        assert r.status_code == 422 and full_width not in r.text
        # A month takes one spelling: ASCII YYYY-MM in the programme's years (the full-width one was read
        # as 2023-02; a month of year 0001 was looked up).
        for month in ("２０２３-０２", "%202023-02", "0001-02", "9999-12"):
            r = await http.get(f"/feed/{a}/{month}")
            assert r.status_code == 422, (month, r.status_code)
            assert "0001" not in r.text and "9999" not in r.text and "２０２３" not in r.text


def _known_code(value: str) -> str:
    """A rule that repeats its value (module level: the route's annotations are read from the module)."""
    raise ValueError(f"{value!r} is not a known code")


async def test_a_rule_that_repeats_the_value_is_not_echoed_in_the_error_page(settings: Settings) -> None:
    """The portal renders a refused request through the same renderer as the JSON APIs
    (``FieldError.for_client``), which drops a rule that repeats what was sent: a rule written later
    that names its value (here, a query parameter's) still does not echo it."""
    app = create_portal_app(settings)

    @app.get("/probe")
    async def probe(code: Annotated[str, AfterValidator(_known_code), Query()]) -> None:
        raise AssertionError("never valid")

    hostile = "<b>Tanaka Hanako</b>"
    response = TestClient(app).get("/probe", params={"code": hostile})
    assert response.status_code == 422
    assert "Tanaka" not in response.text and "code:" in response.text


# --- the ministry's login --------------------------------------------------------------------------------


def _ministry(pool: asyncpg.Pool, portal: RunningConsole) -> Any:
    return _logged_in(pool, portal, "*", OrgKind.MINISTRY)


async def test_the_ministry_sees_the_rollups_of_each_fiscal_year_in_japanese_first(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    async with _ministry(pool, portal) as (http, _):
        home = await http.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/rollups"
        latest = await http.get("/rollups")
        assert latest.status_code == 303 and latest.headers["location"].startswith("/rollups/")
        page = await http.get("/rollups/2022")
        html = page.text
        assert page.status_code == 200 and '<html lang="ja">' in html
        assert (
            "令和4年度（2022年度）" in html
            and "令和5年3月（2023年3月）まで" in html
            and "年度末の評価" in html
        )
        for title in ("自治体の目標達成状況", "拠点の目標達成状況", "支援対象者別の就職件数", "連携指標"):
            assert f"<h2>{title}</h2>" in html
        assert "全達成" in html and "全国" in html and "秘匿" in html  # classes, national row, the legend
        assert 'data-fy="2023"' in html and 'data-through="2023-02"' in html
        assert "<svg" in html and "data-segment=" in html  # the classes, drawn
        async with pool.acquire() as conn:
            body = await load_rollup(conn, 2022)
        national = body["indicators"]["national"]["new_job_seekers"]
        row = html.split('data-table="coordination"')[1].split('data-prefecture="計"')[1].split("</tr>")[0]
        assert f'<td class="n">{national:,}</td>' in row if national else ">x<" in row
        mid = await http.get("/rollups/2022", params={"through": "2023-02"})
        assert "令和5年2月（2023年2月）まで" in mid.text and "年度途中" in mid.text
        switched = await http.get("/rollups/2023")
        assert "令和5年度（2023年度）" in switched.text and 'aria-current="page">令和5年度' in switched.text
        every = await http.get("/rollups/2022", params={"prefectures": "all"})
        assert every.text.count("data-prefecture=") == 4 * 48
        await http.get("/lang/en", params={"next": "/rollups/2022"})
        english = await http.get("/rollups/2022")
        assert '<html lang="en">' in english.text and "FY2022" in english.text
        assert "Authorities by achievement of their targets" in english.text and "Nationwide" in english.text
        text = page.text + mid.text + switched.text + every.text + english.text
        leaked = {v for v in portal_feed.personal if v in text}
        assert not leaked, "a person's name, employer or case number on a roll-up page"


async def test_the_ministry_downloads_are_the_rollup_exporters_files(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    async with pool.acquire() as conn:
        body = await load_rollup(conn, 2022)
    async with _ministry(pool, portal) as (http, _):
        xlsx = await http.get("/rollups/2022/download", params={"format": "xlsx"})
        assert xlsx.status_code == 200 and xlsx.headers["content-type"].startswith("application/vnd.openxml")
        book = openpyxl.load_workbook(io.BytesIO(xlsx.content))
        assert book.sheetnames == [*report_tables(body), "説明"]
        assert 'filename="rollup_FY2022_2023-03_r' in xlsx.headers["content-disposition"]
        for table in TABLE_KEYS:
            for encoding in ("utf-8", "cp932"):
                got = await http.get(
                    "/rollups/2022/download", params={"format": "csv", "table": table, "encoding": encoding}
                )
                assert got.status_code == 200 and got.content == rollup_csv(body, table, encoding)[0]
                assert got.content.decode(encoding).startswith("都道府県,")


async def test_an_authority_login_is_refused_the_rollups(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    async with _logged_in(pool, portal, a) as (http, _):
        for path in ("/rollups", "/rollups/2022", "/rollups/2022/download?format=xlsx",
                     "/rollups/2022/download?format=csv&table=groups&encoding=cp932"):  # fmt: skip
            refused = await http.get(path)
            assert refused.status_code == 403, path
            assert "厚生労働省の閲覧用ログインでのみ" in refused.text
            assert "content-disposition" not in refused.headers


async def test_the_ministry_sees_no_authority_feed_and_no_person(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    async with _ministry(pool, portal) as (http, client_id):
        for path in (f"/feed/{a}", f"/feed/{a}/2023-01", f"/feed/{a}/2023-01/individuals",
                     f"/feed/{a}/2023-01/download?part=individuals&format=csv",
                     f"/feed/{a}/2023-01/download?part=aggregates&format=xlsx"):  # fmt: skip
            refused = await http.get(path)
            assert refused.status_code == 403, path
            assert "各自治体の提供データは閲覧できません" in refused.text
            assert not {v for v in portal_feed.personal if v in refused.text}
    rows = await pool.fetch(
        "SELECT outcome, person_keys FROM feed_access_log WHERE client_id = $1 ORDER BY at", client_id
    )
    assert len(rows) == 4 and all(r["outcome"] == "denied" and r["person_keys"] == [] for r in rows)


async def test_malformed_rollup_requests_are_refused_without_echo(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    async with _ministry(pool, portal) as (http, _):
        for path, params in (
            ("/rollups/evil", {}),
            ("/rollups/1999", {}),
            ("/rollups/2022", {"through": "<b>evil</b>"}),
            ("/rollups/2022", {"through": "0001-03"}),
            ("/rollups/2022", {"prefectures": "<b>evil</b>"}),
            ("/rollups/2022/download", {"table": "<b>evil</b>", "format": "csv"}),
            ("/rollups/2022/download", {"encoding": "<b>evil</b>", "format": "csv"}),
        ):
            r = await http.get(path, params=params)
            assert r.status_code == 422, (path, params, r.status_code)
            assert "evil" not in r.text and "1999" not in r.text
        missing = await http.get("/rollups/2030")
        assert missing.status_code == 404 and "この年度の集計はまだ作成されていません" in missing.text
