"""A deterministic national-like month in miniature, for the golden comparison of composed feeds
(``test_feed_golden_bytes.py``): bench-like skew (many small authorities, a few busy ones, 1–3 sites),
so most feeds have small cells, complementary suppression and audits; plus a second revision of most
feeds with a few late facts, and targets for some authorities."""

from __future__ import annotations

import random
from collections import Counter

from domain.calendar import YearMonth
from domain.feed import (
    AGE_BANDS,
    EMPLOYMENT_TYPES,
    ENROLMENT,
    OCCUPATIONS,
    RETENTION_CHECKPOINTS,
    RETENTION_STATUS,
    SEXES,
    Combinations,
    FeedCounts,
    Target,
    TargetKind,
    group_flags,
)

MONTH = YearMonth(2025, 10)
_ATTRIBUTES = ("public_assistance", "child_rearing_allowance", "housing_benefit", "needy_person_support",
               "disability", "youth", "parenting", "general")  # fmt: skip


def _skewed(rng: random.Random, options: tuple[str, ...], power: float = 1.4) -> str:
    return options[min(len(options) - 1, int(len(options) * rng.random() ** power))]


def authorities(n: int, seed: int = 5) -> list[tuple[str, tuple[str, ...]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        code = f"{1 + i % 47:02d}{100 + i:03d}0"
        sites = tuple(f"{code}-{k:02d}" for k in range(1, rng.choices((1, 2, 3), (35, 40, 25))[0] + 1))
        out.append((code, sites))
    return out


def month_counts(n: int, seed: int, scale: float = 1.0) -> dict[str, FeedCounts]:
    """Every authority's counted month; ``scale`` < 1 gives fewer facts (late arrivals are added by
    counting again with another seed and summing)."""
    rng = random.Random(seed)
    everyone = authorities(n)
    feeds = {}
    for code, sites in everyone:
        size = int(scale * 150 * rng.random() ** 2.5)
        referral: Counter[tuple[str, ...]] = Counter()
        self_found: Counter[tuple[str, ...]] = Counter()
        new: Counter[tuple[str, ...]] = Counter()
        team: Counter[tuple[str, ...]] = Counter()
        for _ in range(size):
            site = rng.choice(sites) if rng.random() > 0.02 else rng.choice(everyone)[1][0]
            sex = SEXES[2] if rng.random() < 0.01 else SEXES[rng.random() < 0.55]
            age = rng.choice(AGE_BANDS)
            attrs = (_skewed(rng, _ATTRIBUTES, 1.5),)
            flags = group_flags(attrs, sex, age, rng.random() < 0.03)
            if rng.random() < 0.25:
                self_found[(site, _skewed(rng, EMPLOYMENT_TYPES))] += 1
            else:
                key = (site, sex, age, _skewed(rng, OCCUPATIONS, 1.3), _skewed(rng, EMPLOYMENT_TYPES), *flags)
                referral[key] += 1
        for _ in range(int(size * 3.5)):
            site = rng.choice(sites)
            sex, age = SEXES[rng.random() < 0.55], rng.choice(AGE_BANDS)
            flags = group_flags((_skewed(rng, _ATTRIBUTES, 1.5),), sex, age, False)
            new[(site, "yes" if rng.random() < 0.4 else "no", *flags)] += 1
            if rng.random() < 0.1:
                team[(site, ENROLMENT[rng.random() < 0.1])] += 1
        retention: dict[int, Combinations] = {
            k: Counter[tuple[str, ...]](
                (rng.choice(sites), RETENTION_STATUS[0 if rng.random() < 0.7 else rng.choice((1, 2))])
                for _ in range(int(size * 0.8))
            )
            for k in RETENTION_CHECKPOINTS
        }
        feeds[code] = FeedCounts(code, MONTH, sites, referral, self_found, new, team, retention)
    return feeds


def plus(a: FeedCounts, b: FeedCounts) -> FeedCounts:
    """Two countings of one feed summed (a month with late facts added)."""

    def add(x: object, y: object) -> Counter[tuple[str, ...]]:
        return Counter(x) + Counter(y)  # type: ignore[call-overload]

    return FeedCounts(
        a.authority, a.month, a.sites, add(a.referral, b.referral), add(a.self_found, b.self_found),
        add(a.new, b.new), add(a.team, b.team),
        {k: add(a.retention.get(k, {}), b.retention.get(k, {})) for k in RETENTION_CHECKPOINTS},
    )  # fmt: skip


def targets(code: str, sites: tuple[str, ...]) -> list[Target]:
    if int(code[2:5]) % 4:
        return []
    return [
        Target(code, 2025, TargetKind.REFERRAL_PLACEMENTS, 300.0),
        Target(code, 2025, TargetKind.PLACEMENT_RATE, 0.3),
        Target(code, 2025, TargetKind.NEW_JOB_SEEKERS, 900.0, "welfare"),
        Target(sites[0], 2025, TargetKind.TEAM_SUPPORT, 40.0),
        Target(sites[0], 2025, TargetKind.REFERRAL_SHARE, 0.35),
    ]
