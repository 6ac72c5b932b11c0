"""How the portal shows a feed body: the Japanese statistical marks, rates that never reveal a hidden
count, tables in category order with the total last, change summaries in Japanese."""

from __future__ import annotations

from hub.portal.view import NIL, SUPPRESSED, change_rows, indicator_mark, mark, table_view, yearly_series
from hub.web import i18n


def test_marks() -> None:
    i18n.use("ja")
    assert mark(None) == SUPPRESSED == "x"
    assert mark(0) == NIL == "－"
    assert mark(1234) == "1,234"
    assert mark(0.25, rate=True) == "25.0%"


def test_a_rate_is_hidden_when_its_count_is_and_not_applicable_when_its_base_is_zero() -> None:
    i18n.use("ja")
    hidden = {"referred_by_authority": None, "new_registrations": 12, "referral_share": None}
    base_zero = {"referred_by_authority": 0, "new_registrations": 0, "referral_share": None}
    assert indicator_mark(hidden, "referral_share") == "x"
    assert indicator_mark(base_zero, "referral_share") == "－"
    assert indicator_mark({"placements": None}, "placements") == "x"


def test_cross_table_in_category_order_with_total_last() -> None:
    i18n.use("ja")
    table = {
        "name": "placements: sex × route",
        "dims": ["sex", "route"],
        "cells": [
            [["計", "計"], 7, None],
            [["male", "hello_work_referral"], None, "primary"],
            [["male", "計"], 4, None],
            [["female", "hello_work_referral"], 0, None],
            [["female", "計"], 3, None],
            [["計", "hello_work_referral"], 5, None],
        ],
    }
    view = table_view(table, "placements")
    assert view.title == "性別 × 経路"
    assert view.columns == ["紹介就職", "計"]
    assert [label for label, _ in view.rows] == ["男", "女", "計"]
    assert [c.text for c in view.rows[0][1]] == ["x", "4"]
    assert [c.text for c in view.rows[1][1]] == ["－", "3"]
    assert view.rows[0][1][0].hidden and view.rows[0][1][0].reason == "primary"


def test_change_summary_in_japanese_never_shows_a_hidden_value() -> None:
    i18n.use("ja")
    rows = change_rows(
        [
            {
                "figure": "placements: attribute × sex[youth, 計]",
                "change": "changed",
                "before": 3,
                "after": 4,
            },
            {"figure": "placements: sex[female]", "change": "suppressed"},
            {"figure": "indicator: placement_rate", "change": "changed", "before": 0.25, "after": 0.3},
        ]
    )
    assert rows[0]["figure"] == "就職（属性 × 性別）: 属性=若者" and (
        rows[0]["before"],
        rows[0]["after"],
    ) == ("3", "4")
    assert rows[1]["change"] == "秘匿に変更" and rows[1]["before"] == rows[1]["after"] == ""
    assert rows[2]["figure"] == "就職率" and rows[2]["after"] == "30.0%"


def test_yearly_series_with_target_pace() -> None:
    i18n.use("ja")
    body = {
        "indicators": {"authority": {"placements": 10, "new_registrations": None, "referral_share": None,
                                     "team_support": 0}},
        "targets": [{"targets": {"placements": 120, "referral_share": 0.4, "team_support": None}},
                    {"targets": {"placements": 60, "referral_share": 0.5, "team_support": None}}],
    }  # fmt: skip
    series = {s.indicator: s for s in yearly_series(["2025-04", "2025-05"], {"2025-05": body})}
    placements = series["placements"]
    assert placements.points == [("4月", None, False), ("5月", 10.0, False)]
    assert placements.pace == [None, 15.0]  # (120 + 60) / 12 a month
    assert series["new_registrations"].points[1] == ("5月", None, True)  # hidden, drawn as x
    assert series["referral_share"].pace[1] == 0.45
    assert series["team_support"].pace[1] is None


def test_the_feeds_newer_body_layout_shows_too() -> None:
    """Bodies with "populations", indicators by target group and target evaluations per scope."""
    from hub.portal.view import figure_label, group_tables, group_views, target_rows

    i18n.use("ja")
    by_group = {"youth": {"new_job_seekers": 12, "referral_placements": None, "placement_rate": None},
                "welfare": {"new_job_seekers": 0, "referral_placements": 0, "placement_rate": None}}  # fmt: skip
    body = {
        "authority": "131041",
        "populations": {
            "referral_placements": [
                {
                    "name": "referral_placements: sex",
                    "dims": ["sex"],
                    "cells": [[["male"], 4, None], [["計"], 4, None]],
                }
            ]
        },
        "indicators": {
            "authority": {
                "new_job_seekers": 30,
                "referral_placements": 9,
                "referral_share": 0.4,
                "by_group": by_group,
            },
            "sites": {"131041-01": {"new_job_seekers": 30, "referral_placements": 9, "by_group": by_group}},
        },
        "targets": [
            {
                "scope": "131041",
                "fiscal_year": 2025,
                "pace": "behind",
                "achievement": None,
                "targets": [
                    {
                        "kind": "referral_placements",
                        "group": None,
                        "value": 120,
                        "result": 9,
                        "status": "behind",
                    },
                    {
                        "kind": "placement_rate",
                        "group": "youth",
                        "value": 0.3,
                        "result": None,
                        "status": "behind",
                    },
                ],
            },
        ],
    }
    assert [g for g, _, _ in group_views(body)] == ["referral_placements"]
    (scope, rows), _site = group_tables(body)
    assert (
        scope == "自治体全体"
        and rows[0] == ("若年者", ["12", "x", "x"])
        and rows[1] == ("生活保護受給者等", ["－", "－", "－"])
    )
    targets = target_rows(body)
    assert targets[0] == {"scope": "131041", "fiscal_year": "2025", "name": "就職件数（紹介就職）",
                          "target": "120", "result": "9", "status": "遅れ"}  # fmt: skip
    assert targets[1]["name"] == "就職率（若年者）" and targets[1]["result"] == "x"
    series = {s.indicator: s for s in yearly_series(["2025-05"], {"2025-05": body})}
    assert "referral_placements" in series and series["referral_placements"].pace == [10.0]
    assert (
        figure_label("indicator 131041-01: by_group.youth.placement_rate") == "就職率（若年者） (131041-01)"
    )
