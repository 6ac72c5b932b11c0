"""Yearly targets (目標) of a site: a target is met when the result so far reaches it (domain.feed), and the
year-end class is 全達成 / 一部達成 / 未達成 (DOMAIN.md, "How the programme counts")."""

from __future__ import annotations

import pytest

from domain.feed import Achievement, SiteTargets, YearToDate, achievement

SITE = "131041-01"


def results(
    placements: int = 0, new_registrations: int = 0, referred: int = 0, team_support: int = 0
) -> YearToDate:
    return YearToDate(placements, new_registrations, referred, team_support)


@pytest.mark.parametrize(
    ("targets", "so_far", "met"),
    [
        (SiteTargets(SITE, 2025, placements=100), results(placements=100), True),  # reached exactly
        (SiteTargets(SITE, 2025, placements=100), results(placements=99), False),
        (SiteTargets(SITE, 2025, team_support=20), results(team_support=20), True),
        (SiteTargets(SITE, 2025, team_support=20), results(team_support=19), False),
        (SiteTargets(SITE, 2025, referral_share=0.4), results(new_registrations=100, referred=40), True),
        (SiteTargets(SITE, 2025, referral_share=0.4), results(new_registrations=100, referred=39), False),
        (SiteTargets(SITE, 2025, placements=0), results(), True),  # a zero target is met from the start
    ],
)
def test_a_target_is_met_when_the_result_reaches_it(
    targets: SiteTargets, so_far: YearToDate, met: bool
) -> None:
    klass, per_target = achievement(targets, so_far)
    assert list(per_target.values()) == [met]
    assert klass is (Achievement.ALL_MET if met else Achievement.NONE_MET)


def test_a_share_target_is_not_met_before_anyone_registered() -> None:
    # No new job seekers yet: the share is undefined, not 0 % and not 100 %.
    klass, per_target = achievement(SiteTargets(SITE, 2025, referral_share=0.0), results())
    assert per_target == {"referral_share": False} and klass is Achievement.NONE_MET


def test_only_the_targets_set_are_judged() -> None:
    targets = SiteTargets(SITE, 2025, placements=10, team_support=5)
    klass, per_target = achievement(targets, results(placements=10, team_support=4))
    assert per_target == {"placements": True, "team_support": False}
    assert klass is Achievement.PARTLY_MET
