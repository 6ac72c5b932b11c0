-- A round rebuilding a few feeds reads their rows, not the month's (consumers/feed/builder.py, _FACTS
-- and _SITES): the placements at an authority's sites by month, and each table's rows by the authority
-- running their site (the code's first six characters), for the sites a feed lists.
CREATE INDEX IF NOT EXISTS feed_placements_authority ON feed_placements (site_authority, placed_on);
CREATE INDEX IF NOT EXISTS feed_registrations_site_authority ON feed_registrations (left(site, 6));
CREATE INDEX IF NOT EXISTS feed_placements_site_authority ON feed_placements (left(site, 6));
CREATE INDEX IF NOT EXISTS feed_referrals_site_authority ON feed_referrals (left(site, 6));
