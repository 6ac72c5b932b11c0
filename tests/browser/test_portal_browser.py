"""The feed portal in a real headless Chromium (Debian's package, driven by Playwright), in Japanese, on
the real stack: login, switching months, a revision and what changed, a download of each format, the
refusal of another authority's feed, and no name on any page for a person without consent; the
ministry's login: the roll-ups, switching fiscal years, each download, and the refusal of an authority's
credential. Screenshots go to ``artifacts/screenshots/portal-*.png``."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import openpyxl
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page

from infra.auth import OrgKind, Role, add_client
from tests.browser.chromium import SCREENSHOTS, browser, chromium_present
from tests.browser.console_server import RunningConsole
from tests.browser.portal_data import PortalFeed

__all__ = ["browser", "chromium_present"]  # the module-scoped fixtures of tests/browser/chromium.py


async def _reader_token(pool: asyncpg.Pool, authority: str, kind: OrgKind = OrgKind.AUTHORITY) -> str:
    async with pool.acquire() as conn:
        _, token = await add_client(
            conn,
            name="福祉課 閲覧" if kind is OrgKind.AUTHORITY else "職業安定局 閲覧",
            org_kind=kind,
            org_code=authority,
            roles=frozenset({Role.READ}),
        )
    return token


@pytest_asyncio.fixture(loop_scope="session")
async def staff(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(
        locale="ja-JP", viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    yield context
    await context.close()


async def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"portal-{name}.png"), full_page=True)


async def _login(page: Page, portal: RunningConsole, pool: asyncpg.Pool, authority: str, month: str) -> None:
    await page.goto(f"{portal.url}/feed/{authority}/{month}")
    assert page.url == f"{portal.url}/login?next=/feed/{authority}/{month}"
    assert await page.inner_text("h1") == "ログイン"
    await page.fill("#token", await _reader_token(pool, authority))
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{portal.url}/feed/{authority}/{month}")


async def test_login_and_month_switch_in_japanese(
    staff: BrowserContext, portal: RunningConsole, pool: asyncpg.Pool, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    page = await staff.new_page()
    await page.goto(f"{portal.url}/login")
    await _shot(page, "login")
    await _login(page, portal, pool, a, "2023-01")
    assert await page.inner_text("h1") == "令和5年1月分（2023年1月）"
    assert "秘匿" in await page.inner_text("#legend")
    await _shot(page, "feed")
    await page.click('nav.months a[data-month="2023-03"]')
    await page.wait_for_url(f"{portal.url}/feed/{a}/2023-03")
    assert await page.inner_text("h1") == "令和5年3月分（2023年3月）"
    assert await page.get_attribute('nav.months a[aria-current="page"]', "data-month") == "2023-03"
    bars = page.locator("svg.month-chart rect.bar-grey")
    assert await bars.count() >= 3  # three months of new job seekers, at least
    await page.locator("#year").screenshot(path=str(SCREENSHOTS / "portal-chart.png"))
    await page.close()


async def test_revision_history_and_what_changed(
    staff: BrowserContext, portal: RunningConsole, pool: asyncpg.Pool, portal_feed: PortalFeed
) -> None:
    a, month = portal_feed.revised[0]
    page = await staff.new_page()
    await _login(page, portal, pool, a, month)
    assert "第2版" in await page.inner_text("#revision")
    changes = page.locator("#changes tbody tr")
    assert await changes.count() >= 1
    first_change = await changes.first.inner_text()
    assert any(
        word in first_change for word in ("就職", "新規求職者", "目標", "定着")
    )  # labelled in Japanese
    await page.locator("#history").screenshot(path=str(SCREENSHOTS / "portal-revision-diff.png"))
    await page.click('#history tr[data-revision="1"] a')
    await page.wait_for_url(f"{portal.url}/feed/{a}/{month}?revision=1")
    assert "過去の版を表示中" in await page.inner_text("#revision")
    assert await page.locator("#changes-none").count() == 1
    await page.close()


async def test_download_each_format(
    staff: BrowserContext, portal: RunningConsole, pool: asyncpg.Pool, portal_feed: PortalFeed, tmp_path: Path
) -> None:
    a = portal_feed.authorities[0]
    never = portal_feed.never_consented[a]
    page = await staff.new_page()
    await _login(page, portal, pool, a, "2023-02")
    files: dict[str, bytes] = {}
    for fmt in (
        "xlsx",
        "csv-cp932",
        "csv-utf8",
        "individuals-xlsx",
        "individuals-csv-cp932",
        "individuals-csv-utf8",
    ):
        async with page.expect_download() as info:
            await page.click(f'#downloads a[data-format="{fmt}"]')
        download = await info.value
        target = tmp_path / download.suggested_filename
        await download.save_as(target)
        files[fmt] = target.read_bytes()
        assert download.suggested_filename.startswith(f"feed_{a}_2023-02_r"), download.suggested_filename
    book = openpyxl.load_workbook(io.BytesIO(files["xlsx"]))
    assert book.sheetnames == ["集計"] and book["集計"]["A1"].value == "区分"
    assert files["csv-cp932"].decode("cp932").startswith("区分,")
    assert files["csv-utf8"].decode("utf-8").startswith("区分,")
    people = openpyxl.load_workbook(io.BytesIO(files["individuals-xlsx"]))["個人一覧"]
    listed = {r[0] for r in people.iter_rows(min_row=2, values_only=True)}
    utf8_rows = list(csv.reader(io.StringIO(files["individuals-csv-utf8"].decode("utf-8"))))
    assert listed == {r[0] for r in utf8_rows[1:]} and not listed & never
    assert files["individuals-csv-cp932"].decode("cp932").startswith("氏名,")
    await page.close()


async def test_another_authority_is_refused(
    staff: BrowserContext, portal: RunningConsole, pool: asyncpg.Pool, portal_feed: PortalFeed
) -> None:
    own, other = portal_feed.authorities
    page = await staff.new_page()
    await _login(page, portal, pool, own, "2023-01")
    response = await page.goto(f"{portal.url}/feed/{other}/2023-01")
    assert response is not None and response.status == 403
    assert "ご所属の自治体の提供データのみ" in await page.inner_text("[role=alert]")
    await _shot(page, "refused")
    response = await page.goto(f"{portal.url}/feed/{other}/2023-01/individuals")
    assert response is not None and response.status == 403
    await page.close()


async def test_no_name_on_any_page_without_consent(
    staff: BrowserContext, portal: RunningConsole, pool: asyncpg.Pool, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    never = portal_feed.never_consented[a]
    assert never, "the stream must place people who never consented to disclosure to this authority"
    page = await staff.new_page()
    await _login(page, portal, pool, a, "2023-01")
    pages: dict[str, str] = {}
    for month in portal_feed.months:
        for path in (f"/feed/{a}/{month}", f"/feed/{a}/{month}?revision=1", f"/feed/{a}/{month}/individuals"):
            response = await page.goto(f"{portal.url}{path}")
            assert response is not None and response.status == 200, path
            pages[path] = await page.content()
    await page.goto(f"{portal.url}/feed/{a}/2023-02/individuals")
    await _shot(page, "individuals")
    await page.close()
    shown = sum(html.count("<tr><td>") for path, html in pages.items() if path.endswith("/individuals"))
    assert shown > 0, "somebody with consent is listed, so the check below could fail"
    for path, html in pages.items():
        for name in never:
            assert name not in html, f"a name without consent on {path}"


# --- the ministry's login --------------------------------------------------------------------------------


async def _ministry_login(page: Page, portal: RunningConsole, pool: asyncpg.Pool) -> None:
    await page.goto(f"{portal.url}/rollups/2022")
    assert page.url == f"{portal.url}/login?next=/rollups/2022"
    await page.fill("#token", await _reader_token(pool, "*", OrgKind.MINISTRY))
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{portal.url}/rollups/2022")


async def test_ministry_login_and_fiscal_year_switch_in_japanese(
    staff: BrowserContext, portal: RunningConsole, pool: asyncpg.Pool, portal_feed: PortalFeed
) -> None:
    page = await staff.new_page()
    await _ministry_login(page, portal, pool)
    assert await page.inner_text("h1") == "令和4年度（2022年度）"
    assert "厚生労働省" in await page.inner_text("header")
    assert "年度末の評価" in await page.inner_text("#revision")
    assert "秘匿" in await page.inner_text("#legend")
    headings = await page.locator("section.rollup h2").all_inner_texts()
    assert headings == ["自治体の目標達成状況", "拠点の目標達成状況", "支援対象者別の就職件数", "連携指標"]
    sites = page.locator('table[data-table="sites"] tr[data-prefecture="計"] td')
    evaluated = int((await sites.nth(0).inner_text()).replace(",", ""))
    assert evaluated > 0  # the year end: sites in 全達成, 一部達成 or 未達成
    assert await page.locator("svg.stacked-chart rect[data-segment]").count() >= 2
    await _shot(page, "ministry")
    await page.locator("#charts").screenshot(path=str(SCREENSHOTS / "portal-ministry-chart.png"))
    await page.click('nav.years a[data-fy="2023"]')
    await page.wait_for_url(f"{portal.url}/rollups/2023")
    assert await page.inner_text("h1") == "令和5年度（2023年度）"
    assert await page.get_attribute('nav.years a[aria-current="page"]', "data-fy") == "2023"
    assert "年度途中" in await page.inner_text("#revision")
    await page.click('nav.years a[data-fy="2022"]')
    await page.wait_for_url(f"{portal.url}/rollups/2022")
    await page.click('nav.throughs a[data-through="2023-02"]')
    await page.wait_for_url(f"{portal.url}/rollups/2022?through=2023-02")
    assert "令和5年2月（2023年2月）まで" in await page.inner_text("#revision")
    shown = await page.content()
    assert not {v for v in portal_feed.personal if v in shown}
    await page.close()


async def test_ministry_downloads_each_format(
    staff: BrowserContext, portal: RunningConsole, pool: asyncpg.Pool, portal_feed: PortalFeed, tmp_path: Path
) -> None:
    page = await staff.new_page()
    await _ministry_login(page, portal, pool)
    formats = ["xlsx"] + [f"csv-{e}-{t}" for t in ("authorities", "sites", "groups", "coordination")
                          for e in ("cp932", "utf8")]  # fmt: skip
    files: dict[str, bytes] = {}
    for fmt in formats:
        async with page.expect_download() as info:
            await page.click(f'#downloads a[data-format="{fmt}"]')
        download = await info.value
        target = tmp_path / download.suggested_filename
        await download.save_as(target)
        files[fmt] = target.read_bytes()
        assert download.suggested_filename.startswith("rollup_FY2022_2023-03_r"), download.suggested_filename
    book = openpyxl.load_workbook(io.BytesIO(files["xlsx"]))
    assert book.sheetnames[:4] == [
        "自治体の目標達成状況",
        "拠点の目標達成状況",
        "支援対象者別の就職件数",
        "連携指標",
    ]
    assert book["連携指標"]["A2"].value == "全国"
    for fmt, data in files.items():
        if fmt != "xlsx":
            text = data.decode("cp932" if "cp932" in fmt else "utf-8")
            assert text.startswith("都道府県,") and "\r\n全国," in text, fmt
    await page.close()


async def test_an_authority_credential_is_refused_the_ministry_pages(
    staff: BrowserContext, portal: RunningConsole, pool: asyncpg.Pool, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    page = await staff.new_page()
    await _login(page, portal, pool, a, "2023-01")
    response = await page.goto(f"{portal.url}/rollups/2022")
    assert response is not None and response.status == 403
    assert "厚生労働省の閲覧用ログインでのみ" in await page.inner_text("[role=alert]")
    await _shot(page, "ministry-refused")
    response = await page.goto(f"{portal.url}/rollups/2022/download?format=xlsx")
    assert response is not None and response.status == 403
    await page.close()
