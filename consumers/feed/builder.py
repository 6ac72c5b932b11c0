"""Building feed revisions: load the projection as of a horizon, compose, keep, publish.

Closing and revisions: revision 1 of a month counts what was sent by the end of its cutoff day (JST,
``settings.feed_cutoff_day`` of the next month), whenever the build runs. Each later build counts what
was sent up to now; if a published figure or the set of placements differs from the latest revision,
that is revision N+1 with a change summary. "Sent" is the event's CloudEvents ``time`` (when the source
system emitted it), not when the hub consumed it, so a replay of the topics rebuilds the same revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import partial
from itertools import islice
from operator import add
from typing import Any, TypeVar

import asyncpg
import orjson

from contracts.feed import encode_feed_revision
from domain.calendar import YearMonth, fiscal_year, month_bounds
from domain.disclosure import CellRef, SuppressedFeed
from domain.feed import (
    ENROLMENT,
    OTHER_SITES,
    RETENTION_CHECKPOINTS,
    SELF_FOUND_ROUTE,
    Assembled,
    FeedCounts,
    Job,
    MonthRows,
    Tally,
    Target,
    TargetKind,
    assemble,
    compose_many,
    cutoff_instant,
    fiscal_months,
    group_flags,
    in_kept_order,
    kept_order,
    population_counts,
    shift_month,
    site_category,
)
from infra.config import Settings
from infra.gc import paused
from infra.kafka import start_producer
from infra.logging import get_logger

log = get_logger("feed")
T = TypeVar("T")
R = TypeVar("R")


class FeedNotClosed(Exception):
    def __init__(self, month: YearMonth, closes_at: datetime) -> None:
        super().__init__(f"month {month} is not closed yet: it closes at {closes_at.isoformat()}")


@dataclass(frozen=True)
class Built:
    authority: str
    month: str
    revision: int
    placements: int | None
    changes: list[dict[str, Any]]


def _cohort_bounds(month: YearMonth) -> dict[int, tuple[date, date]]:
    return {k: month_bounds(shift_month(month, -k)) for k in RETENTION_CHECKPOINTS}


async def fetch_month(conn: asyncpg.Connection, month: YearMonth, horizon: datetime) -> MonthRows:
    """Read what the month's feeds need, and only that: the cohort months' placements without the
    columns the tables count, and only the retention checkpoint each cohort reports."""
    first, last = month_bounds(month)
    cohorts = _cohort_bounds(month)
    ks = list(cohorts)
    los = [lo for lo, _ in cohorts.values()]
    his = [hi for _, hi in cohorts.values()]
    placements = await conn.fetch(
        "SELECT placement_id, person_key, site, site_authority, placed_on, route, occupation, employment_type, "
        "sex, age_band, attributes, foreign_national, arrived_at FROM feed_placements "
        "WHERE placed_on BETWEEN $1 AND $2 AND arrived_at <= $3",
        first,
        last,
        horizon,
    )
    cohort_placements = await conn.fetch(
        "SELECT p.placement_id, p.person_key, p.site, p.site_authority, c.k, p.arrived_at "
        "FROM unnest($1::int[], $2::date[], $3::date[]) AS c(k, lo, hi) "
        "JOIN feed_placements p ON p.placed_on BETWEEN c.lo AND c.hi WHERE p.arrived_at <= $4",
        ks,
        los,
        his,
        horizon,
    )
    registrations = await conn.fetch(
        "SELECT person_key, authority, site, registered_on, attributes, sex, age_band, foreign_national, "
        "prior_application_office, arrived_at FROM feed_registrations "
        "WHERE registered_on BETWEEN $1 AND $2 AND arrived_at <= $3",
        first,
        last,
        horizon,
    )
    referrals = await conn.fetch(
        "SELECT person_key, authority, arrived_at FROM feed_referrals WHERE arrived_at <= $1 AND referred_on <= $2",
        horizon,
        last,
    )
    # Team support enrolments up to the month's end: at registration, or later by the case conference;
    # earlier ones too, so a person already enrolled before the month is not counted as new.
    team_support = await conn.fetch(
        "SELECT person_key, authority, site, registered_on AS since, true AS at_registration, arrived_at "
        "FROM feed_registrations WHERE team_support AND registered_on <= $1 AND arrived_at <= $2 "
        "AND person_key IN (SELECT person_key FROM feed_registrations WHERE team_support "
        "  AND registered_on BETWEEN $3 AND $1 UNION SELECT person_key FROM feed_referrals "
        "  WHERE team_support_from BETWEEN $3 AND $1) "
        "UNION ALL SELECT person_key, authority, site, team_support_from, false, arrived_at FROM feed_referrals "
        "WHERE team_support_from <= $1 AND arrived_at <= $2 AND person_key IN (SELECT person_key FROM "
        "  feed_registrations WHERE team_support AND registered_on BETWEEN $3 AND $1 UNION SELECT person_key "
        "  FROM feed_referrals WHERE team_support_from BETWEEN $3 AND $1)",
        last,
        horizon,
        first,
    )
    sites = await conn.fetch(
        "SELECT site, min(arrived_at) AS arrived_at FROM (SELECT site, min(arrived_at) AS arrived_at "
        "FROM feed_registrations GROUP BY site UNION ALL SELECT site, min(arrived_at) FROM feed_placements "
        "GROUP BY site UNION ALL SELECT site, min(arrived_at) FROM feed_referrals GROUP BY site) x "
        "WHERE arrived_at <= $1 GROUP BY site",
        horizon,
    )
    retention = await conn.fetch(
        "SELECT r.placement_id, r.person_key, r.checkpoint_months, r.status, r.arrived_at "
        "FROM unnest($2::int[], $3::date[], $4::date[]) AS c(k, lo, hi) "
        "JOIN feed_placements p ON p.placed_on BETWEEN c.lo AND c.hi "
        "JOIN feed_retention r ON r.placement_id = p.placement_id AND r.checkpoint_months = c.k "
        "AND r.person_key = p.person_key "
        "WHERE r.arrived_at <= $1",
        horizon,
        ks,
        los,
        his,
    )
    return MonthRows(
        month, placements, cohort_placements, registrations, referrals, team_support, sites, retention
    )


async def load_month(conn: asyncpg.Connection, month: YearMonth, horizon: datetime) -> Assembled:
    """Every authority's facts for ``month`` as sent by ``horizon`` (national: one pass, then split).

    The reference the database's counting (``count_month``) is tested and benchmarked against: the
    rows read as they are and split per authority in Python by the domain's own rules."""
    with paused():
        return assemble(await fetch_month(conn, month, horizon), horizon)


@dataclass
class Counted:
    """Each authority's month counted (``FeedCounts``), with the ids of the placements counted for it."""

    feeds: dict[str, FeedCounts]
    placement_ids: dict[str, list[str]]


# Two horizons in one pass: $3 the later one (what is counted at all), $6 the earlier. Each row says
# whether it counts only at the later horizon (``late``), and so does each fact whose state changes with
# the horizon (a referral making a registration referred, a retention checkpoint's status), so the
# earlier horizon's counts are the rows and states not late. The build counts a month's revision 1
# (at its cutoff) and its revision 2 (up to now) in one reading.
#
# $1/$2 the month's first and last day, $4/$5 the authorities to include (NULL: all) and exclude,
# $7/$8/$9 each retention cohort's k and the first and last day of its month. With $4 (a round
# rebuilding a few feeds), only the placements that can count for them are read: at their sites, or of
# people they referred.
#
# Who a placement counts for (``domain.feed.counts_for``): the authority of its site when the site is
# its own, and every authority that referred the person by the horizon and the month's end (the site's
# authority too, where the site is not its own; the earliest such referral decides when). A cohort
# placement (k > 0) comes with the status its k-month checkpoint reports by the horizon.
#
# The referrals are read where they are joined (``referrers`` is not materialized), and joined raw to
# the placements, then grouped: the planner then knows their statistics and hashes the referrals, not
# the 390,000 placements of a national month's cohorts or its 480,000 registrations, which a
# materialized (statistics-less) referral list made it hash (EXPLAIN ANALYZE on bench_feed's month:
# 5.0-5.3 -> 3.8-4.0 s of PostgreSQL CPU for this statement, same rows). The cohorts' 390,000
# placements are read twice rather than kept: keeping them cost their writing and reading back and hid
# their statistics (the cohort rows' part: 1.4-1.8 -> 0.8-0.9 s).
#
# Rows: the month's placements (``owned``) as columns per authority (``_PLACEMENTS``); k > 0 retention
# cohort k per site and status; k = -1 new job seekers (registered in the month, no prior application
# elsewhere; referred when the authority running the site referred the person by the horizon and the
# month's end: each registration keeps when that authority's first such referral was sent, ``referred_at``,
# kept by the facts' triggers, migration 049; joined here to every referral kept, they cost ~0.7 s of
# PostgreSQL CPU in each count of bench_feed's national month).
# A cohort placement's checkpoint: national, every checkpoint kept is hashed (cheaper than 390,000 look-ups);
# with $4, each is looked up by its key (``reported``): hashed, a round for 5 feeds read every checkpoint
# ever kept for their few thousand cohort rows (PostgreSQL CPU of the statement 0.20-0.23 -> 0.15-0.16 s
# on bench_feed's month, and no longer growing with the history).
# With $4 (a round rebuilding a few feeds), the placements that can count for them: at the sites of
# $4's authorities, and those of people they referred, each read by its index (the month's or a cohort
# month's, c.lo to c.hi): the round reads their rows, not the month's. One condition with OR filtered
# every placement of the month and of its cohorts: an incremental round's statement cost PostgreSQL
# nearly what the national one did. The people referred are looked up one by one (``OFFSET 0``): as a
# semi-join, the planner hashed them and scanned each month. Without $4 these branches, and with $4
# the national one, are dropped when the statement is planned (``plan_cache_mode``,
# ``COUNTING_SETTINGS``), so the national plan is what it was.
_READ_FOR = """
  SELECT {cols} FROM {months} JOIN feed_placements p ON p.placed_on BETWEEN c.lo AND c.hi
   WHERE $4::text[] IS NOT NULL AND p.site_authority = ANY($4::text[]) AND p.arrived_at <= $3
  UNION ALL
  SELECT {cols} FROM {months}, (SELECT DISTINCT person_key FROM feed_referrals
                                 WHERE $4::text[] IS NOT NULL AND authority = ANY($4::text[])) r,
         LATERAL (SELECT * FROM feed_placements WHERE person_key = r.person_key AND placed_on BETWEEN c.lo AND c.hi
                     AND arrived_at <= $3 AND NOT (site_authority = ANY($4::text[])) OFFSET 0) p
"""
_PLACED = """p.placement_id, p.person_key, p.site, p.site_authority, p.arrived_at, p.route, p.sex, p.age_band,
         p.occupation, p.employment_type, p.attributes, p.foreign_national"""
_COHORT = "c.k, p.placement_id, p.person_key, p.site, p.site_authority, p.arrived_at"
_MONTH = "(SELECT $1::date AS lo, $2::date AS hi) c"
_COHORTS = "unnest($7::int[], $8::date[], $9::date[]) AS c(k, lo, hi)"
_COUNTED = f"""
WITH placed AS MATERIALIZED (
  SELECT {_PLACED}
    FROM feed_placements p WHERE $4::text[] IS NULL AND p.placed_on BETWEEN $1 AND $2 AND p.arrived_at <= $3
  UNION ALL {_READ_FOR.format(cols=_PLACED, months=_MONTH)}
), cohort AS NOT MATERIALIZED (  -- read twice (own sites, referrers): cheaper than kept
  SELECT {_COHORT}
    FROM {_COHORTS}
    JOIN feed_placements p ON p.placed_on BETWEEN c.lo AND c.hi
   WHERE $4::text[] IS NULL AND p.arrived_at <= $3
  UNION ALL {_READ_FOR.format(cols=_COHORT, months=_COHORTS)}
), referrers AS NOT MATERIALIZED (  -- read where used: the planner knows their statistics, hashes them
  SELECT person_key, authority, arrived_at FROM feed_referrals
   WHERE arrived_at <= $3 AND referred_on <= $2
     AND ($4::text[] IS NULL OR authority = ANY($4::text[])) AND NOT (authority = ANY($5::text[]))
), owned AS (
  SELECT p.site_authority AS authority, p.arrived_at > $6 AS late, p.* FROM placed p
   WHERE left(p.site, 6) = p.site_authority
     AND ($4::text[] IS NULL OR p.site_authority = ANY($4::text[])) AND NOT (p.site_authority = ANY($5::text[]))
  UNION ALL
  SELECT r.authority, p.arrived_at > $6 OR min(r.arrived_at) > $6, p.* FROM placed p
    JOIN referrers r ON r.person_key = p.person_key
   WHERE r.authority <> p.site_authority OR left(p.site, 6) <> p.site_authority
   GROUP BY r.authority, p.placement_id, p.person_key, p.site, p.site_authority, p.arrived_at, p.route, p.sex,
         p.age_band, p.occupation, p.employment_type, p.attributes, p.foreign_national
), owned_cohort AS NOT MATERIALIZED (  -- read where used (by one branch of ``reported``)
  SELECT p.site_authority AS authority, p.arrived_at > $6 AS late, p.k, p.site, p.placement_id, p.person_key
    FROM cohort p
   WHERE left(p.site, 6) = p.site_authority
     AND ($4::text[] IS NULL OR p.site_authority = ANY($4::text[])) AND NOT (p.site_authority = ANY($5::text[]))
  UNION ALL
  SELECT r.authority, p.arrived_at > $6 OR min(r.arrived_at) > $6, p.k, p.site, p.placement_id, p.person_key
    FROM cohort p
    JOIN referrers r ON r.person_key = p.person_key
   WHERE r.authority <> p.site_authority OR left(p.site, 6) <> p.site_authority
   GROUP BY r.authority, p.k, p.site, p.placement_id, p.person_key, p.arrived_at
), reported AS (  -- each cohort placement's checkpoint: national, the checkpoints hashed; with $4, each by its key
  SELECT o.*, t.status, t.arrived_at AS status_at FROM owned_cohort o
    LEFT JOIN feed_retention t ON t.placement_id = o.placement_id AND t.checkpoint_months = o.k
         AND t.person_key = o.person_key AND t.arrived_at <= $3
   WHERE $4::text[] IS NULL
  UNION ALL
  SELECT o.*, t.status, t.arrived_at FROM owned_cohort o
    LEFT JOIN LATERAL (SELECT status, arrived_at FROM feed_retention t WHERE t.placement_id = o.placement_id
                          AND t.checkpoint_months = o.k AND t.person_key = o.person_key AND t.arrived_at <= $3
                        OFFSET 0) t ON true
   WHERE $4::text[] IS NOT NULL
)
"""
# The month's placements, as columns: one row per authority, lateness and route (self-found, $10, or
# not) with each placement's categories in arrays, in the same order (a self-found one's employment type
# only), and its id; attributes as their array's text (arrays of arrays cannot differ in length). Counted
# from the arrays at C speed (``_count``). Sent as a row each (their categories rarely repeat within a
# feed), their reading and counting took ~1.2 s of the count's Python CPU, now ~0.3 s, for ~0.3 s more of
# PostgreSQL's (the arrays), measured serially on bench_feed's national month.
_PLACEMENTS = (
    _COUNTED
    + """
SELECT authority, late, route IS NOT DISTINCT FROM $10 AS self_found, array_agg(site) AS sites,
       array_agg(employment_type) AS employments, array_agg(placement_id) AS ids,
       array_agg(sex) FILTER (WHERE route IS DISTINCT FROM $10) AS sexes,
       array_agg(age_band) FILTER (WHERE route IS DISTINCT FROM $10) AS ages,
       array_agg(occupation) FILTER (WHERE route IS DISTINCT FROM $10) AS occupations,
       array_agg(attributes::text) FILTER (WHERE route IS DISTINCT FROM $10) AS attributes,
       array_agg(foreign_national) FILTER (WHERE route IS DISTINCT FROM $10) AS foreign
  FROM owned GROUP BY authority, late, route IS NOT DISTINCT FROM $10
"""
)
# The rest (k > 0 retention cohorts, k = -1 new job seekers), a row per combination of categories.
_FACTS = (
    _COUNTED
    + """
SELECT o.authority, o.late, o.k, o.site, NULL AS sex, NULL AS age_band, NULL::text[] AS attributes,
       NULL::boolean AS foreign_national, coalesce(o.status, 'not_reported') AS status,
       coalesce(o.status_at > $6, false) AS status_late, NULL::boolean AS referred, NULL::boolean AS referred_late,
       count(*)::int AS n
  FROM reported o
 GROUP BY o.authority, o.late, o.k, o.site, coalesce(o.status, 'not_reported'), coalesce(o.status_at > $6, false)
UNION ALL
SELECT g.authority, g.arrived_at > $6, -1, g.site, g.sex, g.age_band, g.attributes, g.foreign_national, NULL,
       NULL, coalesce(g.referred_at <= $3, false), coalesce(g.referred_at <= $3 AND g.referred_at > $6, false),
       count(*)::int
  FROM feed_registrations g
 WHERE g.registered_on BETWEEN $1 AND $2 AND g.arrived_at <= $3 AND g.prior_application_office IS NULL
   AND ($4::text[] IS NULL OR g.authority = ANY($4::text[])) AND NOT (g.authority = ANY($5::text[]))
 GROUP BY g.authority, g.arrived_at > $6, g.site, g.sex, g.age_band, g.attributes, g.foreign_national,
       coalesce(g.referred_at <= $3, false), coalesce(g.referred_at <= $3 AND g.referred_at > $6, false)
"""
)

# New in team support in the month: a person's first enrolment with an authority (at registration, or
# later by the case conference; the earliest, then at registration, then by site) among those sent by
# each horizon ($6, in order), when it falls in the month. Earlier enrolments count too, so a person
# already enrolled before the month is not new. ``enrolled`` is read where it is used, so the planner
# knows how many they are and hashes them (materialized, it guessed 200 and looked each of a national
# month's 48,000 up by index: 0.7 -> 0.4 s of PostgreSQL CPU, measured on bench_feed).
_TEAM_SUPPORT = """
WITH enrolled AS NOT MATERIALIZED (  -- with $4: those enrolled with one of them in the month (whom they can count)
  SELECT person_key FROM feed_registrations WHERE team_support AND registered_on BETWEEN $1 AND $2
     AND ($4::text[] IS NULL OR authority = ANY($4::text[]))
  UNION SELECT person_key FROM feed_referrals WHERE team_support_from BETWEEN $1 AND $2
     AND ($4::text[] IS NULL OR authority = ANY($4::text[]))
), enrolments AS (
  SELECT authority, person_key, site, registered_on AS since, true AS at_registration, arrived_at
    FROM feed_registrations
   WHERE team_support AND registered_on <= $2 AND arrived_at <= $3 AND person_key IN (SELECT * FROM enrolled)
  UNION ALL
  SELECT authority, person_key, site, team_support_from, false, arrived_at FROM feed_referrals
   WHERE team_support_from <= $2 AND arrived_at <= $3 AND person_key IN (SELECT * FROM enrolled)
), first AS (
  SELECT DISTINCT ON (h.n, e.authority, e.person_key) h.n, e.authority, e.site, e.since, e.at_registration
    FROM unnest($6::timestamptz[]) WITH ORDINALITY AS h(at, n)
    JOIN enrolments e ON e.arrived_at <= h.at
   WHERE ($4::text[] IS NULL OR e.authority = ANY($4::text[])) AND NOT (e.authority = ANY($5::text[]))
   ORDER BY h.n, e.authority, e.person_key, e.since, NOT e.at_registration, e.site COLLATE "C"
)
SELECT n, authority, site, at_registration, count(*)::int AS n_people FROM first
 WHERE since BETWEEN $1 AND $2 GROUP BY 1, 2, 3, 4
"""

# Every site (of the authorities $1, if given) with when its first fact was sent (a feed lists its
# authority's sites seen by the horizon): kept by the facts' triggers (migration 036, ``feed_sites``).
# Grouped from every registration, placement and referral ever kept, they cost ~0.4 s of PostgreSQL CPU
# in each count of bench_feed's national month.
_SITES = """
SELECT site, arrived_at FROM feed_sites WHERE $1::text[] IS NULL OR left(site, 6) = ANY($1::text[])
"""


# For the build's transaction (measured on the national bench month): the counting queries' estimates
# are far above their real cost, so PostgreSQL compiled them with JIT first (3 s of a 7 s query), and
# their sorts and hashes spilled to disk with the default 4 MB. Each statement is planned for its own
# parameters: a plan made once for any (a generic plan, which PostgreSQL may choose after a statement's
# fifth run on a connection) would keep every branch of ``_READ``, the national one included.
COUNTING_SETTINGS = (
    "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; SET LOCAL enable_mergejoin = off; "
    "SET LOCAL plan_cache_mode = force_custom_plan"
)


async def count_month(
    conn: asyncpg.Connection,
    month: YearMonth,
    horizon: datetime,
    *,
    only: Collection[str] | None = None,
    without: Collection[str] = (),
    beside: asyncpg.Pool | None = None,
) -> Counted:
    """What ``load_month`` gives, counted: every authority's ``FeedCounts`` for ``month`` as sent by
    ``horizon`` (those in ``only``, if given, and not in ``without``). With ``beside`` (a pool), part of
    the counting is read by a second session in ``conn``'s snapshot, at once (``_reading_beside``)."""
    return (await _count(conn, month, (horizon,), only, without, beside))[0]


async def count_month_twice(
    conn: asyncpg.Connection,
    month: YearMonth,
    earlier: datetime,
    later: datetime,
    *,
    only: Collection[str] | None = None,
    without: Collection[str] = (),
    beside: asyncpg.Pool | None = None,
) -> tuple[Counted, Counted]:
    """``count_month`` at two horizons (``earlier`` ≤ ``later``) from one reading of the rows: a
    month's revision 1 counts what was sent by its cutoff and revision 2 what was sent by now, and the
    second reading cost as much as the first."""
    if earlier > later:
        raise ValueError("the earlier horizon is after the later one")
    if earlier == later:
        once = (await _count(conn, month, (later,), only, without, beside))[0]
        return once, Counted(dict(once.feeds), dict(once.placement_ids))
    first, second = await _count(conn, month, (earlier, later), only, without, beside)
    return first, second


@contextlib.asynccontextmanager
async def _reading_beside(
    conn: asyncpg.Connection, pool: asyncpg.Pool | None
) -> AsyncIterator[asyncpg.Connection | None]:
    """A second session of ``pool`` reading what ``conn`` reads: in a read-only transaction on ``conn``'s
    snapshot (``pg_export_snapshot``, ``SET TRANSACTION SNAPSHOT``), so it counts exactly the facts
    ``conn`` sees, none committed since. The counting statements wait on PostgreSQL, one core each; read
    one after the other, a national count kept one core busy (bench_feed: the month's retention cohorts and
    new job seekers ~1.2 s, the placements, team support and sites ~1 s, of PostgreSQL CPU each).
    None (read on ``conn`` alone) without a pool, where ``conn`` holds no repeatable-read snapshot to
    share, or where the pool has no connection to spare (waiting for one could wait for ``conn`` itself).
    ``conn`` is at the top of its transaction, as the build's is: PostgreSQL exports no snapshot from a
    savepoint."""
    if pool is None or (pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()):
        yield None
        return
    if not conn.is_in_transaction() or await conn.fetchval("SHOW transaction_isolation") not in _SNAPSHOTS:
        yield None
        return
    snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
    if not _SNAPSHOT_ID.fullmatch(snapshot):  # PostgreSQL's own text, quoted below: checked all the same
        raise ValueError("unexpected snapshot identifier")
    async with pool.acquire() as other, other.transaction(isolation="repeatable_read", readonly=True):
        await other.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'; {COUNTING_SETTINGS}")
        yield other


_SNAPSHOTS = frozenset({"repeatable read", "serializable"})
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


class _Horizon:
    """Counts while the rows are read: one horizon's, or a share of two horizons' counts (``_count``)."""

    def __init__(self) -> None:
        self.referral: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
        self.self_found: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
        self.new: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
        self.team: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
        self.retention: dict[str, dict[int, Counter[tuple[str, ...]]]] = defaultdict(
            lambda: {k: Counter() for k in RETENTION_CHECKPOINTS}
        )
        self.ids: dict[str, list[str]] = defaultdict(list)
        self.sites: dict[str, list[str]] = defaultdict(list)

    def counted(self, month: YearMonth) -> Counted:
        feeds = {
            a: FeedCounts(
                a,
                month,
                tuple(sorted(self.sites.get(a, ()))),
                self.referral.get(a, {}),
                self.self_found.get(a, {}),
                self.new.get(a, {}),
                self.team.get(a, {}),
                self.retention[a] if a in self.retention else {k: {} for k in RETENTION_CHECKPOINTS},
            )
            for a in set(self.ids) | set(self.new) | set(self.team)
        }
        return Counted(feeds, {a: sorted(v) for a, v in self.ids.items()})

    def plus(self, other: _Horizon) -> _Horizon:
        """These counts with ``other``'s added (a new ``_Horizon``; neither is changed, and neither may be
        changed after: where only one of them counts a feed's combinations, the sum holds that one's
        counter itself, not a copy). A national build's two horizons share most of their counts (the
        rows counted at both): copied into each sum, they were a third of the count's Python CPU. The
        team counts are copied all the same: ``_count`` adds to them after summing."""
        out = _Horizon()
        for name in ("referral", "self_found", "new"):
            mine, theirs, into = getattr(self, name), getattr(other, name), getattr(out, name)
            for a in mine.keys() | theirs.keys():
                into[a] = _summed(mine.get(a), theirs.get(a))
        for a in self.team.keys() | other.team.keys():
            out.team[a] = team = Counter(self.team.get(a, ()))
            team.update(other.team.get(a, ()))
        for a in self.retention.keys() | other.retention.keys():
            mine_k, theirs_k = self.retention.get(a, {}), other.retention.get(a, {})
            out.retention[a] = {k: _summed(mine_k.get(k), theirs_k.get(k)) for k in RETENTION_CHECKPOINTS}
        for a in self.ids.keys() | other.ids.keys():
            out.ids[a] = self.ids.get(a, []) + other.ids.get(a, [])
        return out


def _summed(a: Counter[T] | None, b: Counter[T] | None) -> Counter[T]:
    """``a`` and ``b`` added up, in ``a``'s order then ``b``'s new keys: where one of them has nothing to
    add, the other itself."""
    if not b:
        return a if a else Counter()
    if not a:
        return b
    out = a.copy()
    for key, n in b.items():
        out[key] += n
    return out


async def _count(
    conn: asyncpg.Connection,
    month: YearMonth,
    horizons: tuple[datetime, ...],
    only: Collection[str] | None,
    without: Collection[str],
    beside: asyncpg.Pool | None = None,
) -> list[Counted]:
    """Every authority's counts at one horizon, or at two (earlier, later) from one reading. The
    database counts where the rows are and sends one row per combination of categories (and whether
    it counts only at the later horizon); the target groups of each combination are decided here, by
    the domain's rule."""
    first, last = month_bounds(month)
    cohorts = _cohort_bounds(month)
    later = horizons[-1]
    filters = (None if only is None else sorted(only), sorted(without))
    params = (
        first,
        last,
        later,
        *filters,
        horizons[0],
        list(cohorts),
        [lo for lo, _ in cohorts.values()],
        [hi for _, hi in cohorts.values()],
    )

    Rows = list[asyncpg.Record]

    async def placements_team_sites(c: asyncpg.Connection) -> tuple[Rows, Rows, Rows]:
        placed = await c.fetch(_PLACEMENTS, *params, SELF_FOUND_ROUTE)
        team = await c.fetch(_TEAM_SUPPORT, first, last, later, *filters, list(horizons))
        return placed, team, await c.fetch(_SITES, filters[0])

    # Each row is counted once, into the share of the counts it adds to: at every horizon (``both``),
    # only at the earlier one, or only at the later one (a late row; the state a row reached after the
    # earlier horizon: a retention status, a registration referred). Each horizon's counts are then
    # its shares summed: counted into each horizon as it was read, the rows cost twice the Python.
    both, earlier_only, later_only = _Horizon(), _Horizon(), _Horizon()
    two = len(horizons) == 2
    # a few hundred combinations in a national month: (attributes, sex, age band, foreign) -> group flags
    flags_of: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def flags(attributes: list[str], sex: str, age: str, foreign: bool) -> tuple[str, ...]:
        key = (tuple(attributes), sex, age, foreign)
        found = flags_of.get(key)
        if found is None:
            found = flags_of[key] = group_flags(attributes, sex, age, foreign)
        return found

    async def count_placements(placed: Rows) -> None:
        # Each attribute list's array text read back as the array by PostgreSQL (a few hundred: each once).
        texts = {t for r in placed if not r["self_found"] for t in set(r["attributes"])}
        arrays = dict(await conn.fetch("SELECT t, t::text[] FROM unnest($1::text[]) AS t", list(texts)))
        placement_flags: dict[tuple[Any, ...], tuple[str, ...]] = {}  # as flags_of, by the attributes' text
        for (
            a,
            late,
            self_found,
            sites_,
            employments,
            ids,
            sexes,
            ages,
            occupations,
            attributes,
            foreign,
        ) in placed:
            share = later_only if late else both
            share.ids[a] += ids
            if self_found:
                share.self_found[a].update(zip(sites_, employments, strict=True))
                continue
            profiles = list(zip(attributes, sexes, ages, foreign, strict=True))
            for p in set(profiles).difference(placement_flags):
                placement_flags[p] = flags(arrays[p[0]], p[1], p[2], p[3])
            # (site, sex, age band, occupation, employment type) + the group flags, counted in C
            share.referral[a].update(
                map(
                    add,
                    zip(sites_, sexes, ages, occupations, employments, strict=True),
                    map(placement_flags.__getitem__, profiles),
                )
            )

    async with _reading_beside(conn, beside) as other:
        if other is None:
            facts = await conn.fetch(_FACTS, *params)
            placed, team, sites = await placements_team_sites(conn)
            await count_placements(placed)
        else:
            # The largest statement there; here the others, and the placements counted while it runs
            # (it takes longer: the retention cohorts and new job seekers).
            reading = asyncio.ensure_future(other.fetch(_FACTS, *params))
            try:
                placed, team, sites = await placements_team_sites(conn)
                await count_placements(placed)
            finally:  # ended before its session goes back to the pool, also where this side failed
                facts = await reading
    # Rows unpacked by position (by name, each field was a lookup).
    for (
        a,
        late,
        k,
        site,
        sex,
        age,
        attributes,
        foreign,
        status,
        status_late,
        referred,
        referred_late,
        n,
    ) in facts:
        share = later_only if late else both
        if k > 0:
            if two and status_late and not late:  # a status sent after the earlier horizon: not reported then
                earlier_only.retention[a][k][(site, "not_reported")] += n
                later_only.retention[a][k][(site, status)] += n
            else:
                share.retention[a][k][(site, status)] += n
        else:
            groups = flags(attributes, sex, age, foreign)
            if two and referred and referred_late and not late:  # referred after the earlier horizon
                earlier_only.new[a][(site, "no", *groups)] += n
                later_only.new[a][(site, "yes", *groups)] += n
            else:
                share.new[a][(site, "yes" if referred else "no", *groups)] += n
    out = [both.plus(earlier_only), both.plus(later_only)] if two else [both.plus(later_only)]
    for t in team:
        out[t["n"] - 1].team[t["authority"]][
            (t["site"], ENROLMENT[0] if t["at_registration"] else ENROLMENT[1])
        ] += t["n_people"]
    for s in sites:
        for h, at in zip(out, horizons, strict=True):
            if s["arrived_at"] <= at:
                h.sites[s["site"][:6]].append(s["site"])
    return [h.counted(month) for h in out]


async def _targets(
    conn: asyncpg.Connection, month: YearMonth, authorities: Sequence[str]
) -> tuple[dict[str, list[Target]], dict[str, dict[str, Tally]], frozenset[str]]:
    """Per authority: the targets of the fiscal year for it and its sites, its sites' results in the
    year's earlier months (summed from the kept tallies of each month's latest revision), and the
    units left out of the evaluation."""
    start, _ = fiscal_months(month)
    fy = fiscal_year(start)
    rows = await conn.fetch(
        "SELECT scope, fiscal_year, kind, target_group, value FROM feed_target_values "
        "WHERE fiscal_year = $1 AND left(scope, 6) = ANY($2::text[]) ORDER BY scope, kind, target_group",
        fy,
        list(authorities),
    )
    targets: dict[str, list[Target]] = defaultdict(list)
    for r in rows:
        targets[r["scope"][:6]].append(
            Target(r["scope"], fy, TargetKind(r["kind"]), float(r["value"]), r["target_group"] or None)
        )
    if not targets:
        return {}, {}, frozenset()
    months = [str(shift_month(month, -k)) for k in range(1, (month.month - 4) % 12 + 1)]
    earlier: dict[str, dict[str, Tally]] = defaultdict(dict)
    for r in await conn.fetch(
        "SELECT DISTINCT ON (authority, month) authority, tallies FROM feed_revisions "
        "WHERE authority = ANY($1::text[]) AND month = ANY($2::text[]) ORDER BY authority, month, revision DESC",
        list(targets),
        months,
    ):
        sums = earlier[r["authority"]]
        for site, tally in r["tallies"].items():
            sums[site] = sums.get(site, Tally()) + Tally.from_json(tally)
    excluded = await conn.fetch(
        "SELECT scope FROM feed_evaluation_exclusions WHERE fiscal_year = $1 AND left(scope, 6) = ANY($2::text[])",
        fy,
        list(targets),
    )
    return dict(targets), dict(earlier), frozenset(r["scope"] for r in excluded)


@dataclass(frozen=True)
class _Work:
    """One feed to compose and keep: its job (without the previous body), the previous revision's body as
    the JSON text it was kept as (None for revision 1), and the revision it would be."""

    job: Job
    previous: bytes | str | None
    revision: int
    # The previous revision's cells as kept beside its body (``_cells_text``), where it has them.
    previous_cells: bytes | str | None = None


@dataclass(frozen=True)
class _Kept:
    """A composed feed as it is kept: the JSON texts of its body, hidden cells, changes and cells (the
    next revision reads, ``read_kept``)."""

    body: bytes
    suppressed: bytes
    changes_text: bytes
    tallies: dict[str, Any]
    referral_placements: int | None
    changes: list[dict[str, Any]]
    cells: str | None = None


def _kept(work: Sequence[_Work], *, threshold: int, horizon: str) -> list[_Kept]:
    """Compose ``work`` and write each result as it is kept (in a worker process, or here)."""
    jobs = [
        replace(w.job, previous=read_kept(w.previous, w.previous_cells)) if w.previous is not None else w.job
        for w in work
    ]
    out = []
    for w, c in zip(work, compose_many(jobs, threshold=threshold), strict=True):
        # Composed in kept order (``domain.feed.kept_order``: indicators, targets, changes), so written as
        # it is; walked and reordered (``as_kept``), a national month's bodies cost ~0.3 s more of CPU.
        order = kept_order(tuple(c.populations))
        tables = {name: orjson.Fragment(_tables_text(c.populations[name])) for name in order}
        body = in_kept_order(
            dict(c.head, populations=tables, revision=w.revision, horizon=horizon, changes=c.changes)
        )
        out.append(
            _Kept(orjson.dumps(body), _suppressed_text(c.populations), orjson.dumps(c.changes), c.tallies,
                  c.head["indicators"]["authority"]["referral_placements"], c.changes,
                  _cells_text([c.populations[name] for name in order]))
        )  # fmt: skip
    return out


@contextlib.contextmanager
def composing_workers(settings: Settings) -> Iterator[Executor | None]:
    """The processes that compose a share of each chunk beside the builder (``feed_build_workers``), for
    ``build_month(executor=…)``; none with 0. Forkserver: a forked worker would inherit (and, as its
    collector walks them, copy) the builder's loaded rows. The processes start on first use: a round of
    a few feeds composes them here (``_compose_all``)."""
    if settings.feed_build_workers == 0:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(settings.feed_build_workers, mp_context=context) as executor:
        yield executor


async def _compose_all(
    work: list[_Work], threshold: int, horizon: str, executor: Executor | None
) -> list[_Kept]:
    """The chunk composed and written as kept (``_kept``), shared with the worker processes (``_shared``).
    What travels is small: the counts and the previous body as its kept text, there; the kept texts,
    back. (Pickled as dictionaries, a chunk's previous and composed bodies cost more to send and read
    back than composing them: the earlier pool was slower than no pool.)"""
    return await _shared(partial(_kept, threshold=threshold, horizon=horizon), work, executor)


async def _shared(
    fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], executor: Executor | None
) -> list[R]:
    """``fn(items)``, in order, with the items shared between the executor's processes and this one:
    each worker takes its share while this process does its own. Equal shares: this process also
    counts, keeps and publishes between chunks. A worker's share runs without collector passes, as this
    process's does (``_paused_call``). This process's share runs in a thread, so the event loop meanwhile
    serves the statements in flight (``_make_revisions`` writes the previous chunk while this one
    composes); the loop itself needs the interpreter only to move their bytes."""
    workers = getattr(executor, "_max_workers", 0)  # a ProcessPoolExecutor's size
    if executor is None or workers < 1 or len(items) < 2 * (workers + 1):
        return await asyncio.to_thread(fn, items)
    loop = asyncio.get_running_loop()
    mine = len(items) // (workers + 1)
    size = -(-(len(items) - mine) // workers)
    shares = [items[i : i + size] for i in range(mine, len(items), size)]
    there = [loop.run_in_executor(executor, partial(_paused_call, fn), share) for share in shares]
    here = await asyncio.to_thread(fn, items[:mine])  # the workers run meanwhile
    return here + [r for share in await asyncio.gather(*there) for r in share]


def _paused_call(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
    """``fn(items)`` in a worker process without collector passes: the builder composes and encodes
    under ``paused()`` (``build_month``, ``_encoded``), a worker ran its share with them, over the
    thousands of containers each composed or checked body makes. That was why the pool hardly paid
    (bench_feed, one worker, its CPU for half the composing and encoding: 6.67/6.95 -> 4.31/3.99 s in
    alternating runs; the builder's own half ~4 s)."""
    with paused():
        return fn(items)


async def build_month(
    pool: asyncpg.Pool,
    settings: Settings,
    month: YearMonth,
    *,
    now: datetime | None = None,
    authorities: Sequence[str] | None = None,
    executor: Executor | None = None,
    fence: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    publish: bool = True,
) -> list[Built]:
    """Build every due revision of ``month`` (all authorities, or those listed); returns what was built.

    Due: revision 1 where a feed has none yet; revision N+1 where the consumer marked the feed since
    (``feed_dirty``) and a published figure or the set of placements changed. One repeatable-read
    snapshot covers marks and facts, so a mark committed during the build survives to the next round.
    """
    now = now or datetime.now(UTC)
    cutoff = cutoff_instant(month, settings.feed_cutoff_day)
    if now < cutoff:
        raise FeedNotClosed(month, cutoff)
    wanted = set(authorities) if authorities else None
    built: list[Built] = []
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        if fence is not None:  # the running builder proves it leads (infra.leadership) before writing
            await fence(conn)
        with paused():
            built += await _build_in_snapshot(conn, settings, month, now, cutoff, wanted, executor, pool)
    if built and publish:  # without: kept, and published by the next build or the service
        await publish_pending(pool, settings, executor)
    return built


async def _build_in_snapshot(
    conn: asyncpg.Connection,
    settings: Settings,
    month: YearMonth,
    now: datetime,
    cutoff: datetime,
    wanted: set[str] | None,
    executor: Executor | None,
    beside: asyncpg.Pool,
) -> list[Built]:
    built: list[Built] = []
    await conn.execute(COUNTING_SETTINGS)
    latest = await _latest(conn, str(month), wanted)
    marks = await conn.fetch("SELECT id, authority FROM feed_dirty WHERE month = $1", str(month))
    marks = [m for m in marks if wanted is None or m["authority"] in wanted]
    # Revision 1: what was sent by the cutoff, for feeds that have none yet. A month's first build
    # with facts sent since the cutoff will also need everything sent up to now (revision 2 of the
    # marked feeds, the backfill): both are counted from one reading of the rows.
    up_to_now: Counted | None = None
    facts: dict[str, datetime] = {}  # read where a count is to be skipped for nobody (``_without_revision``)
    if not latest and marks and now > cutoff:
        loaded, up_to_now = await count_month_twice(conn, month, cutoff, now, only=wanted, beside=beside)
    else:
        facts = await _first_facts(conn, month)
        # Counted at the cutoff: only the authorities that could have a feed and have no revision yet
        # (none, in a month every feed of which has one: a round after a few late facts counts only the
        # marked feeds, below, not the whole month twice).
        lacking = _without_revision(facts, cutoff, latest, wanted)
        loaded = (
            await count_month(conn, month, cutoff, only=lacking, beside=beside)
            if lacking
            else Counted({}, {})
        )
    # Only feeds with facts: building one authority gives exactly what building all gives it (an
    # authority with nothing sent by the cutoff is not handed an empty revision 1 here; the backfill
    # below makes its revision 1, as it would in a national build).
    fresh = set(loaded.feeds)
    if fresh:
        built += await _make_revisions(conn, settings, month, cutoff, loaded, sorted(fresh), latest, executor)
        latest = await _latest(conn, str(month), wanted)
    # Backfill: a feed whose every fact was sent after the cutoff (an authority joining the hub, or its
    # history loaded later) gets revision 1 from what has been sent so far, not an empty report.
    # Counted up to now already: its feeds without a revision (``_first_facts`` gives a superset of the
    # count's authorities, so it would skip nothing the count has; reading it cost ~0.16 s of PostgreSQL
    # CPU in bench_feed's national build).
    if now > cutoff:
        if up_to_now is not None:
            backfilled = _restricted(up_to_now, lambda a: a not in latest)
        elif _without_revision(facts, now, latest, wanted):
            backfilled = await count_month(conn, month, now, only=wanted, without=latest, beside=beside)
        else:
            backfilled = Counted({}, {})
        if backfilled.feeds:
            first = sorted(backfilled.feeds)
            built += await _make_revisions(conn, settings, month, now, backfilled, first, latest, executor)
            latest = await _latest(conn, str(month), wanted)
    # Later revisions: everything sent up to now, where something arrived since.
    if now > cutoff:
        due = sorted({m["authority"] for m in marks if m["authority"] in latest})
        if due:
            if up_to_now is not None:
                loaded = _restricted(up_to_now, set(due).__contains__)
            else:
                loaded = await count_month(conn, month, now, only=due, beside=beside)
            built += await _make_revisions(conn, settings, month, now, loaded, due, latest, executor)
        await conn.execute("DELETE FROM feed_dirty WHERE id = ANY($1::bigint[])", [m["id"] for m in marks])
    return built


def _restricted(counted: Counted, keep: Callable[[str], bool]) -> Counted:
    """The feeds of ``counted`` that ``keep`` accepts (as counting only those would give them)."""
    return Counted(
        {a: f for a, f in counted.feeds.items() if keep(a)},
        {a: ids for a, ids in counted.placement_ids.items() if keep(a)},
    )


async def _first_facts(conn: asyncpg.Connection, month: YearMonth) -> dict[str, datetime]:
    """Each authority the month's facts could give a feed, with when the first such fact was sent: a
    superset of what ``count_month`` gives (the authority of a placement's site, a referrer, the
    authority of a registration or an enrolment). Retention-cohort placements are not read: alone they
    make no feed (``assemble``, ``_Horizon.counted``; ``tests/integration/test_feed_first_facts.py``)."""
    first, last = month_bounds(month)
    rows = await conn.fetch(
        "SELECT authority, min(arrived_at) AS arrived_at FROM ("
        "  SELECT site_authority AS authority, arrived_at FROM feed_placements WHERE placed_on BETWEEN $1 AND $2 "
        "  UNION ALL SELECT authority, arrived_at FROM feed_referrals WHERE referred_on <= $2 "
        "  UNION ALL SELECT authority, arrived_at FROM feed_registrations WHERE registered_on BETWEEN $1 AND $2 "
        "  UNION ALL SELECT authority, arrived_at FROM feed_referrals WHERE team_support_from BETWEEN $1 AND $2"
        ") x GROUP BY authority",
        first,
        last,
    )
    return {r["authority"]: r["arrived_at"] for r in rows}


def _without_revision(
    facts: dict[str, datetime], horizon: datetime, latest: dict[str, int], wanted: set[str] | None
) -> set[str]:
    """Authorities (wanted) without a revision yet that the month's facts sent by ``horizon`` could give
    a feed (``_first_facts``), so a pass with nobody to build is skipped."""
    out = {a for a, at in facts.items() if at <= horizon} - set(latest)
    return out if wanted is None else out & wanted


async def _latest(conn: asyncpg.Connection, month: str, wanted: set[str] | None) -> dict[str, int]:
    """The latest revision number of each feed of ``month`` (bodies are read only where a feed is
    rebuilt: a national month's bodies are tens of megabytes)."""
    rows = await conn.fetch(
        "SELECT authority, max(revision) AS revision FROM feed_revisions WHERE month = $1 GROUP BY authority",
        month,
    )
    return {r["authority"]: r["revision"] for r in rows if wanted is None or r["authority"] in wanted}


async def _previous(
    conn: asyncpg.Connection, month: str, latest: dict[str, int], authorities: list[str]
) -> dict[str, asyncpg.Record]:
    """The latest revision (number, body as its kept JSON text in UTF-8, placement ids) of those of
    ``authorities`` that have one (the text is read where the feed is composed: ``_kept``). The body comes
    as the bytes PostgreSQL sends (``convert_to``, a ``bytea``), not as a ``str``: the driver decoded each
    body's UTF-8 into a ``str`` that the JSON reader encoded into UTF-8 again (a body holds non-ASCII
    categories, 計: each a two-byte ``str``), ~14 instructions a byte for the encoding alone."""
    have = [a for a in authorities if a in latest]
    if not have:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (authority) authority, revision, convert_to(body::text, 'UTF8') AS body, placement_ids, "
        "cells "
        "FROM feed_revisions "
        "WHERE month = $1 AND authority = ANY($2::text[]) ORDER BY authority, revision DESC",
        month,
        have,
    )
    return {r["authority"]: r for r in rows}


async def _make_revisions(
    conn: asyncpg.Connection,
    settings: Settings,
    month: YearMonth,
    horizon: datetime,
    loaded: Counted,
    authorities: list[str],
    latest: dict[str, int],
    executor: Executor | None,
) -> list[Built]:
    """Compose, compare and keep the revisions of ``authorities``, a chunk at a time: a national
    month's bodies held at once (the new ones, and the previous ones read for revision 2) were most
    of the build's memory.

    Pipelined: while a chunk composes (``_compose_all`` runs off the event loop: in a thread and the
    worker processes), the previous chunk's revisions are written and then the next chunk's targets and
    previous revisions read, one after the other on the one connection (a session runs one statement at a
    time). PostgreSQL's share of keeping them (most of it: checking, compressing and storing ~37 KB of
    JSON a body) and the reads run on the other core instead of between the composing. The next chunk's
    authorities are not the written chunk's, so it reads the same rows after that write as before it."""
    built: list[Built] = []
    ordered = sorted(authorities)
    chunks = [ordered[i : i + _CHUNK] for i in range(0, len(ordered), _CHUNK)]
    if not chunks:
        return built

    async def keep_then_read(rows: list[tuple[Any, ...]], chunk: list[str] | None) -> Any:
        if rows:
            await _keep(conn, rows)
        return None if chunk is None else await _chunk_work(conn, month, horizon, loaded, chunk, latest)

    work, previous = await _chunk_work(conn, month, horizon, loaded, chunks[0], latest)
    rows: list[tuple[Any, ...]] = []  # the previous chunk's, written while this one composes
    for i in range(len(chunks)):
        meanwhile = asyncio.ensure_future(
            keep_then_read(rows, chunks[i + 1] if i + 1 < len(chunks) else None)
        )
        try:
            kept = await _compose_all(
                work, settings.feed_suppression_threshold, horizon.isoformat(), executor
            )
        finally:  # ended before the connection is used again, or given back on failure
            following = await meanwhile
        rows, made = _chunk_rows(month, horizon, loaded, work, previous, kept)
        built += made
        if following is not None:
            work, previous = following
    if rows:
        await _keep(conn, rows)
    return built


_CHUNK = 256  # feeds composed and kept at a time


async def _chunk_work(
    conn: asyncpg.Connection,
    month: YearMonth,
    horizon: datetime,
    loaded: Counted,
    authorities: list[str],
    latest: dict[str, int],
) -> tuple[list[_Work], dict[str, asyncpg.Record]]:
    """The chunk's feeds to compose (their targets, earlier results and previous revisions read), with
    the previous revisions by authority."""
    targets, earlier, excluded = await _targets(conn, month, authorities)
    latest_rows = await _previous(conn, str(month), latest, authorities)
    work = []
    for a in sorted(authorities):
        feed = loaded.feeds.get(a) or FeedCounts(a, month, ())
        prev = latest_rows.get(a)
        job = Job(feed, None, targets.get(a, ()), earlier.get(a, {}), excluded)
        work.append(
            _Work(job, prev["body"], prev["revision"] + 1, prev["cells"]) if prev else _Work(job, None, 1)
        )
    return work, latest_rows


def _chunk_rows(
    month: YearMonth,
    horizon: datetime,
    loaded: Counted,
    work: list[_Work],
    latest_rows: dict[str, asyncpg.Record],
    kept: list[_Kept],
) -> tuple[list[tuple[Any, ...]], list[Built]]:
    """The chunk's revisions to keep (``_keep``) and what they are: a feed whose previous revision has
    the same figures and placements is not revised."""
    rows = []
    built = []
    for w, k in zip(work, kept, strict=True):
        a = w.job.feed.authority
        prev = latest_rows.get(a)
        ids = loaded.placement_ids.get(a, [])
        # compared with the previous revision's body, where there is one
        if prev is not None and not k.changes and ids == sorted(prev["placement_ids"]):
            continue
        rows.append(
            (
                a,
                str(month),
                w.revision,
                horizon,
                k.body,
                k.suppressed,
                ids,
                k.changes_text,
                k.tallies,
                k.cells,
            )
        )
        built.append(Built(a, str(month), w.revision, k.referral_placements, k.changes))
    return rows, built


async def _keep(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO feed_revisions (authority, month, revision, horizon, body, suppressed, placement_ids, "
            "changes, tallies, cells) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT DO NOTHING",
            rows,
        )


def as_kept(value: Any) -> Any:
    """``value`` with every object's keys in the order ``jsonb`` keeps them (``domain.feed.kept_order``:
    shorter keys first, then by their bytes): a revision's body, hidden cells and changes are stored as
    the JSON text written (``json`` columns, migration 018), and every reader (the publisher's records,
    the portal, deliveries, the next revision) sees them as it saw them when they were kept as ``jsonb``.
    The reference the kept texts are tested against: a body is composed in that order and written as it
    is (``_kept``). A table's ``cells`` hold no objects (the feed contract: keys, value, reason), so they
    are not walked: they are most of a body."""
    if type(value) is dict:
        if tuple(value) == _TABLE and type(value["name"]) is str and _plain(value["dims"]):
            # A table (most of a body's objects: ~60 a feed): its keys in jsonb's order, written out.
            return {"dims": value["dims"], "name": value["name"], "cells": value["cells"]}
        kept = {}
        for k in kept_order(tuple(value)):
            v = value[k]
            kept[k] = as_kept(v) if type(v) in _CONTAINERS and k != "cells" else v
        return kept
    if type(value) is list or type(value) is tuple:
        if _CONTAINERS.isdisjoint(map(type, value)):
            return value  # no object inside (a table's dims, a feed's sites): written as it is
        return [as_kept(v) if type(v) in _CONTAINERS else v for v in value]
    return value


_CONTAINERS = frozenset({dict, list, tuple})
_TABLE = ("name", "dims", "cells")  # a body's table as composed; kept as "dims", "name", "cells"


def _plain(value: Any) -> bool:
    """A list with no container inside (a table's dims)."""
    return type(value) is list and _CONTAINERS.isdisjoint(map(type, value))


def _tables_text(feed: SuppressedFeed) -> bytes:
    """A population's tables as their kept JSON text (``orjson.dumps(as_kept(tables))``, each table's
    keys in jsonb's order), written from its layout's template (``_templates``: the text between the
    values) and the values and reasons as orjson writes them, without a row per cell (a national
    month's bodies hold ~1.9 million cells). ``tests/unit/test_feed_kept_tables.py`` holds it to the
    rows' text byte for byte."""
    columns = feed.columns()
    if columns is None:  # cells not in a layout's order: the rows, written as they are
        return orjson.dumps(
            [{"dims": list(dims), "name": name, "cells": feed.rows(name)} for name, dims in feed.heads()]
        )
    refs, values, why = columns
    shown, hidden = _templates(refs, tuple(feed.heads()))
    # Each value's and reason's JSON in order (counts, null, a reason's name: none holds a comma).
    if not any(why):  # nothing hidden (most populations): every reason null, in the template
        parts = shown.copy()
        parts[1::2] = orjson.dumps(values)[1:-1].split(b",")
        return b"".join(parts)
    parts = hidden.copy()
    parts[1::4] = orjson.dumps(values)[1:-1].split(b",")
    parts[3::4] = orjson.dumps(why)[1:-1].split(b",")
    return b"".join(parts)


_template_cache: dict[
    int, tuple[tuple[CellRef, ...], tuple[tuple[str, tuple[str, ...]], ...], list[bytes], list[bytes]]
] = {}


def _templates(
    refs: tuple[CellRef, ...], heads: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[list[bytes], list[bytes]]:
    """A layout's tables as kept JSON text, cut where each cell's value goes (reasons null) and, for a
    population with hidden cells, where each value and each reason go: the pieces, with a place
    between each two for what goes there. Made once per layout (a national month has a handful;
    ``refs`` is the layout's own tuple, the same object for each feed of it). Keys, names and
    dimensions are the layout's categories (aggregates, never personal data), written by orjson."""
    found = _template_cache.get(id(refs))
    if found is not None and found[0] is refs and found[1] == heads:
        return found[2], found[3]
    if [name for name, _ in heads] != list(dict.fromkeys(ref.table for ref in refs)):
        raise ValueError("the cells are not the tables' cells in their order")
    shown: list[bytes] = []
    hidden: list[bytes] = []
    text = b"["  # what comes before the next value
    table = None
    dims = dict(heads)
    for ref in refs:
        if ref.table != table:
            if table is not None:
                text += b"]},"
            table = ref.table
            text += (
                b'{"dims":'
                + orjson.dumps(list(dims[table]))
                + b',"name":'
                + orjson.dumps(table)
                + b',"cells":['
            )
        else:
            text += b","
        text += b"[" + orjson.dumps(list(ref.key)) + b","
        shown += [text, b""]
        hidden += [text, b"", b",", b""]
        text = b"]"
    text += b"]}]"
    shown.append(b",null" + text)
    hidden.append(text)
    for n in range(2, len(shown) - 1, 2):  # after a value: its null reason, then the next cell's key
        shown[n] = b",null" + shown[n]
    if len(_template_cache) >= 256:
        _template_cache.clear()
    _template_cache[id(refs)] = (refs, heads, shown, hidden)
    return shown, hidden


def _cells_text(populations: Sequence[SuppressedFeed]) -> str | None:
    """The cells a revision keeps for the next one to read (migration 067): each population's values
    published in its layout's order and its hidden cells' reasons, ``[[values, reasons], ...]``, the
    populations in the body's order; None where a population's cells are not in a layout's order (the
    next revision then reads the body's tables). A ``str`` (ASCII): what the driver writes to a text column."""
    parts = []
    for s in populations:
        columns = s.columns()
        if columns is None:
            return None
        _, values, why = columns
        parts.append(b"[" + orjson.dumps(values) + b"," + orjson.dumps(why) + b"]")
    return (b"[" + b",".join(parts) + b"]").decode()


def read_kept(body: bytes | str, cells: bytes | str | None = None) -> dict[str, Any]:
    """A kept body as ``orjson.loads`` gives it (its tables' cells as (key, value, reason) tuples, not
    lists: every reader indexes them), its populations' tables made from the cells kept beside it
    (``_cells_text``) and the keys of its layout (``_kept_layout``) instead of parsed from its text: a
    national month reads ~1,400 previous bodies of ~600 cells, and parsing each cell made a list, a key
    list and its strings. The rest of the body is parsed as it is. Where there are no such cells (a
    revision kept before migration 067), or they are not its layout's, the body is parsed in full.
    ``tests/unit/test_feed_read_kept.py`` holds it to ``orjson.loads``."""
    text = body.encode() if isinstance(body, str) else body
    if cells is None:
        return orjson.loads(text)
    # The populations are the body's last key but one (jsonb's order: ``domain.feed.kept_order``), and
    # neither key is in any object before them, nor in a table: the first ``,"populations":{`` (outside
    # a string: a quote in one is escaped) begins their value, the first ``},"classification_version":``
    # ends it.
    start = text.find(_POPULATIONS)
    end = text.find(_AFTER_POPULATIONS, start)
    if start < 0 or end < 0:
        return orjson.loads(text)
    head: dict[str, Any] = orjson.loads(text[:start] + b',"populations":null' + text[end + 1 :])
    layout = head.get("layout")
    if type(layout) is not list or head.get("populations", False) is not None:
        return orjson.loads(text)
    populations = _kept_layout(tuple(site_category(head["authority"], s) for s in layout))
    kept = orjson.loads(cells)
    if len(kept) != len(populations) or any(
        len(v) != len(p.keys) or len(r) != len(p.keys) for p, (v, r) in zip(populations, kept, strict=True)
    ):
        return orjson.loads(text)
    tables = {}
    for p, (values, reasons) in zip(populations, kept, strict=True):
        rows = zip(p.keys, values, reasons, strict=True)
        tables[p.population] = [
            {"dims": list(dims), "name": name, "cells": list(islice(rows, size))}
            for name, dims, size in p.tables
        ]
    head["populations"] = tables
    return head


_POPULATIONS = b',"populations":{'
_AFTER_POPULATIONS = b'},"classification_version":'


@dataclass(frozen=True)
class _KeptPopulation:
    """One population of a layout as a body keeps it: its name, each cell's key in the layout's order,
    and each table's name, dimensions and number of cells."""

    population: str
    keys: tuple[tuple[str, ...], ...]
    tables: tuple[tuple[str, tuple[str, ...], int], ...]


_kept_layouts: dict[tuple[str, ...], list[_KeptPopulation]] = {}


def _kept_layout(categories: tuple[str, ...]) -> list[_KeptPopulation]:
    """The populations of a layout (its own sites' categories), in the order a body keeps them: worked
    out once per layout from an empty feed of it (a national month has a handful). Categories, names and
    dimensions only, never personal data."""
    found = _kept_layouts.get(categories)
    if found is not None:
        return found
    # An authority's own sites, numbered as the layout's (another authority's site is of OTHER_SITES).
    sites = tuple(f"000000-{c}" if c != OTHER_SITES else "999999-00" for c in categories)
    counted = population_counts([FeedCounts("000000", YearMonth(2000, 4), (), layout=sites)])[0]
    out = []
    for population in kept_order(tuple(counted)):
        c = counted[population]
        refs = c.structure.ref_order
        sizes = Counter(ref.table for ref in refs)
        heads = tuple((t.name, t.dims, sizes[t.name]) for t in c.tables)
        out.append(_KeptPopulation(population, tuple(ref.key for ref in refs), heads))
    if len(_kept_layouts) >= 256:
        _kept_layouts.clear()
    _kept_layouts[categories] = out
    return out


def _suppressed_text(populations: Mapping[str, SuppressedFeed]) -> bytes:
    """A composed feed's hidden cells as kept (``orjson.dumps(composed.suppressed)``: [table, key] of each,
    each population's in sorted order), written from each cell's text, made once per layout (a national
    month hides ~190,000 cells). ``tests/unit/test_feed_kept_tables.py`` holds it to the list's text."""
    parts = []
    for s in populations.values():
        at = s.suppressed_positions()
        columns = s.columns()
        if at is None or columns is None:  # cells not in a layout's order: the list, written as it is
            parts += [orjson.dumps([ref.table, list(ref.key)]) for ref in s.suppressed_in_order()]
        elif at:
            parts += map(_hidden_cell_texts(columns[0]).__getitem__, at)
    return b"[" + b",".join(parts) + b"]"


_hidden_cell_cache: dict[int, tuple[tuple[CellRef, ...], list[bytes]]] = {}


def _hidden_cell_texts(refs: tuple[CellRef, ...]) -> list[bytes]:
    """Each cell of a layout as a hidden cell is kept ([table, key]), in the cells' order; once per
    layout (``refs`` is the layout's own tuple). Table names and keys are categories, never personal data."""
    found = _hidden_cell_cache.get(id(refs))
    if found is not None and found[0] is refs:
        return found[1]
    texts = [orjson.dumps([ref.table, list(ref.key)]) for ref in refs]
    if len(_hidden_cell_cache) >= 256:
        _hidden_cell_cache.clear()
    _hidden_cell_cache[id(refs)] = (refs, texts)
    return texts


def _encoded(rows: Sequence[tuple[bytes, datetime]]) -> list[tuple[bytes, list[tuple[str, bytes]], bytes]]:
    """Kept bodies (text, built at) as feed records (``encode_feed_revision``: checked and written).
    No collector passes meanwhile (``infra.gc.paused``): checking a body makes thousands of containers
    (a cell is a list in a tuple), each freed by reference counting once its record is written, and
    the passes over them cost a third of the publishing (a national month's 3,100 bodies: 3.1-3.4 s
    of CPU with them, 2.0-2.1 s without)."""
    with paused():
        return [encode_feed_revision(body, at) for body, at in rows]


async def publish_pending(pool: asyncpg.Pool, settings: Settings, executor: Executor | None = None) -> int:
    """Publish kept revisions not yet on ``settings.feed_topic`` (aggregates only; the ``ittai.feed.v1``
    contract, CloudEvents binary mode: ``contracts.feed``), and stamp them, a chunk at a time in the
    order of their key (a national month's bodies read at once took hundreds of MB).

    Pipelined: while a chunk is checked and written as records (``_encoded``, off the event loop), the
    previous chunk is stamped once Kafka has it, and the next chunk is read. A chunk is stamped before the
    next one is encoded to its end, as it was when they ran one after the other: a failure leaves the
    chunks Kafka acknowledged stamped."""
    published = 0
    async with pool.acquire() as conn:
        producer = None
        sent: tuple[list[asyncio.Future[Any]], list[asyncpg.Record]] | None = None  # Kafka has it, or will
        try:
            rows = await _unpublished(conn, ("", "", 0))
            while rows:
                if producer is None:
                    producer = await start_producer(
                        settings,
                        max_request_size=8 * 1024 * 1024,
                        # A body is about 20 KB: with the default 16 KB batches each would be a request
                        # of its own.
                        max_batch_size=1024 * 1024,
                        linger_ms=5,
                    )
                # checked and written by the worker processes too, where there are (a third of a build's time)
                encoding = asyncio.ensure_future(
                    _shared(_encoded, [(r["body"], r["built_at"]) for r in rows], executor)
                )
                try:
                    if sent is not None:
                        published += await _stamp(conn, *sent)
                        sent = None
                    last = rows[-1]
                    following = await _unpublished(conn, (last["month"], last["authority"], last["revision"]))
                finally:
                    records = await encoding  # ended before leaving, also where the statements failed
                futures = [
                    await producer.send(settings.feed_topic, key=key, value=value, headers=headers)
                    for key, headers, value in records
                ]
                sent = (futures, rows)
                rows = following
            if sent is not None:
                published += await _stamp(conn, *sent)
        finally:
            if producer is not None:
                await producer.stop()
    return published


async def _unpublished(conn: asyncpg.Connection, after: tuple[str, str, int]) -> list[asyncpg.Record]:
    """The next chunk of kept revisions not yet published, after the key ``after``."""
    return await conn.fetch(
        # The body as text for the contract to parse and check: decoding a national month's
        # bodies into dicts first cost 4 s of this process's CPU (measured; ~37 KB each).
        # The chunk's keys first: a body turned to text below the sort would be turned for
        # every revision still unpublished, at every chunk. As UTF-8 bytes (``convert_to``), read
        # by the contract as they come (``_previous`` says why).
        "SELECT f.authority, f.month, f.revision, convert_to(f.body::text, 'UTF8') AS body, f.built_at "
        "FROM (SELECT authority, month, revision FROM feed_revisions WHERE published_at IS NULL "
        "  AND (month, authority, revision) > ($1, $2, $3) ORDER BY month, authority, revision "
        "  LIMIT $4) k JOIN feed_revisions f USING (authority, month, revision) "
        "ORDER BY f.month, f.authority, f.revision",
        *after,
        _CHUNK,
    )


async def _stamp(
    conn: asyncpg.Connection, futures: list[asyncio.Future[Any]], rows: list[asyncpg.Record]
) -> int:
    """Stamp a chunk published once Kafka has acknowledged each of its records; how many."""
    await asyncio.gather(*futures)
    # Each by its key: joined to the chunk's keys, the planner took feed_revisions for a
    # row or two (its statistics predate the build that just filled it) and scanned it for
    # every key (1.6 s of PostgreSQL CPU for a national month, measured).
    await conn.executemany(
        "UPDATE feed_revisions SET published_at = now() WHERE authority = $1 AND month = $2 AND revision = $3",
        [(r["authority"], r["month"], r["revision"]) for r in rows],
    )
    return len(rows)


async def months_to_rebuild(conn: asyncpg.Connection, months: Sequence[YearMonth]) -> list[YearMonth]:
    """Of ``months``, those a build could change: never built, or marked by the consumer since
    (``feed_dirty``). A month built before and unmarked since would be read in full only to find
    nothing due: every fact sent since its last build marks the feeds it counts for (the consumer
    writes the mark in the fact's own transaction), and without a mark no new revision is due."""
    built = {r["month"] for r in await conn.fetch("SELECT DISTINCT month FROM feed_revisions")}
    marked = {r["month"] for r in await conn.fetch("SELECT DISTINCT month FROM feed_dirty")}
    return [m for m in months if str(m) not in built or str(m) in marked]


async def months_with_activity(conn: asyncpg.Connection) -> list[YearMonth]:
    rows = await conn.fetch(
        "SELECT DISTINCT to_char(placed_on, 'YYYY-MM') AS m FROM feed_placements UNION "
        "SELECT DISTINCT to_char(registered_on, 'YYYY-MM') FROM feed_registrations ORDER BY 1"
    )
    return [YearMonth(int(r["m"][:4]), int(r["m"][5:])) for r in rows]
