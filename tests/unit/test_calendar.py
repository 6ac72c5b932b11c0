from __future__ import annotations

from datetime import date

import pytest

from domain.calendar import (
    AgeBand,
    DateFormatError,
    YearMonth,
    age_band,
    age_on,
    fiscal_year,
    fiscal_year_bounds,
    month_bounds,
    parse_date,
    parse_day,
    parse_month,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-04-01", date(2024, 4, 1)),
        ("2024/4/1", date(2024, 4, 1)),
        ("2024年4月1日", date(2024, 4, 1)),
        ("令和6年4月1日", date(2024, 4, 1)),
        ("令和元年5月1日", date(2019, 5, 1)),
        ("R6.4.1", date(2024, 4, 1)),
        ("R06.04.01", date(2024, 4, 1)),
        ("r6.4.1", date(2024, 4, 1)),
        ("H31.4.30", date(2019, 4, 30)),
        ("平成31年4月30日", date(2019, 4, 30)),
        ("平成元年1月8日", date(1989, 1, 8)),
        ("S64.1.7", date(1989, 1, 7)),
        ("昭和64年1月7日", date(1989, 1, 7)),
        ("昭和元年12月25日", date(1926, 12, 25)),
        ("２０２４－０４－０１", date(2024, 4, 1)),
        ("令和６年４月１日", date(2024, 4, 1)),
        ("Ｒ６．４．１", date(2024, 4, 1)),
        ("㋿6年4月1日", date(2024, 4, 1)),
        (" 2024/04/01 ", date(2024, 4, 1)),
        ("令和 6年 4月 1日", date(2024, 4, 1)),  # forms pad one-digit numbers with a space
        ("令和６年　４月　１日", date(2024, 4, 1)),  # or with an ideographic (full-width) space
    ],
)
def test_parse_date_accepts(text: str, expected: date) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("平成31年5月1日", "平成 (Heisei) ended on 2019-04-30"),
        ("H31.5.1", "平成 (Heisei) ended on 2019-04-30"),
        ("令和1年4月30日", "令和 (Reiwa) began on 2019-05-01"),
        ("平成元年1月7日", "平成 (Heisei) began on 1989-01-08"),
        ("S64.1.8", "昭和 (Showa) ended on 1989-01-07"),
        ("昭和元年12月24日", "昭和 (Showa) began on 1926-12-25"),
        ("R6.2.30", "not a real date: the day is outside its month"),
        ("2023-02-29", "the day is outside its month"),
        ("2024-13-01", "the month is outside 1 to 12"),
        ("0000-01-01", "not a real date: year 0 does not exist"),
        ("0000年1月1日", "year 0 does not exist"),
        ("0001-01-00", "the day is outside its month"),
        ("R0.5.1", "era years start at 1"),
        ("2024.04.01", "expected YYYY-MM-DD"),
        ("T15.1.1", "expected YYYY-MM-DD"),
        ("", "is not a date"),
    ],
)
def test_parse_date_rejects_with_specific_reason(text: str, message: str) -> None:
    with pytest.raises(DateFormatError) as err:
        parse_date(text)
    assert message in str(err.value)
    assert text == "" or text not in str(err.value), "the rule is named, the value never repeated"


def test_age_on_counts_completed_years() -> None:
    assert age_on(date(1990, 6, 15), date(2024, 6, 14)) == 33
    assert age_on(date(1990, 6, 15), date(2024, 6, 15)) == 34
    assert age_on(date(2024, 4, 1), date(2024, 4, 1)) == 0


def test_age_on_29_february() -> None:
    leapling = date(2000, 2, 29)
    assert age_on(leapling, date(2023, 2, 28)) == 22
    assert age_on(leapling, date(2023, 3, 1)) == 23
    assert age_on(leapling, date(2024, 2, 28)) == 23
    assert age_on(leapling, date(2024, 2, 29)) == 24


def test_age_on_before_birth_is_an_error() -> None:
    with pytest.raises(DateFormatError, match="born later"):
        age_on(date(2000, 1, 2), date(2000, 1, 1))


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, AgeBand.UNDER_20),
        (19, AgeBand.UNDER_20),
        (20, AgeBand.A20_24),
        (24, AgeBand.A20_24),
        (25, AgeBand.A25_29),
        (44, AgeBand.A40_44),
        (60, AgeBand.A60_64),
        (64, AgeBand.A60_64),
        (65, AgeBand.OVER_64),
        (101, AgeBand.OVER_64),
    ],
)
def test_age_band(age: int, band: AgeBand) -> None:
    assert age_band(age) is band


def test_age_band_labels() -> None:
    assert [b.value for b in AgeBand] == [
        "19以下", "20-24", "25-29", "30-34", "35-39", "40-44", "45-49", "50-54", "55-59", "60-64", "65以上",
    ]  # fmt: skip
    assert AgeBand.UNDER_20.label_en == "19 and under"
    assert AgeBand.OVER_64.label_en == "65 and over"
    assert AgeBand.A35_39.label_en == "35-39"
    assert AgeBand("25-29") is AgeBand.A25_29


def test_age_band_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        age_band(-1)


def test_fiscal_year() -> None:
    assert fiscal_year(date(2025, 3, 31)) == 2024
    assert fiscal_year(date(2025, 4, 1)) == 2025
    assert fiscal_year(date(2025, 1, 1)) == 2024
    assert fiscal_year_bounds(2024) == (date(2024, 4, 1), date(2025, 3, 31))


def test_months() -> None:
    assert parse_month("2025-04") == YearMonth(2025, 4)
    assert month_bounds("2025-04") == (date(2025, 4, 1), date(2025, 4, 30))
    assert month_bounds("2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
    assert month_bounds(YearMonth(2025, 12)) == (date(2025, 12, 1), date(2025, 12, 31))
    # The first and last month of the year, and of the programme's years, are months like any other.
    assert parse_month("2025-12") == YearMonth(2025, 12)
    assert parse_month("2025-01") == YearMonth(2025, 1)
    assert parse_month("2000-01") == YearMonth(2000, 1)
    assert parse_month("2099-12") == YearMonth(2099, 12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2025-4", "expected YYYY-MM"),
        ("2025/04", "expected YYYY-MM"),
        ("2025-13", "the month is outside 01 to 12"),
        ("2025-00", "the month is outside 01 to 12"),
        # One spelling (a URL's or the command line's month): ASCII digits, nothing around them, and a
        # month of the programme's years, as every date of the contracts.
        ("２０２５－０４", "expected YYYY-MM"),
        ("２０２５-04", "expected YYYY-MM"),
        (" 2025-04", "expected YYYY-MM"),
        ("2025-04 ", "expected YYYY-MM"),
        ("2025-04\n", "expected YYYY-MM"),
        ("0000-01", "2000-01 .. 2099-12"),
        ("0001-01", "2000-01 .. 2099-12"),
        ("1999-12", "2000-01 .. 2099-12"),
        ("2100-01", "2000-01 .. 2099-12"),
        ("9999-12", "2000-01 .. 2099-12"),
    ],
)
def test_parse_month_rejects(text: str, message: str) -> None:
    with pytest.raises(DateFormatError, match=message):
        parse_month(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20240401", "expected YYYY-MM-DD"),
        ("2024-W14-1", "expected YYYY-MM-DD"),
        ("２０２４-04-01", "expected YYYY-MM-DD"),
        ("2024-04-01T00:00:00", "expected YYYY-MM-DD"),
        (" 2024-04-01", "expected YYYY-MM-DD"),
        ("2024-02-30", "the day is outside its month"),
        ("0001-04-01", "2000-01-01 .. 2099-12-31"),
        ("9999-12-31", "2000-01-01 .. 2099-12-31"),
    ],
)
def test_parse_day_takes_one_spelling_of_the_programme_s_years(text: str, message: str) -> None:
    """A day an operator types (``hub agreements --from/--until/--on``): as the contracts take one."""
    with pytest.raises(DateFormatError, match=message) as refused:
        parse_day(text)
    assert text.strip() not in str(refused.value)
    assert parse_day("2024-04-01") == date(2024, 4, 1)
