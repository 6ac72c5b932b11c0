-- A new job seeker counts as referred (送り込み) when the authority it registered with referred the person
-- by the end of the registration's month; at a horizon, when that referral was sent by the horizon
-- (consumers/feed/builder.py, _FACTS). The month's counting joined its registrations (480,000 in bench_feed's
-- national month) to every referral kept (grouped per person and authority): ~0.7 s of the count's
-- PostgreSQL CPU, in each count, growing with the referrals' history. Each registration now keeps when
-- the first such referral was sent (``referred_at``; NULL: none), so the count reads the registrations
-- alone and compares that time with its horizons, as it compared the referrals' times.
--
-- It depends on no horizon (only the facts kept), so it is always exactly what the referrals say. Kept by
-- triggers, whatever writes the facts (the feed consumer, a test, a bench), in the writer's transaction:
-- a registration written, or its person, authority or month changed, is looked up; a referral written,
-- changed or removed has its person's registrations with that authority recounted from the referrals
-- kept. Only rows actually written count (transition tables): a fact reported again under a kept key
-- (ON CONFLICT DO NOTHING) changes nothing. A registration is updated only where its time changes (a
-- person's first referral by that authority, or an earlier one sent late), so most referrals rewrite one
-- registration and most registrations none (the person's referral usually follows it). Erasure
-- (consumers/feed/erasure.py) updates only the sealed personal blocks: nothing to recount.
-- Writers in flight finish first, and none writes until this commits: a feed batch writing a referral
-- (and no registration) while the fill below runs would be seen by neither the fill nor the triggers
-- (tests/integration/test_feed_referred_migration_writer.py). Both tables at once, in the order the
-- feed's store writes them (registrations, then referrals), so no writer waits for this in a circle.
LOCK TABLE feed_registrations, feed_referrals IN SHARE ROW EXCLUSIVE MODE;
ALTER TABLE feed_registrations ADD COLUMN IF NOT EXISTS referred_at timestamptz;
-- Room on each page for a registration's referral time written later (most are: the referral follows
-- the registration), so the update stays on the page and adds no index entry (a heap-only update). With
-- full pages each such update wrote the row's index entries anew (three or four): store.write of a batch of 250
-- registrations and 100 referrals of kept registrations, PostgreSQL CPU +6.7 ms (14.8 -> 21.5 ms); with
-- this room +0.8 ms (17.5 -> 18.3 ms; load 10-15, 3 x 47 batches each). New pages only: the rows kept
-- so far stay as they are.
ALTER TABLE feed_registrations SET (fillfactor = 85);

-- When the first referral of ``person`` by ``authority`` made by the end of ``registered``'s month was sent.
CREATE OR REPLACE FUNCTION feed_referred_at(person text, by_authority text, registered date)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT min(r.arrived_at) FROM feed_referrals r
   WHERE r.person_key = person AND r.authority = by_authority
     AND r.referred_on < (date_trunc('month', registered::timestamp) + interval '1 month')::date
$$;

UPDATE feed_registrations g SET referred_at = f.referred_at
  FROM (SELECT g2.event_id, min(r.arrived_at) AS referred_at
          FROM feed_registrations g2
          JOIN feed_referrals r ON r.person_key = g2.person_key AND r.authority = g2.authority
               AND r.referred_on < (date_trunc('month', g2.registered_on::timestamp) + interval '1 month')::date
         GROUP BY g2.event_id) f
 WHERE g.event_id = f.event_id AND g.referred_at IS DISTINCT FROM f.referred_at;

-- The registrations of these people with these authorities (pairs), recounted from the referrals.
CREATE OR REPLACE FUNCTION feed_referred_recount(persons text[], authorities text[]) RETURNS void
LANGUAGE sql AS $$
  UPDATE feed_registrations g SET referred_at = n.referred_at
    FROM (SELECT g2.event_id, feed_referred_at(g2.person_key, g2.authority, g2.registered_on) AS referred_at
            FROM (SELECT DISTINCT person_key, authority FROM unnest(persons, authorities) AS u(person_key, authority)) w
            JOIN feed_registrations g2 ON g2.person_key = w.person_key AND g2.authority = w.authority) n
   WHERE g.event_id = n.event_id AND g.referred_at IS DISTINCT FROM n.referred_at
$$;

-- Only the new registrations of people with a referral kept (most have none yet), looked up at once.
CREATE OR REPLACE FUNCTION feed_referred_registrations_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE feed_registrations g SET referred_at = n.referred_at
    FROM (SELECT k.event_id, feed_referred_at(k.person_key, k.authority, k.registered_on) AS referred_at
            FROM kept k
           WHERE k.referred_at IS NOT NULL OR EXISTS (SELECT FROM feed_referrals r WHERE r.person_key = k.person_key)) n
   WHERE g.event_id = n.event_id AND g.referred_at IS DISTINCT FROM n.referred_at;
  RETURN NULL;
END $$;

-- Its person, authority or month changed (an operator's fix): looked up again.
CREATE OR REPLACE FUNCTION feed_referred_registration_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.referred_at := feed_referred_at(NEW.person_key, NEW.authority, NEW.registered_on);
  RETURN NEW;
END $$;

-- A referral written can only bring a registration's time earlier: the new ones' earliest, where it is
-- earlier than the time kept (or there is none), with no recount.
CREATE OR REPLACE FUNCTION feed_referred_referrals_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE feed_registrations g SET referred_at = n.referred_at
    FROM (SELECT g2.event_id, min(k.arrived_at) AS referred_at
            FROM kept k
            JOIN feed_registrations g2 ON g2.person_key = k.person_key AND g2.authority = k.authority
                 AND k.referred_on < (date_trunc('month', g2.registered_on::timestamp) + interval '1 month')::date
           GROUP BY g2.event_id) n
   WHERE g.event_id = n.event_id AND (g.referred_at IS NULL OR g.referred_at > n.referred_at);
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION feed_referred_referrals_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM feed_referred_recount(array_agg(person_key), array_agg(authority)) FROM gone;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION feed_referred_referrals_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM feed_referred_recount(array_agg(person_key), array_agg(authority))
     FROM (SELECT person_key, authority FROM kept UNION SELECT person_key, authority FROM gone) x;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION feed_referred_referrals_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE feed_registrations SET referred_at = NULL WHERE referred_at IS NOT NULL;
  RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER feed_registrations_referred_inserted AFTER INSERT ON feed_registrations
  REFERENCING NEW TABLE AS kept FOR EACH STATEMENT EXECUTE FUNCTION feed_referred_registrations_inserted();
CREATE OR REPLACE TRIGGER feed_registrations_referred_moved BEFORE UPDATE OF person_key, authority, registered_on
  ON feed_registrations FOR EACH ROW EXECUTE FUNCTION feed_referred_registration_moved();
CREATE OR REPLACE TRIGGER feed_referrals_referred_inserted AFTER INSERT ON feed_referrals
  REFERENCING NEW TABLE AS kept FOR EACH STATEMENT EXECUTE FUNCTION feed_referred_referrals_inserted();
CREATE OR REPLACE TRIGGER feed_referrals_referred_deleted AFTER DELETE ON feed_referrals
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION feed_referred_referrals_deleted();
CREATE OR REPLACE TRIGGER feed_referrals_referred_updated AFTER UPDATE ON feed_referrals
  REFERENCING OLD TABLE AS gone NEW TABLE AS kept FOR EACH STATEMENT EXECUTE FUNCTION feed_referred_referrals_updated();
CREATE OR REPLACE TRIGGER feed_referrals_referred_truncated AFTER TRUNCATE ON feed_referrals
  FOR EACH STATEMENT EXECUTE FUNCTION feed_referred_referrals_truncated();

-- feed_sites (036_feed_sites): an update that moves no site or time (erasure's, or the referral times
-- above) called feed_sites_keep and feed_sites_recount with nothing; a SQL function is planned at each
-- call, and planned for any sites the recount read every fact table: ~10 ms of PostgreSQL CPU for each
-- such statement. Now they are called only with sites to keep or recount; the same sites are kept.
CREATE OR REPLACE FUNCTION feed_sites_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  sites text[];
  times timestamptz[];
BEGIN
  SELECT array_agg(site), array_agg(arrived_at) INTO sites, times
    FROM (SELECT site, arrived_at FROM kept EXCEPT ALL SELECT site, arrived_at FROM gone) x;
  IF sites IS NOT NULL THEN
    PERFORM feed_sites_keep(sites, times);
  END IF;
  SELECT array_agg(site) INTO sites
    FROM (SELECT site, arrived_at FROM gone EXCEPT ALL SELECT site, arrived_at FROM kept) x;
  IF sites IS NOT NULL THEN
    PERFORM feed_sites_recount(sites);
  END IF;
  RETURN NULL;
END $$;
