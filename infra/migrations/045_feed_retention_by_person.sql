-- A retention checkpoint is its own person's fact: kept by (placement, checkpoint, person), and counted
-- only for a placement of the same person (consumers/feed/builder.py, delivery.py). Kept by placement and
-- checkpoint alone, a retention of person X naming person Y's placement id, consumed before Y's placement
-- (another topic, another partition), was kept under Y's placement id and counted as Y's checkpoint; Y's
-- own checkpoint then updated that row and left X on it. The feed consumer refuses such a retention when
-- it already keeps the placement (consumers/feed/projection.py); one read first is now kept but counts
-- for nothing, so the feed is the same in either order (replay = incremental). Same index prefix: the
-- readers by placement id (and checkpoint) use it as before.
ALTER TABLE feed_retention DROP CONSTRAINT feed_retention_pkey,
  ADD PRIMARY KEY (placement_id, checkpoint_months, person_key);
