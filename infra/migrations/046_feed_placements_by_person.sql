-- A placement is its own person's fact: kept by (placement id, person), like a retention checkpoint (045).
-- Kept by placement id alone with the first report winning, a Hello Work office that published, for its own
-- person X, a placement with person Y's placement id before Y's (another topic partition) made the feed
-- ignore Y's placement, and Y's checkpoints of it then counted for nothing. Now both are kept and each
-- counts for its own person, in either order (replay = incremental). Same index prefix: the readers by
-- placement id use it as before.
ALTER TABLE feed_placements DROP CONSTRAINT feed_placements_pkey,
  ADD PRIMARY KEY (placement_id, person_key);
