"""Every path and query parameter of the portal's pages (besides months: test_hostile_requests.py) with the
owner's hostile values — a NUL, a 1 MB string, an integer past 2^31, full-width digits, a formula, another
authority's code: a 4xx (or, for another authority, the refusal of its feed), never a 5xx, never the
value repeated."""

from __future__ import annotations

from urllib.parse import quote

import asyncpg
import httpx

from tests import factories
from tests.browser.console_server import RunningConsole
from tests.conftest import PortalFeed
from tests.integration.test_hostile_requests import _get
from tests.integration.test_portal import _logged_in, _ministry

HOSTILE = {
    "a NUL": "1\x002",
    "a megabyte": "7" * 1_000_000,
    "past int32": str(2**31),
    "past int64": str(2**64),
    "full-width digits": "１３１０４１",
    "a formula": "=1+2",
    "negative": "-1",
}


def _problems(name: str, sent: str, response: httpx.Response) -> list[str]:
    out = []
    if not 400 <= response.status_code < 500:
        out.append(f"{name}: status {response.status_code}")
    probe = sent if len(sent) < 40 else sent[:40]
    if len(probe.strip("-=1")) >= 2 and probe in response.text:
        out.append(f"{name}: echoed: {response.text[:200]!r}")
    return out


async def test_the_portal_refuses_hostile_parameters_without_a_5xx_or_an_echo(
    pool: asyncpg.Pool, portal: RunningConsole, portal_feed: PortalFeed
) -> None:
    a = portal_feed.authorities[0]
    problems: list[str] = []
    async with _logged_in(pool, portal, a) as (http, _):
        for name, value in HOSTILE.items():
            quoted = quote(value, safe="")
            for path in (f"/feed/{quoted}", f"/feed/{quoted}/2023-02", f"/feed/{quoted}/2023-02/individuals",
                         f"/feed/{quoted}/2023-02/download"):  # fmt: skip
                problems += _problems(f"{path[:30]} {name}", value, await _get(http, path))
            for page in ("", "/individuals", "/download"):
                path = f"/feed/{a}/2023-02{page}"
                problems += _problems(
                    f"{page} revision {name}", value, await _get(http, path, {"revision": value})
                )
            for param in ("part", "format", "encoding"):
                response = await _get(http, f"/feed/{a}/2023-02/download", {param: value})
                problems += _problems(f"download {param} {name}", value, response)
        # another authority's feed (one the portal has, and one it has not): refused as such
        for other in {*portal_feed.authorities, factories.AUTHORITY, factories.OTHER_AUTHORITY} - {a}:
            for path in (f"/feed/{other}", f"/feed/{other}/2023-02", f"/feed/{other}/2023-02/individuals"):
                response = await _get(http, path)
                if response.status_code != 403:
                    problems.append(f"{path}: status {response.status_code}")
    async with _ministry(pool, portal) as (http, _):
        for name, value in HOSTILE.items():
            quoted = quote(value, safe="")
            for path in (f"/rollups/{quoted}", f"/rollups/{quoted}/download"):
                problems += _problems(f"{path[:30]} {name}", value, await _get(http, path))
            for param in ("prefectures", "format", "table", "encoding"):
                page = "/rollups/2022" if param == "prefectures" else "/rollups/2022/download"
                problems += _problems(f"{page} {param} {name}", value, await _get(http, page, {param: value}))
    assert not problems, "\n".join(problems)
