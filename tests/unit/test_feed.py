"""Feed arithmetic without a broker: who counts, target groups, closing, targets and pace, revisions,
CP932 exports."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from consumers.feed.delivery import CP932_SUBSTITUTE, to_csv
from domain.calendar import AgeBand, YearMonth
from domain.feed import (
    OTHER_SITES,
    Achievement,
    FeedInput,
    Pace,
    PlacementFact,
    RegistrationFact,
    Tally,
    Target,
    TargetKind,
    achievement,
    age_band_on_placement,
    change_summary,
    compose,
    counts_for,
    cutoff_instant,
    evaluate,
    fiscal_months,
    is_closed,
    months_elapsed,
    pace,
    previous_cells,
    shift_month,
    site_category,
    target_groups,
)

A = "131041"


def test_who_counts_for_an_authority() -> None:
    assert counts_for(A, "131041-02", ())  # at one of its sites
    assert counts_for(A, "112038-01", {A})  # referred by it, placed elsewhere
    assert not counts_for(A, "112038-01", {"112038"})
    assert site_category(A, "112038-01") == OTHER_SITES
    assert site_category(A, "131041-03", ("131041-01",)) == OTHER_SITES  # not in revision 1's layout
    assert site_category(A, "131041-01", ("131041-01",)) == "01"


def test_a_person_belongs_to_every_target_group_they_qualify_for() -> None:
    assert target_groups(("public_assistance", "disability"), "male", "40-44", False) == {
        "welfare",
        "disability",
    }
    # 生活保護受給者等 includes 児童扶養手当 and housing benefit (~l.909); a young mother is also youth, women.
    assert target_groups(("child_rearing_allowance",), "female", "30-34", False) == {
        "welfare", "parenting", "youth", "women"
    }  # fmt: skip
    assert target_groups(("housing_benefit",), "male", "60-64", True) == {"welfare", "middle_aged", "foreign"}
    assert target_groups((), "male", "35-39", False) == {"other"}


def test_age_band_on_the_placement_date() -> None:
    assert age_band_on_placement(date(2000, 6, 2), date(2025, 6, 1)) is AgeBand.A20_24
    assert age_band_on_placement(date(2000, 6, 1), date(2025, 6, 1)) is AgeBand.A25_29


def test_month_closes_at_the_end_of_the_cutoff_day_in_japan() -> None:
    cut = cutoff_instant(YearMonth(2025, 12), 5)
    assert cut == datetime(2026, 1, 5, 15, tzinfo=UTC)  # 2026-01-06 00:00 JST
    assert not is_closed(YearMonth(2025, 12), 5, datetime(2026, 1, 5, 14, 59, tzinfo=UTC))
    assert is_closed(YearMonth(2025, 12), 5, cut)
    assert shift_month(YearMonth(2025, 1), -1) == YearMonth(2024, 12)


def test_fiscal_year_runs_from_april() -> None:
    assert fiscal_months(YearMonth(2026, 2)) == (date(2025, 4, 1), date(2026, 2, 28))
    assert months_elapsed(YearMonth(2025, 4)) == 1 and months_elapsed(YearMonth(2026, 3)) == 12


def _tally(placed: int, new: int, referred: int = 0) -> Tally:
    return Tally(new_job_seekers=new, referred=referred, referral_placements=placed)


def test_pace_compares_a_count_with_the_share_of_the_year_gone_by() -> None:
    t = Target("131041-01", 2025, TargetKind.REFERRAL_PLACEMENTS, 120)
    september = YearMonth(2025, 9)  # 6 of 12 months: 60 is on pace
    assert pace(t, _tally(60, 100), september) is Pace.ON_PACE
    assert pace(t, _tally(59, 100), september) is Pace.BEHIND
    assert pace(t, _tally(120, 100), september) is Pace.MET
    share = Target("131041-01", 2025, TargetKind.REFERRAL_SHARE, 0.4)
    assert pace(share, _tally(0, 100, 40), september) is Pace.MET
    assert pace(share, _tally(0, 100, 39), september) is Pace.BEHIND


def test_year_end_classes_and_a_unit_left_out() -> None:
    assert achievement([Pace.MET, Pace.MET]) is Achievement.ALL_MET
    assert achievement([Pace.MET, Pace.BEHIND]) is Achievement.PARTLY_MET
    assert achievement([Pace.ON_PACE, Pace.BEHIND]) is Achievement.NONE_MET
    targets = [Target("131041-01", 2025, TargetKind.REFERRAL_PLACEMENTS, 120),
               Target("131041-01", 2025, TargetKind.REFERRAL_SHARE, 0.4)]  # fmt: skip
    march = evaluate("131041-01", targets, _tally(130, 300, 90), YearMonth(2026, 3), 3)
    assert march["achievement"] == "partly_met" and march["pace"] == "behind"
    september = evaluate("131041-01", targets, _tally(70, 100, 45), YearMonth(2025, 9), 3)
    assert september["achievement"] is None and september["pace"] == "on_pace"
    new_site = evaluate("131041-01", targets, _tally(70, 100, 45), YearMonth(2026, 3), 3, excluded=True)
    assert new_site["achievement"] is None and new_site["pace"] is None and new_site["excluded"]


def test_targets_are_validated_with_the_rule_and_value() -> None:
    with pytest.raises(ValueError, match="must be a fraction"):
        Target("131041-01", 2025, TargetKind.REFERRAL_SHARE, 40)
    with pytest.raises(ValueError, match="not counted per target group"):
        Target("131041-01", 2025, TargetKind.TEAM_SUPPORT, 40, "welfare")
    with pytest.raises(ValueError, match="is not one of"):
        Target("131041-01", 2025, TargetKind.PLACEMENT_RATE, 0.5, "martians")


def test_change_summary_never_shows_a_hidden_value() -> None:
    before = {"a": 5, "b": 4, "c": None, "d": 7}
    after = {"a": 6, "b": None, "c": None, "d": 7}
    assert change_summary(before, after) == [
        {"figure": "a", "change": "changed", "before": 5, "after": 6},
        {"figure": "b", "change": "suppressed"},
    ]


def _feed(n_placements: int, extra: int = 0) -> FeedInput:
    occupations = ["08", "09", "06", "12"]
    placements = tuple(
        PlacementFact(
            f"{i:032x}",
            f"{i:032x}",
            "131041-01",
            date(2025, 5, 2),
            "hello_work_referral",
            "15" if i == 0 else occupations[i % 4],
            "part_time",
            "female" if i % 3 else "male",
            "35-39",
            target_groups(
                ("public_assistance" if i % 5 else "youth",), "female" if i % 3 else "male", "35-39", False
            ),
        )
        for i in range(n_placements + extra)
    )
    regs = tuple(
        RegistrationFact(f"{i:032x}", "131041-01", date(2025, 5, 1), i % 2 == 0, frozenset({"general"}))
        for i in range(60)
    )
    return FeedInput(A, YearMonth(2025, 5), ("131041-01",), placements, regs)


def test_a_revision_keeps_earlier_suppression_and_hides_every_changed_count() -> None:
    rev1 = compose(_feed(40), threshold=3)
    rev2 = compose(_feed(40, extra=1), threshold=3, previous=rev1.body)
    cells1, cells2 = previous_cells(rev1.body), previous_cells(rev2.body)
    assert any(v is None for v in cells1.values())
    for ref, v1 in cells1.items():
        v2 = cells2[ref]
        assert (v1 is None and v2 is None) or v2 in (None, v1), ref  # hidden stays hidden; no new value
    total = next(r for r in cells2 if r.table == "referral_placements: sex" and r.key == ("計",))
    assert cells1[total] == 40 and cells2[total] is None
    assert rev2.body["indicators"]["authority"]["referral_placements"] is None
    # The same count in every table: hidden everywhere once hidden anywhere.
    margins = [r for r in cells2 if r.key[-1:] == ("計",) and r.key[0] == "計"]
    assert margins and all(cells2[r] is None for r in margins if r.table.startswith("referral_placements"))


def test_indicators_hide_what_tables_hide() -> None:
    body = compose(_feed(2), threshold=3).body
    ind = body["indicators"]["authority"]
    assert ind["referral_placements"] is None and ind["placement_rate"] is None
    assert ind["new_job_seekers"] == 60 and ind["referral_share"] == 0.5


def test_cp932_export_uses_crlf_and_substitutes_what_it_cannot_hold() -> None:
    rows = [["氏名", "就職先"], ["髙橋 花子", "株式会社𠮷野ケアサービス"]]
    data, substituted = to_csv(rows, "cp932")
    # 髙 is in CP932 (an NEC-selected IBM extension), 𠮷 is outside the BMP and is not.
    assert substituted == 1 and data.endswith(b"\r\n") and b"\r\n" in data[:-2]
    text = data.decode("cp932")
    assert "髙橋 花子" in text and f"株式会社{CP932_SUBSTITUTE}野" in text
    exact, none = to_csv(rows, "utf-8")
    assert none == 0 and "髙橋" in exact.decode("utf-8")
