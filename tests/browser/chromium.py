"""Debian's Chromium driven by Playwright, for the browser tests (console and portal).

``playwright install`` cannot download browsers on machines that only reach package registries, so the
tests drive the system browser through ``executable_path`` (``tests/browser/ensure_chromium.sh``
installs it). Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from infra.config import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def chromium_present() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run tests/browser/ensure_chromium.sh first")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser(chromium_present: None) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        await chromium.close()
