"""The feed portal in a real headless Chromium (Debian's package, driven by Playwright), in Japanese, on
the real stack: login, switching months, a revision and what changed, a download of each format, the
refusal of another authority's feed, and no name on any page for a person without consent.
Screenshots go to ``artifacts/screenshots/portal-*.png``."""

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


async def _reader_token(pool: asyncpg.Pool, authority: str) -> str:
    async with pool.acquire() as conn:
        _, token = await add_client(
            conn,
            name="福祉課 閲覧",
            org_kind=OrgKind.AUTHORITY,
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
    assert "就職" in first_change or "新規求職者" in first_change or "目標" in first_change
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
