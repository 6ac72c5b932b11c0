"""How the portal shows the ministry's roll-up: the report's tables with the page's headings equal to the
downloads' own (in Japanese), the statistical marks (``x`` hidden, ``－`` zero or a rate on a zero base),
prefectures without figures left out unless asked for, fiscal years in the era calendar, and the charts'
data; the charts drawn for grey print."""

from __future__ import annotations

from typing import Any

from domain.feed import TARGET_GROUPS, Tally
from domain.ministry import Unit, compose_rollup, report_tables
from hub.portal.rollup_view import (
    class_segments,
    fiscal_year_label,
    group_bars,
    headings_ja,
    rollup_tables,
    through_label,
)
from hub.web import i18n
from hub.web.charts import bar_chart, stacked_bars

TOKYO, OSAKA = "131041001", "271004001"  # sites in 東京都 and 大阪府


def _body() -> dict[str, Any]:
    n = len(TARGET_GROUPS)
    tallies = {
        # Tokyo: enough people for everything to be published.
        TOKYO: Tally(40, 12, 6, 20, 4, 8, (10,) * n, (5,) * n),
        # Osaka: a handful, so the small cells are hidden.
        OSAKA: Tally(2, 1, 0, 1, 0, 0, (1,) + (0,) * (n - 1), (1,) + (0,) * (n - 1)),
    }
    sites = [Unit(TOKYO, "all_met"), Unit(OSAKA, "none_met"), Unit("131041002", "excluded")]
    authorities = [Unit("131041", "partly_met"), Unit("271004", "none_met")]
    return compose_rollup(2022, "2023-03", tallies, sites, authorities, threshold=3)


def test_the_page_s_japanese_headings_are_the_downloads_own() -> None:
    i18n.use("ja")
    body = _body()
    tables = rollup_tables(body)
    headings = headings_ja(body)
    for t in tables:
        assert ["都道府県", *(c.label for c in t.columns)] == headings[t.key], t.key
    assert [t.title for t in tables] == list(report_tables(body))  # the sheets' names


def test_marks_national_first_and_prefectures_without_figures_left_out() -> None:
    i18n.use("ja")
    body = _body()
    _, sites, groups, coordination = rollup_tables(body)
    assert [name for _, name, _ in sites.rows] == ["全国", "東京都", "大阪府"]
    assert sites.left_out == 45
    national = dict(zip((c.label for c in sites.columns), sites.rows[0][2], strict=True))
    assert national["評価対象"] == "2" and national["全達成"] == "1" and national["評価対象外"] == "1"
    assert national["達成率"] == "50.0%" and national["一部達成"] == "－"
    osaka = dict(zip((c.label for c in coordination.columns), coordination.rows[2][2], strict=True))
    assert osaka["新規求職者数"] == "x" and osaka["送り込み割合"] == "x"  # small: hidden, rate too
    assert osaka["チーム支援対象者数"] in ("－", "x")
    iwate = rollup_tables(body, every_prefecture=True)[3].rows[3]
    assert iwate[1] == "岩手県" and set(iwate[2]) == {"－"}  # no sites: zero, and rates on a zero base
    assert "x" in {m for _, _, marks in groups.rows for m in marks}


def test_english_labels_and_the_era_calendar() -> None:
    i18n.use("en")
    body = _body()
    assert rollup_tables(body)[0].rows[1][1] == "Tokyo"
    assert rollup_tables(body)[3].columns[0].label == "Number of new job seekers"
    assert fiscal_year_label(2022) == "FY2022" and through_label("2023-03") == "through March 2023"
    i18n.use("ja")
    assert fiscal_year_label(2022) == "令和4年度（2022年度）"
    assert fiscal_year_label(2019) == "令和元年度（2019年度）"
    assert fiscal_year_label(2018) == "平成30年度（2018年度）"
    assert through_label("2023-03") == "令和5年3月（2023年3月）まで"


def test_charts_for_grey_print() -> None:
    i18n.use("ja")
    body = _body()
    segments = class_segments(body, "sites")
    assert segments == [("全達成", 1), ("未達成", 1), ("評価対象外", 1)]
    svg = str(stacked_bars([("拠点", segments)], title="目標の達成状況"))
    assert svg.count("data-segment=") == 3 and 'stroke="#000"' in svg and ">1</text>" in svg
    bars = group_bars(body)
    assert bars[0][0] == "生活保護受給者等" and len(bars) == len(TARGET_GROUPS)
    drawn = str(bar_chart([("a", None), ("b", 0), ("c", 5)], title="t", zero="－"))
    assert ">x</text>" in drawn and ">－</text>" in drawn and ">5</text>" in drawn
