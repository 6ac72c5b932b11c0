"""The database counts a month's feeds (``consumers.feed.builder.count_month``) exactly as the domain
does from the rows (``load_month``: the rows read as they are, split per authority by
``domain.feed.assemble`` and counted by ``domain.feed.count_feed``).

Random months written straight into the feed's projection tables, with every case the rules single
out: people referred by their own and by another authority (before and after the horizon, and after
the month's end), placements at another authority's site, self-found placements, prior applications
elsewhere, team support at registration and later, ties between enrolments, retention checkpoints
reported late or never, facts sent after the horizon. For several horizons and authority filters,
every combination count, every table cell (margins included) and every site tally must be equal, and
so must the placement ids each feed lists.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from consumers.feed.builder import Counted, count_month, count_month_twice, load_month
from domain.calendar import YearMonth, month_bounds
from domain.disclosure import counts
from domain.feed import (
    AGE_BANDS,
    EMPLOYMENT_TYPES,
    OCCUPATIONS,
    RETENTION_CHECKPOINTS,
    ROUTES,
    SEXES,
    FeedCounts,
    count_feed,
    population_tables,
    shift_month,
    site_tallies,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

ATTRIBUTES = (
    "public_assistance", "child_rearing_allowance", "housing_benefit", "needy_person_support",
    "disability", "youth", "parenting", "general",
)  # fmt: skip
STATUSES = ("employed", "left")


def _at(d: date, rng: random.Random) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(hours=rng.randint(0, 23))


def _day(rng: random.Random, lo: date, hi: date) -> date:
    return lo + timedelta(days=rng.randint(0, (hi - lo).days))


def _month_rows(seed: int, month: YearMonth) -> dict[str, list[tuple[Any, ...]]]:
    """A random month (and its retention cohorts) for four authorities of this test only."""
    rng = random.Random(seed)
    first, last = month_bounds(month)
    authorities = [f"98{seed:02d}{i:02d}" for i in range(4)]
    sites = [f"{a}-{n:02d}" for a in authorities for n in range(1, rng.randint(2, 4))]
    persons = [f"cnt{seed}-p{i}" for i in range(160)]
    early, late = first - timedelta(days=220), last + timedelta(days=40)
    rows: dict[str, list[tuple[Any, ...]]] = {"reg": [], "ref": [], "pl": [], "ret": []}

    def person_fields() -> tuple[list[str], str, str, bool]:
        attrs = rng.sample(ATTRIBUTES, rng.choice((0, 0, 1, 1, 2)))
        return attrs, rng.choice(SEXES), rng.choice(AGE_BANDS), rng.random() < 0.15

    for n in range(260):
        site = rng.choice(sites)
        on = _day(rng, early, last) if rng.random() < 0.25 else _day(rng, first, last)
        attrs, sex, age, foreign = person_fields()
        rows["reg"].append((
            f"cnt{seed}-g{n}", rng.choice(persons), site[:6], site, on, rng.random() < 0.2,
            _at(on + timedelta(days=rng.choice((0, 1, 3, 20, 40))), rng), attrs, sex, age, foreign,
            f"{rng.randint(10000, 99999)}" if rng.random() < 0.1 else None,
        ))  # fmt: skip
    for n in range(140):
        site = rng.choice(sites)
        authority = site[:6] if rng.random() < 0.7 else rng.choice(authorities)
        on = _day(rng, early, late)
        team_from = _day(rng, early, late) if rng.random() < 0.25 else None
        sent = _at(on + timedelta(days=rng.choice((0, 2, 30))), rng)
        rows["ref"].append((f"cnt{seed}-f{n}", rng.choice(persons), authority, site, on, sent, team_from))
    # Ties between enrolments: the same day at registration and by the case conference, or at two sites.
    for n, g in enumerate(rng.sample([g for g in rows["reg"] if g[5] and g[4] >= first], 12)):
        other = rng.choice([s for s in sites if s[:6] == g[2]])
        if n % 2:
            rows["ref"].append((f"cnt{seed}-t{n}", g[1], g[2], other, g[4], g[6], g[4]))
        else:
            rows["reg"].append((f"cnt{seed}-t{n}", g[1], g[2], other, *g[4:]))
    cohort_months = [month] + [shift_month(month, -k) for k in RETENTION_CHECKPOINTS]
    for n in range(420):
        lo, hi = month_bounds(rng.choice(cohort_months))
        on = _day(rng, lo, hi)
        site = rng.choice(sites)
        attrs, sex, age, foreign = person_fields()
        rows["pl"].append((
            f"cnt{seed}-x{n}", rng.choice(persons), site, site[:6], on, rng.choice(ROUTES), rng.choice(OCCUPATIONS),
            "MHLW-2022", rng.choice(EMPLOYMENT_TYPES), sex, age, attrs,
            _at(on + timedelta(days=rng.choice((0, 1, 5, 33, 60))), rng), foreign,
        ))  # fmt: skip
    for p in rows["pl"]:
        for k in RETENTION_CHECKPOINTS:
            if rng.random() < 0.6:
                checked = p[4] + timedelta(days=30 * k)
                sent = _at(checked + timedelta(days=rng.choice((0, 2, 60))), rng)
                rows["ret"].append((p[0], k, p[1], rng.choice(STATUSES), checked, sent))
    return rows


async def _write(conn: asyncpg.Connection, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    await conn.executemany(
        "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, team_support, "
        "personal, arrived_at, attributes, sex, age_band, foreign_national, prior_application_office) "
        "VALUES ($1, $2, $3, $4, $5, $6, '{}', $7, $8, $9, $10, $11, $12)",
        rows["reg"],
    )
    await conn.executemany(
        "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at, "
        "team_support_from) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        rows["ref"],
    )
    await conn.executemany(
        "INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, "
        "occupation, classification_version, employment_type, sex, age_band, attributes, personal, arrived_at, "
        "foreign_national) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, '{}', $13, $14)",
        rows["pl"],
    )
    await conn.executemany(
        "INSERT INTO feed_retention (placement_id, checkpoint_months, person_key, status, checked_on, "
        "arrived_at) VALUES ($1, $2, $3, $4, $5, $6)",
        rows["ret"],
    )


def _plain(c: FeedCounts) -> dict[str, Any]:
    """A feed's counts without the zero entries and empty cohorts one way may keep and the other not."""

    def nonzero(m: Any) -> dict[Any, int]:
        return {k: v for k, v in m.items() if v}

    return {
        "sites": c.sites,
        "referral": nonzero(c.referral),
        "self_found": nonzero(c.self_found),
        "new": nonzero(c.new),
        "team": nonzero(c.team),
        "retention": {k: nonzero(c.retention.get(k, {})) for k in RETENTION_CHECKPOINTS},
    }


def _same(counted: Counted, reference: Any, only: list[str] | None, without: list[str]) -> None:
    wanted = {a for a in reference.inputs if (only is None or a in only) and a not in without}
    assert set(counted.feeds) == wanted
    for a in sorted(wanted):
        assert _plain(counted.feeds[a]) == _plain(count_feed(reference.inputs[a])), a
        assert counted.placement_ids.get(a, []) == sorted(reference.placement_ids.get(a, []))
        assert counted.feeds[a].sites == reference.inputs[a].sites


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_the_database_counts_every_cell_as_the_domain_does(pool: asyncpg.Pool, seed: int) -> None:
    month = YearMonth(2011 + seed, 7)  # months (and cohorts) no other test writes
    rows = _month_rows(seed, month)
    first, last = month_bounds(month)
    authorities = sorted({r[2] for r in rows["reg"]})
    horizons = [
        _at(first + timedelta(days=12), random.Random(seed)),
        datetime(last.year, last.month, last.day, 23, tzinfo=UTC),
        datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=20),
        datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=400),
    ]
    filters: list[tuple[list[str] | None, list[str]]] = [
        (None, []),
        (authorities[:2], []),
        (None, authorities[1:3]),
    ]
    compared = cells = 0
    references = {}
    async with pool.acquire() as conn:
        async with conn.transaction():
            await _write(conn, rows)
        for horizon in horizons:
            reference = references[horizon] = await load_month(conn, month, horizon)
            for only, without in filters:
                counted = await count_month(conn, month, horizon, only=only, without=without)
                wanted = {a for a in reference.inputs if (only is None or a in only) and a not in without}
                assert set(counted.feeds) == wanted, (horizon, only, without)
                for a in sorted(wanted):
                    expected = count_feed(reference.inputs[a])
                    got = counted.feeds[a]
                    assert _plain(got) == _plain(expected), (a, horizon)
                    assert counted.placement_ids.get(a, []) == sorted(reference.placement_ids.get(a, []))
                    mine, theirs = population_tables(got), population_tables(expected)
                    assert list(mine) == list(theirs)
                    for population in mine:
                        got_cells = counts(mine[population])
                        assert got_cells == counts(theirs[population]), (a, horizon, population)
                        cells += len(got_cells)
                    assert site_tallies(got) == site_tallies(expected), (a, horizon)
                    compared += 1
        # Two horizons from one reading (the build's revisions 1 and 2) give what each gives alone.
        for i, j in ((0, 1), (1, 2), (2, 3), (0, 3), (2, 2)):
            for only, without in filters:
                twice = await count_month_twice(
                    conn, month, horizons[i], horizons[j], only=only, without=without
                )
                for counted, h in zip(twice, (horizons[i], horizons[j]), strict=True):
                    _same(counted, references[h], only, without)
                    compared += 1
    # The random month must reach the cases the rules single out, or the comparison proves little.
    assert compared >= 30 and cells > 10_000
    seen = _cases(reference.inputs.values())
    assert seen == set(CASES), set(CASES) - seen


CASES = (
    "placement at another authority's site",
    "self-found placement",
    "new job seeker referred",
    "new job seeker not referred",
    "team support after registration",
    "team support at registration",
    "retention reported",
    "retention not reported",
)


def _cases(feeds: Any) -> set[str]:
    seen = set()
    for f in feeds:
        if any(p.site[:6] != f.authority for p in f.placements):
            seen.add("placement at another authority's site")
        if any(p.route == "self_found" for p in f.placements):
            seen.add("self-found placement")
        seen |= {
            "new job seeker referred" if r.referred else "new job seeker not referred"
            for r in f.registrations
        }
        seen |= {
            "team support at registration" if t.at_registration else "team support after registration"
            for t in f.team_support
        }
        for k, cohort in f.cohorts.items():
            seen |= {
                "retention reported" if (pid, person, k) in f.retention else "retention not reported"
                for pid, person, _ in cohort
            }
    return seen
