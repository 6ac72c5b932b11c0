"""The ministry's roll-up as the portal shows it: the report's four tables (``domain.ministry.
report_tables``, the very rows the CSV and the workbook hold) with the marks of Japanese official
statistics, column headings from the message catalogue (in Japanese, the downloads' own headings: a unit
test holds them equal), and what the charts draw.

Marks as on the authority pages (``hub.portal.view``): ``x`` a count kept secret by small-cell
suppression, ``－`` zero or not applicable. A rate is ``－`` where its base is zero and ``x`` where a
count it is computed from is hidden. Counts of authorities and sites by class are about public bodies,
published in full.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from domain.calendar import era_year
from domain.feed import TARGET_GROUPS
from domain.ministry import CLASSES, PREFECTURE_CODES, PREFECTURE_NAMES, TABLE_KEYS, report_tables
from hub.portal.view import NIL, SUPPRESSED, mark, target_group
from hub.web.i18n import N_, current, gettext

NATIONAL = "計"
PREFECTURE_NAMES_EN = (
    "Hokkaido", "Aomori", "Iwate", "Miyagi", "Akita", "Yamagata", "Fukushima", "Ibaraki", "Tochigi",
    "Gunma", "Saitama", "Chiba", "Tokyo", "Kanagawa", "Niigata", "Toyama", "Ishikawa", "Fukui",
    "Yamanashi", "Nagano", "Gifu", "Shizuoka", "Aichi", "Mie", "Shiga", "Kyoto", "Osaka", "Hyogo", "Nara",
    "Wakayama", "Tottori", "Shimane", "Okayama", "Hiroshima", "Yamaguchi", "Tokushima", "Kagawa", "Ehime",
    "Kochi", "Fukuoka", "Saga", "Nagasaki", "Kumamoto", "Oita", "Miyazaki", "Kagoshima", "Okinawa",
)  # fmt: skip
TITLES = {
    "authorities": N_("Authorities by achievement of their targets"),
    "sites": N_("Joint sites by achievement of their targets"),
    "groups": N_("Placements by target group"),
    "coordination": N_("Coordination indicators"),
}
CLASS_LABELS = {
    "all_met": N_("All met"),
    "partly_met": N_("Partly met"),
    "none_met": N_("None met"),
    "on_pace": N_("On pace (mid-year)"),
    "behind": N_("Behind (mid-year)"),
    "excluded": N_("Not evaluated"),
}
PREFECTURE = N_("Prefecture")
_ACHIEVEMENT_COLUMNS = (N_("Evaluated"), N_("Achieved (all met + partly met)"), N_("Achievement rate"))
_PLACEMENTS = N_("Placements (via Hello Work referral)")


@dataclass(frozen=True)
class Column:
    label: str
    rate_of: tuple[int, int] | None = None  # (numerator, denominator) columns of a rate


def columns(key: str) -> list[Column]:
    """A table's columns after the prefecture's, in the order of ``report_tables``."""
    if key in ("authorities", "sites"):
        evaluated, achieved, rate = (gettext(c) for c in _ACHIEVEMENT_COLUMNS)
        return [Column(evaluated), Column(achieved), Column(rate, (2, 1)),
                *(Column(gettext(CLASS_LABELS[c])) for c in CLASSES)]  # fmt: skip
    if key == "groups":
        of_which = [Column(gettext("of which %(group)s") % {"group": target_group(g)}) for g in TARGET_GROUPS]
        share = gettext("Share of %(group)s") % {"group": target_group("welfare")}
        return [Column(gettext(_PLACEMENTS)), *of_which, Column(share, (2, 1))]
    return [
        Column(gettext("Number of new job seekers")),
        Column(gettext("of which sent by the authorities")),
        Column(gettext("Share sent by the authorities"), (2, 1)),
        Column(gettext("People newly in team support")),
        Column(gettext(_PLACEMENTS)),
        Column(gettext("Placement rate"), (5, 1)),
        Column(gettext("Number of self-found placements")),
        Column(gettext("Confirmed placements")),
        Column(gettext("Number of placements as regular employees")),
    ]


def prefecture(code: str) -> str:
    if code == NATIONAL:
        return "全国" if current() == "ja" else gettext("Nationwide")
    names = PREFECTURE_NAMES if current() == "ja" else PREFECTURE_NAMES_EN
    return names[int(code) - 1]


def fiscal_year_label(fiscal_year: int) -> str:
    """令和4年度（2022年度） on Japanese pages, FY2022 on English ones. A fiscal year is named by the era
    of its months after April (FY2019 is 令和元年度, as the ministry writes it)."""
    if current() == "ja":
        return f"{era_year(date(fiscal_year, 5, 1))}度（{fiscal_year}年度）"
    return f"FY{fiscal_year}"


def through_label(month: str) -> str:
    """The last month a roll-up counts: 令和5年3月（2023年3月）まで / through March 2023."""
    y, m = int(month[:4]), int(month[5:7])
    if current() == "ja":
        return f"{era_year(date(y, m, 1))}{m}月（{y}年{m}月）まで"
    return gettext("through %(month)s") % {"month": date(y, m, 1).strftime("%B %Y")}


def year_end(month: str) -> bool:
    """A roll-up through March holds the year-end classes; before that, where each unit stands."""
    return month[5:7] == "03"


def cell(row: Sequence[Any], i: int, column: Column) -> str:
    """The mark of ``row[i]`` (``row[0]`` is the prefecture)."""
    value = row[i]
    if column.rate_of is None:
        return mark(value)
    if value is None:
        numerator, denominator = (row[j] for j in column.rate_of)
        return NIL if numerator is not None and denominator == 0 else SUPPRESSED
    return mark(value, rate=True)


@dataclass
class RollupTable:
    key: str
    title: str
    columns: list[Column]
    rows: list[tuple[str, str, list[str]]]  # (prefecture code, its name, marks)
    left_out: int  # prefectures not listed: every figure zero


def rollup_tables(body: Mapping[str, Any], *, every_prefecture: bool = False) -> list[RollupTable]:
    """The four tables, national first. Without ``every_prefecture`` a prefecture whose figures are all
    zero is left out of a table (the downloads always list all 47)."""
    out = []
    for key, (title, rows) in zip(TABLE_KEYS, report_tables(body).items(), strict=True):
        cols = columns(key)
        assert len(cols) == len(rows[0]) - 1, key  # the same table as the downloads
        shown = []
        for code, row in zip((NATIONAL, *PREFECTURE_CODES), rows[1:], strict=True):
            marks = [cell(row, i, c) for i, c in enumerate(cols, start=1)]
            if code == NATIONAL or every_prefecture or any(m != NIL for m in marks):
                shown.append((code, prefecture(code), marks))
        out.append(RollupTable(key, gettext(TITLES[key]), cols, shown, len(rows) - 1 - len(shown)))
        del title  # the Japanese title is the download's sheet name; the page's comes from the catalogue
    return out


def headings_ja(body: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each table's headings as the downloads write them (for the test that holds the page to them)."""
    return {
        key: [str(h) for h in rows[0]]
        for key, rows in zip(TABLE_KEYS, report_tables(body).values(), strict=True)
    }


# --- what the charts draw ----------------------------------------------------------------------------------


def class_segments(body: Mapping[str, Any], unit: str) -> list[tuple[str, int]]:
    """Nationally, the units (``authorities`` or ``sites``) in each class that has any."""
    counts = body["achievement"][unit][NATIONAL]
    return [(gettext(CLASS_LABELS[c]), int(counts[c])) for c in CLASSES if counts[c]]


def class_order() -> list[str]:
    return [gettext(CLASS_LABELS[c]) for c in CLASSES]


def group_bars(body: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """Nationally, placements (via Hello Work referral) in each target group; None where hidden."""
    by_group = body["indicators"]["national"]["by_group"]
    return [(target_group(g), by_group[g]["referral_placements"]) for g in TARGET_GROUPS]
