-- feed_sites (036_feed_sites) made the three indexes on each fact table's authority-of-site
-- (left(site, 6), migration 027) useless to the builder: they served only the sites a round lists.
-- Dropped, they pay for feed_sites' triggers on the consumer's writes (measured on a batch of 400
-- registrations, 150 referrals and 120 placements through consumers/feed/store.write: PostgreSQL CPU
-- 10.0-11.1 ms with the indexes and no triggers, 12.9-13.9 ms with both, 10.6-11.7 ms with the triggers
-- alone). A fact removed or moved (never by the consumer: an operator's fix, a bench's clean-up) now
-- recounts its sites with one scan of each table instead of by index.
DROP INDEX IF EXISTS feed_registrations_site_authority;
DROP INDEX IF EXISTS feed_placements_site_authority;
DROP INDEX IF EXISTS feed_referrals_site_authority;

CREATE OR REPLACE FUNCTION feed_sites_recount(sites text[]) RETURNS void LANGUAGE sql AS $$
  WITH first_sent AS (
    SELECT t.site, min(x.arrived_at) AS arrived_at
      FROM (SELECT DISTINCT site FROM unnest(sites) AS u(site)) t
      LEFT JOIN (SELECT site, arrived_at FROM feed_registrations WHERE site = ANY(sites)
                 UNION ALL SELECT site, arrived_at FROM feed_placements WHERE site = ANY(sites)
                 UNION ALL SELECT site, arrived_at FROM feed_referrals WHERE site = ANY(sites)) x ON x.site = t.site
     GROUP BY t.site
  ), gone AS (
    DELETE FROM feed_sites f USING first_sent n WHERE f.site = n.site AND n.arrived_at IS NULL
  )
  INSERT INTO feed_sites AS f (site, arrived_at)
  SELECT site, arrived_at FROM first_sent WHERE arrived_at IS NOT NULL ORDER BY site
  ON CONFLICT (site) DO UPDATE SET arrived_at = EXCLUDED.arrived_at
$$;

-- As feed_sites_keep, from the rows inserted as they are (through arrays, a batch cost more).
CREATE OR REPLACE FUNCTION feed_sites_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO feed_sites AS f (site, arrived_at)
  SELECT n.site, n.arrived_at FROM (SELECT site, min(arrived_at) AS arrived_at FROM kept GROUP BY site) n
   WHERE NOT EXISTS (SELECT FROM feed_sites s WHERE s.site = n.site AND s.arrived_at <= n.arrived_at)
   ORDER BY n.site
  ON CONFLICT (site) DO UPDATE SET arrived_at = EXCLUDED.arrived_at WHERE EXCLUDED.arrived_at < f.arrived_at;
  RETURN NULL;
END $$;
