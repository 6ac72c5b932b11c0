-- The office that placed the person (the placement's ``office``, which its ce_source owns: P2), kept with the
-- placement: the individual list discloses a name and employer under an agreement between the authority
-- and that office (A2). Delivery read the office the sites registry lists for the site today: a site moved
-- to another office had its old office's placements disclosed under the new office's agreement, and
-- withheld under the one the placing office signed. NULL for placements kept before this migration:
-- delivery falls back to the registry's office for those (a replay of the topics fills them in).
ALTER TABLE feed_placements ADD COLUMN IF NOT EXISTS office text;
