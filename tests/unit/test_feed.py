"""Feed arithmetic without a broker: who counts, closing, targets, revisions, CP932 exports."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from consumers.feed.delivery import CP932_SUBSTITUTE, to_csv
from domain.calendar import AgeBand, YearMonth
from domain.feed import (
    OTHER_SITES,
    Achievement,
    FeedInput,
    PlacementFact,
    RegistrationFact,
    SiteTargets,
    YearToDate,
    achievement,
    age_band_on_placement,
    change_summary,
    compose,
    counts_for,
    cutoff_instant,
    fiscal_months,
    is_closed,
    main_attribute,
    placement_record,
    previous_cells,
    shift_month,
)

A = "131041"


def test_who_counts_for_an_authority() -> None:
    assert counts_for(A, "131041-02", ())  # at one of its sites
    assert counts_for(A, "112038-01", {A})  # referred by it, placed elsewhere
    assert not counts_for(A, "112038-01", {"112038"})
    p = PlacementFact("a" * 32, "b" * 32, "112038-01", date(2025, 5, 1), "self_found", "08", "part_time",
                      "female", "35-39", ("youth", "disability"))  # fmt: skip
    record = placement_record(A, p)
    assert record["site"] == OTHER_SITES and record["attribute"] == "youth"


def test_main_attribute_is_the_first_listed() -> None:
    assert main_attribute(["disability", "youth"]) == "disability"
    with pytest.raises(ValueError, match="at least one attribute"):
        main_attribute([])


def test_age_band_on_the_placement_date() -> None:
    assert age_band_on_placement(date(2000, 6, 2), date(2025, 6, 1)) is AgeBand.A20_24
    assert age_band_on_placement(date(2000, 6, 1), date(2025, 6, 1)) is AgeBand.A25_29


def test_month_closes_at_the_end_of_the_cutoff_day_in_japan() -> None:
    cut = cutoff_instant(YearMonth(2025, 12), 5)
    assert cut == datetime(2026, 1, 5, 15, tzinfo=UTC)  # 2026-01-06 00:00 JST
    assert not is_closed(YearMonth(2025, 12), 5, datetime(2026, 1, 5, 14, 59, tzinfo=UTC))
    assert is_closed(YearMonth(2025, 12), 5, cut)
    assert shift_month(YearMonth(2025, 1), -1) == YearMonth(2024, 12)


def test_fiscal_year_to_date_runs_from_april() -> None:
    assert fiscal_months(YearMonth(2026, 2)) == (date(2025, 4, 1), date(2026, 2, 28))
    assert fiscal_months(YearMonth(2025, 4)) == (date(2025, 4, 1), date(2025, 4, 30))


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        (
            YearToDate(placements=120, new_registrations=100, referred=45, team_support=30),
            Achievement.ALL_MET,
        ),
        (
            YearToDate(placements=120, new_registrations=100, referred=10, team_support=30),
            Achievement.PARTLY_MET,
        ),
        (YearToDate(placements=10, new_registrations=0, referred=0, team_support=0), Achievement.NONE_MET),
    ],
)
def test_achievement_class(results: YearToDate, expected: Achievement) -> None:
    targets = SiteTargets("131041-01", 2025, placements=100, referral_share=0.4, team_support=20)
    assert achievement(targets, results)[0] is expected


def test_targets_are_validated_with_the_rule_and_value() -> None:
    with pytest.raises(ValueError, match="referral_share target 40 must be a fraction"):
        SiteTargets("131041-01", 2025, referral_share=40)
    with pytest.raises(ValueError, match="at least one target"):
        SiteTargets("131041-01", 2025)


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
            ("public_assistance" if i % 5 else "youth",),
        )
        for i in range(n_placements + extra)
    )
    regs = tuple(
        RegistrationFact(f"{i:032x}", "131041-01", date(2025, 5, 1), i % 7 == 0, i % 2 == 0)
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
    total = next(r for r in cells2 if r.table == "placements: route" and r.key == ("計",))
    assert cells1[total] == 40 and cells2[total] is None
    assert rev2.body["indicators"]["authority"]["placements"] is None


def test_indicators_hide_what_tables_hide() -> None:
    body = compose(_feed(2), threshold=3).body
    ind = body["indicators"]["authority"]
    assert ind["placements"] is None and ind["placement_rate"] is None
    assert ind["new_registrations"] == 60 and ind["referral_share"] == 0.5


def test_cp932_export_uses_crlf_and_substitutes_what_it_cannot_hold() -> None:
    rows = [["氏名", "就職先"], ["髙橋 花子", "株式会社𠮷野ケアサービス"]]
    data, substituted = to_csv(rows, "cp932")
    # 髙 is in CP932 (an NEC-selected IBM extension), 𠮷 is outside the BMP and is not.
    assert substituted == 1 and data.endswith(b"\r\n") and b"\r\n" in data[:-2]
    text = data.decode("cp932")
    assert "髙橋 花子" in text and f"株式会社{CP932_SUBSTITUTE}野" in text
    exact, none = to_csv(rows, "utf-8")
    assert none == 0 and "髙橋" in exact.decode("utf-8")
