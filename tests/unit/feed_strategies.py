"""Hypothesis strategies for composing feeds: one authority's month counted twice (revision 1's counts,
and the late ones a revision 2 adds), with small counts (hidden), zeros and large counts, one to three
own sites and another authority's site (every layout a feed can have)."""

from __future__ import annotations

from hypothesis import strategies as st

from domain.feed import (
    AGE_BANDS,
    EMPLOYMENT_TYPES,
    ENROLMENT,
    OCCUPATIONS,
    RETENTION_CHECKPOINTS,
    RETENTION_STATUS,
    SEXES,
    TARGET_GROUPS,
    YES_NO,
    FeedCounts,
)
from tests.unit import feed_golden_data as g

OTHER_SITE = "271004-01"
COUNT = st.integers(1, 5) | st.just(0) | st.integers(0, 10**6)
FLAGS = st.tuples(*(st.sampled_from(YES_NO) for _ in TARGET_GROUPS))


@st.composite
def months(draw: st.DrawFn) -> tuple[FeedCounts, FeedCounts]:
    """(revision 1's counts, the late counts); the late ones may list one more own site."""
    code = "131041"
    sites = tuple(f"{code}-{k:02d}" for k in range(1, draw(st.integers(1, 3)) + 1))

    def counts(keys: st.SearchStrategy[tuple[str, ...]], size: int) -> dict[tuple[str, ...], int]:
        return draw(st.dictionaries(keys, COUNT, max_size=size))

    def month(sites: tuple[str, ...]) -> FeedCounts:
        site = st.sampled_from((*sites, OTHER_SITE))
        own = st.sampled_from(sites)
        placement = st.tuples(site, st.sampled_from(SEXES), st.sampled_from(AGE_BANDS), st.sampled_from(OCCUPATIONS),
                              st.sampled_from(EMPLOYMENT_TYPES), FLAGS)  # fmt: skip
        return FeedCounts(
            code,
            g.MONTH,
            sites,
            counts(placement.map(lambda p: (*p[:5], *p[5])), 10),
            counts(st.tuples(site, st.sampled_from(EMPLOYMENT_TYPES)), 4),
            counts(st.tuples(own, st.sampled_from(YES_NO), FLAGS).map(lambda n: (*n[:2], *n[2])), 8),
            counts(st.tuples(own, st.sampled_from(ENROLMENT)), 3),
            {k: counts(st.tuples(own, st.sampled_from(RETENTION_STATUS)), 3) for k in RETENTION_CHECKPOINTS},
        )

    # Late facts may come from an own site first seen after revision 1 (not in its layout).
    later = (*sites, f"{code}-{len(sites) + 1:02d}") if draw(st.booleans()) else sites
    return month(sites), month(later)
