"""Dates as they arrive from Japanese government systems, ages, age bands and fiscal years.

Government forms write dates in the Japanese era calendar (和暦): 令和 (Reiwa, R), 平成 (Heisei, H) and
昭和 (Shōwa, S), e.g. 令和6年4月1日 or R6.4.1; the first year of an era is written 元年 ("first year").
Hello Work statistics group people into age bands (年齢階級) and report by fiscal year (年度, April to
March).
"""

from __future__ import annotations

import calendar as _stdcal
import datetime as _dt
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

# Japan Standard Time (UTC+9, no daylight saving): the zone of every date the programme's rules speak of.
JST = _dt.timezone(_dt.timedelta(hours=9), "JST")


class DateFormatError(ValueError):
    """A date or month that breaks a rule; the message names the rule, never the value (a date may be
    a birth date, and refusals reach logs, dead letters and other parties)."""


@dataclass(frozen=True)
class _Era:
    name: str
    letter: str
    romaji: str
    first_day: _dt.date
    last_day: _dt.date | None
    offset: int  # Gregorian year = offset + era year


_ERAS = (
    _Era("令和", "R", "Reiwa", _dt.date(2019, 5, 1), None, 2018),
    _Era("平成", "H", "Heisei", _dt.date(1989, 1, 8), _dt.date(2019, 4, 30), 1988),
    _Era("昭和", "S", "Showa", _dt.date(1926, 12, 25), _dt.date(1989, 1, 7), 1925),
)
_ERA_BY_KEY = {e.name: e for e in _ERAS} | {e.letter: e for e in _ERAS}

# ASCII digits only (after NFKC, which folds full-width ones): Python's \d on str is any Unicode digit
# (٢٠٢٤, ২০২৪), which NFKC leaves as they are and int() would read.
_ISO = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})", re.ASCII)
_KANJI_GREGORIAN = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日", re.ASCII)
_KANJI_ERA = re.compile(r"(令和|平成|昭和)(元|\d{1,2})年(\d{1,2})月(\d{1,2})日", re.ASCII)
_LETTER_ERA = re.compile(r"([RHS])(\d{1,2})\.(\d{1,2})\.(\d{1,2})", re.ASCII)
# A reporting month from outside (a URL, the command line) takes one spelling, as the contracts' dates do:
# YYYY-MM in ASCII digits, nothing around them, in the programme's years.
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
MONTH_PATTERN = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
"""``parse_month``'s rule as a pattern, for the HTTP APIs' path and query parameters."""
# The programme's years: contracts.types bounds every date and instant of an event by them.
FIRST_YEAR, LAST_YEAR = 2000, 2099


def _normalise(text: str) -> str:
    # NFKC folds full-width digits and letters (２０２４, Ｒ６) and the era ligatures ㋿ and ㍻ into
    # their plain forms, which is how they come out of scanned or hand-typed forms.
    return unicodedata.normalize("NFKC", text).strip().replace(" ", "")


def _real_date(year: int, month: int, day: int) -> _dt.date:
    if year < 1:  # else datetime's own ValueError, which is not a DateFormatError
        raise DateFormatError("not a real date: year 0 does not exist")
    if not 1 <= month <= 12:
        raise DateFormatError("not a real date: the month is outside 1 to 12")
    days = _stdcal.monthrange(year, month)[1]
    if not 1 <= day <= days:
        raise DateFormatError("not a real date: the day is outside its month")
    return _dt.date(year, month, day)


def _era_date(original: str, era: _Era, era_year: int, month: int, day: int) -> _dt.date:
    if era_year < 1:
        raise DateFormatError("not a real date: era years start at 1 (元年)")
    result = _real_date(era.offset + era_year, month, day)
    if result < era.first_day:
        raise DateFormatError(
            f"not a real date: {era.name} ({era.romaji}) began on {era.first_day.isoformat()}"
        )
    if era.last_day is not None and result > era.last_day:
        raise DateFormatError(
            f"not a real date: {era.name} ({era.romaji}) ended on {era.last_day.isoformat()}"
        )
    return result


def parse_date(text: str) -> _dt.date:
    """Parse ISO (2024-04-01, 2024/4/1), 2024年4月1日, 令和6年4月1日, 令和元年5月1日 or R6.4.1 / R06.04.01."""
    value = _normalise(text)
    if m := _ISO.fullmatch(value) or _KANJI_GREGORIAN.fullmatch(value):
        return _real_date(int(m[1]), int(m[2]), int(m[3]))
    if m := _KANJI_ERA.fullmatch(value):
        era_year = 1 if m[2] == "元" else int(m[2])
        return _era_date(text, _ERA_BY_KEY[m[1]], era_year, int(m[3]), int(m[4]))
    if m := _LETTER_ERA.fullmatch(value.upper()):
        return _era_date(text, _ERA_BY_KEY[m[1]], int(m[2]), int(m[3]), int(m[4]))
    raise DateFormatError("is not a date: expected YYYY-MM-DD, YYYY/M/D, 令和N年M月D日 or R/H/S N.M.D")


_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def parse_day(text: str) -> _dt.date:
    """A day typed where one spelling is taken (an operator's ``--from``): YYYY-MM-DD in ASCII digits, of
    the programme's years, as the contracts take a date (``parse_date`` is for a file's cells, era dates
    and all). ``date.fromisoformat`` would also read 20240401 and the week date 2024-W14-1."""
    m = _DAY.fullmatch(text)
    if m is None:
        raise DateFormatError("is not a date: expected YYYY-MM-DD in ASCII digits, e.g. 2025-04-01")
    day = _real_date(int(m[1]), int(m[2]), int(m[3]))
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise DateFormatError("is not a date of the programme: expected 2000-01-01 .. 2099-12-31")
    return day


def era_year(d: _dt.date) -> str:
    """The era year of a date as forms write it (和暦): 令和7年, 令和元年 for an era's first year."""
    era = next(e for e in _ERAS if d >= e.first_day)
    n = d.year - era.offset
    return f"{era.name}{'元' if n == 1 else n}年"


def wareki(d: _dt.date) -> str:
    """A date in the Japanese era calendar, e.g. 令和7年6月6日 (Shōwa onwards)."""
    return f"{era_year(d)}{d.month}月{d.day}日"


def age_on(birth: _dt.date, on: _dt.date) -> int:
    """Completed years on `on`.

    Plain birthday arithmetic: someone born on 29 February becomes a year older on 1 March in common
    years. (The Japanese legal rule, under which the year completes the day before the birthday, is
    deliberately not applied: statistics count age on the event date the way Hello Work forms do.)
    """
    if on < birth:
        raise DateFormatError("age is undefined: born later than the day it is taken on")
    had_birthday = (on.month, on.day) >= (birth.month, birth.day)
    return on.year - birth.year - (0 if had_birthday else 1)


class AgeBand(StrEnum):
    """Hello Work statistics age bands (年齢階級).

    Values are the labels used in the published tables; an ASCII hyphen is used rather than the en dash
    of printed reports because CP932 (the Shift_JIS variant of government CSV files) has no en dash.
    """

    UNDER_20 = "19以下"
    A20_24 = "20-24"
    A25_29 = "25-29"
    A30_34 = "30-34"
    A35_39 = "35-39"
    A40_44 = "40-44"
    A45_49 = "45-49"
    A50_54 = "50-54"
    A55_59 = "55-59"
    A60_64 = "60-64"
    OVER_64 = "65以上"

    @property
    def label_en(self) -> str:
        if self is AgeBand.UNDER_20:
            return "19 and under"
        if self is AgeBand.OVER_64:
            return "65 and over"
        return self.value


_BANDS = tuple(AgeBand)


def age_band(age: int) -> AgeBand:
    if age < 0:
        raise ValueError(f"age {age} is negative")
    if age <= 19:
        return AgeBand.UNDER_20
    if age >= 65:
        return AgeBand.OVER_64
    return _BANDS[(age - 20) // 5 + 1]


def fiscal_year(d: _dt.date) -> int:
    """年度 (fiscal year) named by the calendar year in which it starts: 2025-03-31 is in FY2024."""
    return d.year if d.month >= 4 else d.year - 1


def fiscal_year_bounds(fy: int) -> tuple[_dt.date, _dt.date]:
    return _dt.date(fy, 4, 1), _dt.date(fy + 1, 3, 31)


class YearMonth(NamedTuple):
    year: int
    month: int

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def parse_month(text: str) -> YearMonth:
    """Parse a reporting month written YYYY-MM (e.g. 2025-04), of the programme's years (2000-2099)."""
    m = _MONTH.fullmatch(text)
    if m is None:
        raise DateFormatError("is not a month: expected YYYY-MM in ASCII digits, e.g. 2025-04")
    year, month = int(m[1]), int(m[2])
    if not 1 <= month <= 12:
        raise DateFormatError("is not a month: the month is outside 01 to 12")
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise DateFormatError("is not a month of the programme: expected 2000-01 .. 2099-12")
    return YearMonth(year, month)


def month_bounds(month: str | YearMonth) -> tuple[_dt.date, _dt.date]:
    """First and last day of a reporting month, e.g. "2025-04" -> (2025-04-01, 2025-04-30)."""
    ym = parse_month(month) if isinstance(month, str) else month
    last = _stdcal.monthrange(ym.year, ym.month)[1]
    return _dt.date(ym.year, ym.month, 1), _dt.date(ym.year, ym.month, last)
