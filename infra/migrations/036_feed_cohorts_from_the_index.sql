-- The month's counting (consumers/feed/builder.py, _FACTS) reads the retention cohorts' placements
-- (three months of them, 390,000 in bench_feed's national month) twice: once for the sites' own
-- authorities, once against the referrals. Each read took them from the table, whose rows carry the
-- sealed personal block (~230 bytes a row); from this index they are read without the table (an
-- index-only scan, where vacuum has marked the pages visible): the statement's PostgreSQL CPU
-- 3.7-3.9 -> 2.8-3.0 s, measured serially on bench_feed's month. It replaces the plain index on
-- placed_on (same leading column: every reader of that index reads this one), so the feed consumer
-- still maintains one index per placement for the month, a wider one.
CREATE INDEX IF NOT EXISTS feed_placements_placed ON feed_placements (placed_on)
  INCLUDE (site_authority, site, arrived_at, person_key, placement_id);
DROP INDEX IF EXISTS feed_placements_month;
