"""Languages of the pages: every string on a page has Japanese, dates in JST and the era calendar,
numbers with separators, the language a request gets."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from starlette.requests import Request

from devtools.i18n.catalogue import extract, japanese
from domain.calendar import wareki
from hub.web import i18n


def _request(cookie: str | None = None, accept: str | None = None) -> Request:
    headers = []
    if cookie:
        headers.append((b"cookie", f"{i18n.LANG_COOKIE}={cookie}".encode()))
    if accept:
        headers.append((b"accept-language", accept.encode()))
    return Request({"type": "http", "headers": headers})


def test_every_string_on_a_page_has_japanese() -> None:
    extracted = {str(m.id) for m in extract() if m.id}
    ja = {str(m.id): m.string for m in japanese() if m.id}
    assert len(extracted) > 50
    missing = sorted(m for m in extracted if not ja.get(m))
    assert missing == [], "run `python -m devtools.i18n.catalogue` and translate these"


def test_placeholders_survive_translation() -> None:
    for m in japanese():
        if m.id and m.string:
            for token in ("%(n)s", "%(k)s", "%(rev)s", "%(built)s", "%(e)s"):
                assert (token in str(m.id)) == (token in str(m.string)), m.id


@pytest.mark.parametrize(
    ("d", "text"),
    [
        (date(2019, 4, 30), "平成31年4月30日"),
        (date(2019, 5, 1), "令和元年5月1日"),
        (date(2025, 6, 6), "令和7年6月6日"),
        (date(1989, 1, 8), "平成元年1月8日"),
    ],
)
def test_wareki(d: date, text: str) -> None:
    assert wareki(d) == text


def test_dates_are_shown_in_jst() -> None:
    moment = datetime(2025, 6, 5, 15, 30, tzinfo=UTC)  # 00:30 on the 6th in Japan
    i18n.use("ja")
    assert i18n.jst(moment) == "令和7年6月6日 00:30:00"
    assert i18n.month_label("2025-05") == "令和7年5月分（2025年5月）"
    i18n.use("en")
    assert i18n.jst(moment) == "2025-06-06 00:30:00 JST"
    assert i18n.month_label("2025-05") == "May 2025"


def test_numbers_have_thousands_separators() -> None:
    for lang in i18n.LANGS:
        i18n.use(lang)
        assert i18n.num(1234567) == "1,234,567"
        assert i18n.num(None) == "—"
        assert i18n.pct(0.4321) == "43.2%"


def test_translation_follows_the_request_language() -> None:
    i18n.use("ja")
    assert i18n.gettext("Log out") == "ログアウト"
    i18n.use("en")
    assert i18n.gettext("Log out") == "Log out"


@pytest.mark.parametrize(
    ("cookie", "accept", "default", "lang"),
    [
        (None, None, "ja", "ja"),  # the portal: Japanese first
        ("en", None, "ja", "en"),  # the switch wins
        (None, "ja-JP,ja;q=0.9,en;q=0.8", None, "ja"),  # the console follows Accept-Language
        (None, "en-US,en;q=0.9,ja;q=0.5", None, "en"),
        (None, "fr-FR", None, "en"),
        (None, None, None, "en"),
        ("xx", "ja", None, "ja"),  # an unknown cookie value is ignored
    ],
)
def test_negotiate(cookie: str | None, accept: str | None, default: i18n.Lang | None, lang: str) -> None:
    assert i18n.negotiate(_request(cookie, accept), default) == lang
