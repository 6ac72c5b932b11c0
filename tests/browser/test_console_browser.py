"""The operator console in a real headless Chromium (Debian's package, driven by Playwright) against a
console running on the real stack.

What it shows: an authority cannot log in and an operator can; the figures on the pages equal what was
published (Kafka end offsets) and consumed (positions); a dead letter is redriven from the page and
lands; no page ever contains a person's personal data, even for poison messages that carry it in clear.
Screenshots of the main pages go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import uuid

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page

from consumers.event_log import EventLogHandler
from consumers.runtime import ConsumerRuntime
from contracts.envelope import Family, encode
from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from infra.kafka import client_options
from producers.outbox import OutboxRelay
from producers.submission import to_event
from tests import factories
from tests.browser.chromium import SCREENSHOTS, browser, chromium_present
from tests.browser.console_server import RunningConsole
from tests.browser.flows import Picky, consume_all, kafka_ends, publish
from tests.helpers import read_topic

__all__ = ["browser", "chromium_present"]  # the module-scoped fixtures of tests/browser/chromium.py
PAGES = ["/", "/topics", "/consumers", "/adapters", "/dead-letters", "/feeds", "/consent", "/audit"]

# Everything personal the factories put in clear into submissions: none of it may reach a page.
PERSONAL = [
    "髙橋",
    "花子",
    "タカハシ",
    "ハナコ",
    "1988-06-01",
    "03-1234-5678",
    "13010-12345678",
    "SJ-2025-0042",
    "𠮷野",
]

FIRST, SECOND = 9, 4


async def _token(pool: asyncpg.Pool, kind: OrgKind, code: str, role: Role) -> str:
    async with pool.acquire() as conn:
        _, token = await add_client(
            conn, name=f"browser {kind.value}", org_kind=kind, org_code=code, roles=frozenset({role})
        )
    return token


async def _operator_page(browser: Browser, console: RunningConsole, pool: asyncpg.Pool) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{console.url}/login")
    await page.fill("#token", await _token(pool, OrgKind.OPERATOR, "*", Role.OPERATE))
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{console.url}/")
    return page


async def _open(page: Page, url: str) -> None:
    """Go to a console page; any answer but 200 fails here, naming the page (not later, on a locator)."""
    response = await page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)


async def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _number(text: str) -> int:
    return int(text.strip().replace(",", ""))


async def _poison_with_clear_personal_data(settings: Settings) -> list[str]:
    """Two records a careless client might send: the personal block unsealed, and a name in a
    readable field. Both are dead-lettered; their reasons and bytes must not show on any page."""
    sub = factories.registration(factories.person_key())
    key, headers, _ = encode(to_event(sub, os.urandom(32)))
    unsealed = orjson.dumps(sub.data)  # "personal" in clear
    # The birth date where the office code goes: code-like, so the runtime's reason echoes it.
    misplaced = orjson.dumps({**sub.data, "office": "1988-06-01", "sex": "髙橋 花子", "personal": None})
    ids = []
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for value in (unsealed, misplaced):
            event_id = uuid.uuid4().hex
            hdrs = [(k, event_id.encode() if k == "ce_id" else v) for k, v in headers]
            await producer.send_and_wait(settings.topic(Family.REGISTRATION), value, key=key, headers=hdrs)
            ids.append(event_id)
    finally:
        await producer.stop()
    return ids


async def test_authority_refused_operator_admitted(
    browser: Browser, console: RunningConsole, ready: asyncpg.Pool
) -> None:
    page = await browser.new_page()
    await page.goto(f"{console.url}/consumers")
    assert page.url == f"{console.url}/login?next=/consumers"
    await page.fill("#token", await _token(ready, OrgKind.AUTHORITY, factories.AUTHORITY, Role.READ))
    async with page.expect_response(f"{console.url}/login") as refused:
        await page.click("button[type=submit]")
    assert (await refused.value).status == 403
    alert = await page.inner_text("[role=alert]")
    assert f"belongs to authority:{factories.AUTHORITY}" in alert and "operator clients only" in alert
    await _shot(page, "login-refused")
    await page.fill("#token", await _token(ready, OrgKind.OPERATOR, "*", Role.OPERATE))
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{console.url}/consumers")  # back where the login began
    assert "Consumer groups" in await page.inner_text("h1")
    await page.close()


async def test_pages_show_what_was_published_and_consumed(
    browser: Browser, console: RunningConsole, ready: asyncpg.Pool, console_settings: Settings
) -> None:
    s, pool = console_settings, ready
    pk = factories.person_key()
    first = [
        *factories.one_of_each(pk),
        *(factories.registration(factories.person_key()) for _ in range(FIRST)),
    ]
    await publish(s, pool, first, origin="browser-test")
    poison = await _poison_with_clear_personal_data(s)
    await consume_all(ConsumerRuntime(EventLogHandler(s), s, pool), pool, s)
    second = [factories.registration(factories.person_key()) for _ in range(SECOND)]
    await publish(s, pool, second, origin="browser-test")  # not consumed: the event-log lags by SECOND

    page = await _operator_page(browser, console, pool)
    truth = {t: await kafka_ends(s, t) for t in s.event_topics}
    assert truth[s.topic(Family.REGISTRATION)] == 1 + FIRST + len(poison) + SECOND

    assert _number(await page.inner_text("#lag-total")) == SECOND
    assert _number(await page.inner_text("#outbox-backlog")) == 0
    assert _number(await page.inner_text("#dead-open")) == len(poison)
    for topic, end in truth.items():
        assert _number(await page.inner_text(f'tr[data-topic="{topic}"] td.end')) == end, topic
    await _shot(page, "overview")

    await _open(page, f"{console.url}/topics")
    for topic, end in truth.items():
        section = page.locator(f'section[data-topic="{topic}"]')
        assert _number(await section.locator("td.end-total").inner_text()) == end, topic
        cells = await section.locator("td.end").all_inner_texts()
        assert sum(_number(c) for c in cells) == end and len(cells) == s.topic_partitions
    await page.wait_for_timeout(1200)  # let the sampler take a few samples so the charts have lines
    await page.reload()
    assert await page.locator("svg.chart polyline").count() >= 1
    await _shot(page, "topics")

    await _open(page, f"{console.url}/consumers")
    log = page.locator('section[data-consumer="event-log"]')
    assert _number(await log.locator(".lag-total").inner_text()) == SECOND
    lags = await log.locator("tr[data-topic] td.lag").all_inner_texts()
    assert sum(_number(x) for x in lags) == SECOND
    await _shot(page, "consumers")

    await _open(page, f"{console.url}/adapters")
    row = page.locator('tr[data-origin="browser-test"]')
    assert _number(await row.locator("td.backlog").inner_text()) == 0
    assert "JST" in await row.inner_text()  # times in JST (English page: Chromium asks for en-US)
    await _shot(page, "adapters")
    for path, name in (("/feeds", "feeds"), ("/consent", "consent"), ("/audit", "audit")):
        await _open(page, f"{console.url}{path}")
        await _shot(page, name)
    await page.close()


async def test_dead_letter_redriven_from_the_page_lands(
    browser: Browser, console: RunningConsole, ready: asyncpg.Pool, console_settings: Settings
) -> None:
    s, pool = console_settings, ready
    sub = factories.placement(factories.person_key())
    await publish(s, pool, [sub], origin="browser-test")
    handler = Picky(s, {sub.event_id: "office 1301 not yet configured"})
    await consume_all(ConsumerRuntime(handler, s, pool), pool, s)
    async with pool.acquire() as conn:
        letter_id = await conn.fetchval(
            "SELECT id FROM dead_letters WHERE consumer = 'picky-log' AND source_topic = $1",
            s.topic(Family.PLACEMENT),
        )
    assert letter_id is not None

    page = await _operator_page(browser, console, pool)
    await page.goto(f"{console.url}/dead-letters")
    row = page.locator(f'tr[data-letter="{letter_id}"]')
    assert "office 1301 not yet configured" in await row.locator("td.reason").inner_text()
    assert sub.event_id in await row.locator("td.headers").inner_text()  # ce_id shown: envelope only
    await _shot(page, "dead-letters")
    async with page.expect_navigation():
        await row.locator('button[value^="redrive:"]').click()
    outcome = await page.inner_text(f'li[data-letter="{letter_id}"]')
    assert "redrive: done" in outcome, outcome
    assert await page.locator(f'tr[data-letter="{letter_id}"]').count() == 0
    await _shot(page, "dead-letters-after-redrive")

    relay = OutboxRelay(s, pool)  # the redrive is in the outbox: the relay publishes it
    try:
        await relay.drain()
    finally:
        await relay.close()
    copies = [
        r
        for r in await read_topic(s, s.topic(Family.PLACEMENT))
        if dict(r.headers)["ce_id"] == sub.event_id.encode()
    ]
    assert len(copies) == 2 and copies[0].value == copies[1].value
    handler.reject.clear()  # the fix
    await consume_all(ConsumerRuntime(handler, s, pool), pool, s)

    await page.goto(f"{console.url}/audit")
    audit = await page.inner_text(f'tr.action-redrive:has-text("dead letter #{letter_id}")')
    assert "browser operator" in audit and "ok" in audit
    await page.close()


async def test_no_operator_page_contains_personal_data(
    browser: Browser, console: RunningConsole, ready: asyncpg.Pool, console_settings: Settings
) -> None:
    s, pool = console_settings, ready
    # Make sure the clear-text poison letters exist whatever ran before.
    before = await kafka_ends(s, s.deadletter_topic)
    await _poison_with_clear_personal_data(s)
    await consume_all(ConsumerRuntime(EventLogHandler(s), s, pool), pool, s)
    dlq = await read_topic(s, s.deadletter_topic)
    assert len(dlq) >= before + 2
    assert any("髙橋".encode() in (r.value or b"") for r in dlq)  # the raw letters do hold the name
    # the runtime does not echo a date-like value into the reason either (the console masks it regardless)
    assert not any(b"1988-06-01" in dict(r.headers).get("dlq_reason", b"") for r in dlq)

    page = await _operator_page(browser, console, pool)
    seen = {}
    for path in PAGES:
        response = await page.goto(f"{console.url}{path}")
        assert response is not None and response.status == 200, path
        seen[path] = await page.content()
    api = await page.goto(f"{console.url}/api/snapshot")
    assert api is not None
    seen["/api/snapshot"] = await api.text()
    await page.goto(f"{console.url}/dead-letters")
    await _shot(page, "dead-letters-masked")
    await page.close()

    assert "office: String should match pattern" in seen["/dead-letters"]  # the misplaced values' letter...
    assert "office: String should match pattern" in seen["/dead-letters"]  # ...listed, the date not echoed
    assert "personal.kid: Field required" in seen["/dead-letters"]  # the unsealed one too
    for path, html in seen.items():
        for value in PERSONAL:
            assert value not in html, f"{value!r} on {path}"
