"""Languages of the hub's pages: Japanese and English, wording kept in one Babel message catalogue.

Source strings are English; ``hub/web/locale/ja/LC_MESSAGES/messages.po`` holds the Japanese. The
catalogue is compiled in memory with Babel when the module loads, so a clean clone needs no build step
and a compiled ``.mo`` can never drift from its ``.po`` (``pybabel extract/update`` keep the ``.po``
current; ``tests/unit/test_i18n.py`` fails when a string on a page has no Japanese).

Which language a request gets: the ``lang`` cookie (the switch on every page), then the page's own
default — the portal is Japanese first, the console follows ``Accept-Language``. Dates are shown in
JST; Japanese pages write them in the era calendar (和暦) as staff fill in their forms.
"""

from __future__ import annotations

import io
import re
from contextvars import ContextVar
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Literal

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import NullTranslations, Translations
from jinja2 import Environment
from starlette.requests import Request

from domain.calendar import JST, YearMonth, era_year, wareki

Lang = Literal["ja", "en"]
LANGS: tuple[Lang, ...] = ("ja", "en")
LANG_COOKIE = "ittai_lang"
LOCALE_DIR = Path(__file__).parent / "locale"

_current: ContextVar[Lang] = ContextVar("hub_web_lang", default="en")


def N_(message: str) -> str:
    """Marks a string for the catalogue where it is defined; it is translated where it is shown."""
    return message


@cache
def translations(lang: Lang) -> NullTranslations:
    if lang == "en":
        return NullTranslations()
    with (LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def gettext(message: str) -> str:
    return translations(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(_current.get()).ngettext(singular, plural, n)


def current() -> Lang:
    return _current.get()


def use(lang: Lang) -> None:
    """The language of what this task renders next (set per request before a page is rendered)."""
    _current.set(lang)


_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


def negotiate(request: Request, default: Lang | None) -> Lang:
    """The ``lang`` cookie, else ``default``, else the best of ``Accept-Language`` (English if none)."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGS:
        return chosen
    if default is not None:
        return default
    best: tuple[float, Lang] = (0.0, "en")
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGS:
            continue
        q = 1.0
        if params.strip().startswith("q="):
            # RFC 9110's qvalue, ASCII only: float() would take "inf", "nan" and full-width "１".
            text = params.strip()[2:]
            q = float(text) if _QVALUE.fullmatch(text) else 0.0
        if q > best[0]:
            best = (q, primary)
    return best[1]


# --- formatting ---------------------------------------------------------------------------------------


def num(value: float | int | None, digits: int = 0) -> str:
    """Thousands separators in the page's language; ``—`` for a missing figure."""
    if value is None:
        return "—"
    fmt = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, format=fmt, locale=_current.get())


def pct(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return format_percent(value, format="#,##0." + "0" * digits + "%", locale=_current.get())


def jst(value: datetime | None) -> str:
    """A moment in JST: 令和7年6月6日 09:00 on Japanese pages, 2025-06-06 09:00 JST on English ones."""
    if value is None:
        return "—"
    local = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(JST)
    if _current.get() == "ja":
        return f"{wareki(local.date())} {local:%H:%M:%S}"
    return f"{local:%Y-%m-%d %H:%M:%S} JST"


def day(value: date | None) -> str:
    if value is None:
        return "—"
    return wareki(value) if _current.get() == "ja" else value.isoformat()


def month_label(month: str | YearMonth) -> str:
    """令和7年5月分 (2025年5月) on Japanese pages, May 2025 on English ones."""
    y, m = (int(month[:4]), int(month[5:7])) if isinstance(month, str) else month
    if _current.get() == "ja":
        return f"{era_year(date(y, m, 1))}{m}月分（{y}年{m}月）"
    return date(y, m, 1).strftime("%B %Y")


def short_month(month: str | YearMonth) -> str:
    y, m = (int(month[:4]), int(month[5:7])) if isinstance(month, str) else month
    return f"{y % 100:02d}/{m}" if _current.get() == "en" else f"{m}月"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return gettext("never")
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds < 1:
        return gettext("just now")
    for unit, size in ((N_("%(n)s d ago"), 86400), (N_("%(n)s h ago"), 3600), (N_("%(n)s min ago"), 60)):
        if seconds >= size:
            return gettext(unit) % {"n": f"{seconds / size:.0f}"}
    return gettext("%(n)s s ago") % {"n": f"{seconds:.0f}"}


def install(env: Environment) -> None:
    """Give a Jinja environment ``_``/``{% trans %}`` and the formatting filters of the current language."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(num=num, pct=pct, jst=jst, day=day, month_label=month_label, ago=ago)
    env.globals.update(current_lang=current, langs=LANGS)
