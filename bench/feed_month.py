"""The national month bench_feed builds: the rows, generated in PostgreSQL (``generate``).

Kept apart from the bench so that a test can run the same statements at a small scale without the
bench's settings (its database and topic namespace). Every value is drawn from an md5 of the row's
number and of what is drawn, so the same statements give the same rows whatever plan PostgreSQL makes
(``tests/integration/test_bench_feed_rows.py``).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import asyncpg

from domain.calendar import YearMonth
from domain.codes import lg_check_digit

AUTHORITIES = 1700
REGISTRATIONS = 480_000
PLACEMENTS = 130_000
MONTH = YearMonth(2025, 10)
LATE_SHARE = 0.03
CUTOFF = datetime(2025, 11, 5, 15, tzinfo=UTC)


def sites() -> list[str]:
    rng = random.Random(5)
    codes: set[str] = set()
    while len(codes) < AUTHORITIES:
        first = f"{rng.randint(1, 47):02d}{rng.randint(100, 999):03d}"
        codes.add(first + str(lg_check_digit(first)))
    out = []
    for code in sorted(codes):
        n = rng.choices((1, 2, 3), (35, 40, 25))[0]
        out += [f"{code}-{i:02d}" for i in range(1, n + 1)]
    return out


# Every value the generation draws is a function of the row's number and of what is drawn (md5 of both,
# read as a uniform number in [0, 1)), not random(): random() is one sequence per session, handed out in
# the order the executor happens to produce rows, and that order is the plan's (which side of a hash
# join is hashed, in how many batches, whether autovacuum had analyzed the table just written when the
# next statement was planned). With setseed(0.5151) the same seed gave other rows on another machine, or
# on the same one under other load. The rows are also written in a fixed order (ORDER BY), so that the
# tables' pages hold them in the same order too.
DRAW = (
    "CREATE FUNCTION pg_temp.draw(key text) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE "
    "AS $$ SELECT ('x' || left(md5(key), 13))::bit(52)::bigint / 4503599627370496.0::float8 $$"
)

GENERATE: list[tuple[str, tuple[str, ...]]] = [
    (DRAW, ()),
    (
        "CREATE TEMP TABLE s AS SELECT i, site FROM unnest($1::text[]) WITH ORDINALITY AS u(site, i)",
        ("sites",),
    ),
    # Skewed site sizes: a few busy sites, many small ones.
    (
        "CREATE TEMP TABLE w AS SELECT g, 1 + floor((SELECT count(*) FROM s) * power(pg_temp.draw('w' || g), 1.6))::int "
        "AS i FROM generate_series(1, $1::int) AS g",
        ("registrations",),
    ),
    (
        "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, team_support, "
        "personal, arrived_at) SELECT md5('r' || g), md5('p' || g), left(s.site, 6), s.site, $1::date + (g % 28), "
        "pg_temp.draw('t' || g) < 0.10, '{}'::jsonb, ($1::date + (g % 28))::timestamptz + interval '10 hours' "
        "FROM w JOIN s USING (i) ORDER BY g",
        ("first",),
    ),
    # 40% referred by the authority running the site (送り込み); 2% of those by another authority.
    (
        "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at) "
        "SELECT md5('f' || g), r.person_key, CASE WHEN pg_temp.draw('o' || g) < 0.02 THEN left(o.site, 6) "
        "ELSE r.authority END, r.site, r.registered_on, r.arrived_at - interval '1 hour' "
        "FROM generate_series(1, $1::int) AS g "
        "JOIN feed_registrations r ON r.event_id = md5('r' || g) "
        "JOIN s o ON o.i = 1 + (g % (SELECT count(*) FROM s)) WHERE g % 5 < 2 ORDER BY g",
        ("registrations",),
    ),
]

# $3 is the cohort's tag ('m0' the month, 'm1', 'm3', 'm6' the retention cohorts); each draw's key is the
# tag, what is drawn and the placement's number.
PLACEMENTS_SQL = """
INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, occupation,
  classification_version, employment_type, sex, age_band, attributes, personal, arrived_at)
SELECT md5($3 || g), p.person_key, p.site, left(p.site, 6), p.day,
       (ARRAY['hello_work_referral','self_found'])[1 + (pg_temp.draw($3 || ':route:' || g) < 0.25)::int],
       lpad((1 + floor(15 * power(pg_temp.draw($3 || ':occupation:' || g), 1.3)))::int::text, 2, '0'), 'MHLW-2022',
       (ARRAY['regular_full_time','non_regular_full_time','part_time','temporary'])
         [1 + floor(4 * power(pg_temp.draw($3 || ':employment:' || g), 1.4))::int],
       (ARRAY['male','female','not_stated'])[CASE WHEN pg_temp.draw($3 || ':sex-stated:' || g) < 0.01 THEN 3
                                                  WHEN pg_temp.draw($3 || ':sex:' || g) < 0.55 THEN 2 ELSE 1 END],
       (ARRAY['19以下','20-24','25-29','30-34','35-39','40-44','45-49','50-54','55-59','60-64','65以上'])
         [1 + floor(11 * pg_temp.draw($3 || ':age:' || g))::int],
       ARRAY[(ARRAY['public_assistance','child_rearing_allowance','housing_benefit','needy_person_support',
              'disability','youth','parenting','general'])[1 + floor(8 * power(pg_temp.draw($3 || ':group:' || g), 1.5))::int]],
       '{}'::jsonb,
       CASE WHEN pg_temp.draw($3 || ':late:' || g) < $4 THEN $5::timestamptz + interval '3 days'
            ELSE p.day::timestamptz + interval '1 day' END
  FROM (SELECT x.g, coalesce(r.person_key, md5($3 || 'p' || x.g)) AS person_key, coalesce(r.site, s.site) AS site,
               $2::date + (x.g % 28) AS day
          FROM (SELECT g, 1 + floor((SELECT count(*) FROM s) * power(pg_temp.draw($3 || ':site:' || g), 1.6))::int AS i
                  FROM generate_series(1, $1::int) AS g) x
          JOIN s ON s.i = x.i
          LEFT JOIN feed_registrations r ON $3 = 'm0' AND r.event_id = md5('r' || x.g)) p
 WHERE p.site IS NOT NULL
 ORDER BY p.g;
"""

# Each checkpoint's draws are keyed by the placement and the checkpoint ($3 months).
RETENTION_SQL = """
INSERT INTO feed_retention (placement_id, checkpoint_months, person_key, status, checked_on, arrived_at)
SELECT placement_id, $3, person_key,
       CASE WHEN pg_temp.draw(placement_id || ':' || $3::int || ':status') < 0.85 THEN 'employed' ELSE 'left' END,
       placed_on + make_interval(months => $3), placed_on::timestamptz + make_interval(months => $3, days => 1)
  FROM feed_placements
 WHERE placed_on BETWEEN $1 AND $2 AND pg_temp.draw(placement_id || ':' || $3::int || ':kept') < 0.8
 ORDER BY placement_id;
"""


async def generate(
    conn: asyncpg.Connection, registrations: int = REGISTRATIONS, placements: int = PLACEMENTS
) -> None:
    """Write the month's facts (registrations, referrals, the month's placements and the retention
    cohorts' with their checkpoints) with ``conn``, whose session keeps the temporary tables and the
    draw function."""
    first = datetime(MONTH.year, MONTH.month, 1).date()
    values = {"sites": sites(), "registrations": registrations, "first": first}
    for stmt, names in GENERATE:
        await conn.execute(stmt, *(values[n] for n in names))
    for tag, month_first, late in (
        ("m0", first, LATE_SHARE),
        ("m1", datetime(2025, 9, 1).date(), 0.0),
        ("m3", datetime(2025, 7, 1).date(), 0.0),
        ("m6", datetime(2025, 4, 1).date(), 0.0),
    ):
        await conn.execute(PLACEMENTS_SQL, placements, month_first, tag, late, CUTOFF)
    for k, lo, hi in (
        (1, "2025-09-01", "2025-09-30"),
        (3, "2025-07-01", "2025-07-31"),
        (6, "2025-04-01", "2025-04-30"),
    ):
        await conn.execute(
            RETENTION_SQL, datetime.fromisoformat(lo).date(), datetime.fromisoformat(hi).date(), k
        )
