-- Each site with when its first fact (registration, placement, referral) was sent: a feed lists its
-- authority's sites seen by the horizon (consumers/feed/builder.py, _SITES). Read from the facts, that
-- list grouped every registration, placement and referral ever kept (1.2M rows for bench_feed's national
-- month, ~0.4 s of PostgreSQL CPU in each count); read from here, a few thousand rows.
--
-- Kept by triggers on the three tables, whatever writes them (the feed consumer, a test, a bench), in
-- the writer's transaction: a fact kept lowers its site's time where it was sent earlier (a late event);
-- a fact removed, or moved to another site or time, has its site recounted from what the tables hold.
-- Only rows actually written count (a statement's transition tables): a fact reported again under a
-- kept key (ON CONFLICT DO NOTHING) changes nothing, as it changes no fact. Erasure keeps the
-- statistical facts (consumers/feed/erasure.py): its updates move no site or time, so recount nothing.
-- A row whose site already has an earlier (or equal) time is not written, so batches seldom take a
-- lock here: only a new site, or one sent earlier than any fact before it.
CREATE TABLE IF NOT EXISTS feed_sites (
  site text PRIMARY KEY,
  arrived_at timestamptz NOT NULL
);

INSERT INTO feed_sites (site, arrived_at)
SELECT site, min(arrived_at) FROM (
  SELECT site, arrived_at FROM feed_registrations
  UNION ALL SELECT site, arrived_at FROM feed_placements
  UNION ALL SELECT site, arrived_at FROM feed_referrals
) x GROUP BY site
ON CONFLICT (site) DO UPDATE SET arrived_at = EXCLUDED.arrived_at;

-- Sites and times written: each site's earliest, where it is earlier than the one kept (or new).
CREATE OR REPLACE FUNCTION feed_sites_keep(sites text[], times timestamptz[]) RETURNS void LANGUAGE sql AS $$
  INSERT INTO feed_sites AS f (site, arrived_at)
  SELECT n.site, n.arrived_at
    FROM (SELECT site, min(arrived_at) AS arrived_at FROM unnest(sites, times) AS w(site, arrived_at)
           GROUP BY site) n
   WHERE NOT EXISTS (SELECT FROM feed_sites s WHERE s.site = n.site AND s.arrived_at <= n.arrived_at)
   ORDER BY n.site
  ON CONFLICT (site) DO UPDATE SET arrived_at = EXCLUDED.arrived_at WHERE EXCLUDED.arrived_at < f.arrived_at
$$;

-- Sites some fact left: recounted from the three tables (gone where nothing is left).
CREATE OR REPLACE FUNCTION feed_sites_recount(sites text[]) RETURNS void LANGUAGE sql AS $$
  WITH first_sent AS (
    SELECT t.site, (SELECT min(m) FROM (
        SELECT min(arrived_at) FROM feed_registrations r WHERE left(r.site, 6) = left(t.site, 6) AND r.site = t.site
        UNION ALL SELECT min(arrived_at) FROM feed_placements p
                   WHERE left(p.site, 6) = left(t.site, 6) AND p.site = t.site
        UNION ALL SELECT min(arrived_at) FROM feed_referrals f
                   WHERE left(f.site, 6) = left(t.site, 6) AND f.site = t.site) x(m)) AS arrived_at
      FROM (SELECT DISTINCT site FROM unnest(sites) AS u(site)) t
  ), gone AS (
    DELETE FROM feed_sites f USING first_sent n WHERE f.site = n.site AND n.arrived_at IS NULL
  )
  INSERT INTO feed_sites AS f (site, arrived_at)
  SELECT site, arrived_at FROM first_sent WHERE arrived_at IS NOT NULL ORDER BY site
  ON CONFLICT (site) DO UPDATE SET arrived_at = EXCLUDED.arrived_at
$$;

CREATE OR REPLACE FUNCTION feed_sites_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM feed_sites_keep(array_agg(site), array_agg(arrived_at)) FROM kept;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION feed_sites_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM feed_sites_recount(array_agg(site)) FROM gone;
  RETURN NULL;
END $$;

-- An update that moves no site or time (erasure's) finds nothing to keep or recount.
CREATE OR REPLACE FUNCTION feed_sites_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM feed_sites_keep(array_agg(site), array_agg(arrived_at))
     FROM (SELECT site, arrived_at FROM kept EXCEPT ALL SELECT site, arrived_at FROM gone) x;
  PERFORM feed_sites_recount(array_agg(site))
     FROM (SELECT site, arrived_at FROM gone EXCEPT ALL SELECT site, arrived_at FROM kept) x;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION feed_sites_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM feed_sites;
  INSERT INTO feed_sites (site, arrived_at)
  SELECT site, min(arrived_at) FROM (
    SELECT site, arrived_at FROM feed_registrations
    UNION ALL SELECT site, arrived_at FROM feed_placements
    UNION ALL SELECT site, arrived_at FROM feed_referrals
  ) x GROUP BY site;
  RETURN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['feed_registrations', 'feed_placements', 'feed_referrals'] LOOP
    EXECUTE format('CREATE OR REPLACE TRIGGER %1$s_sites_inserted AFTER INSERT ON %1$s REFERENCING NEW TABLE AS kept '
                   'FOR EACH STATEMENT EXECUTE FUNCTION feed_sites_inserted()', t);
    EXECUTE format('CREATE OR REPLACE TRIGGER %1$s_sites_deleted AFTER DELETE ON %1$s REFERENCING OLD TABLE AS gone '
                   'FOR EACH STATEMENT EXECUTE FUNCTION feed_sites_deleted()', t);
    EXECUTE format('CREATE OR REPLACE TRIGGER %1$s_sites_updated AFTER UPDATE ON %1$s '
                   'REFERENCING OLD TABLE AS gone NEW TABLE AS kept FOR EACH STATEMENT EXECUTE FUNCTION feed_sites_updated()', t);
    EXECUTE format('CREATE OR REPLACE TRIGGER %1$s_sites_truncated AFTER TRUNCATE ON %1$s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION feed_sites_truncated()', t);
  END LOOP;
END $$;
