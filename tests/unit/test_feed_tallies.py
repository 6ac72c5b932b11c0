"""A feed's tallies (``site_tallies``: each own site's true counts, kept with every revision and summed for
the targets) are the month's combinations added up site by site, as the definition reads: new job
seekers (referred ones), team support, referral placements (regular ones) and self-found placements at
the authority's own sites, and each target group's new job seekers and placements."""

from __future__ import annotations

from hypothesis import given, settings

from domain.feed import REGULAR, TARGET_GROUPS, FeedCounts, Tally, site_tallies
from tests.unit.feed_strategies import months


def _tallies(feed: FeedCounts) -> dict[str, Tally]:
    """The reference: every figure summed over the combinations, one site and one figure at a time."""
    own = {k[0] for k in (*feed.new, *feed.team, *feed.referral, *feed.self_found)}
    own = {s for s in own if s[:6] == feed.authority} | {k[0] for k in (*feed.new, *feed.team)}
    groups = range(len(TARGET_GROUPS))
    out = {}
    for s in sorted(own):
        new = {k: n for k, n in feed.new.items() if k[0] == s}
        placed = {k: n for k, n in feed.referral.items() if k[0] == s and s[:6] == feed.authority}
        tally = Tally(
            sum(new.values()),
            sum(n for k, n in new.items() if k[1] == "yes"),
            sum(n for k, n in feed.team.items() if k[0] == s),
            sum(placed.values()),
            sum(n for k, n in feed.self_found.items() if k[0] == s and s[:6] == feed.authority),
            sum(n for k, n in placed.items() if k[4] == REGULAR),
            tuple(sum(n for k, n in new.items() if k[2 + g] == "yes") for g in groups),
            tuple(sum(n for k, n in placed.items() if k[5 + g] == "yes") for g in groups),
        )
        if (
            tally.new_job_seekers
            or tally.team_support
            or tally.referral_placements
            or tally.self_found_placements
        ):
            out[s] = tally
    return out


@settings(max_examples=100, deadline=None)
@given(months())
def test_a_feeds_tallies_are_its_combinations_added_up_site_by_site(
    months: tuple[FeedCounts, FeedCounts],
) -> None:
    for feed in months:
        assert site_tallies(feed) == _tallies(feed)
        assert list(site_tallies(feed)) == sorted(site_tallies(feed))
