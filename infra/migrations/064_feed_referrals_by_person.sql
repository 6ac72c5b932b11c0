-- A referral is its own person's and its own authority's fact: kept by (referral id, person, authority),
-- as a placement by (placement id, person) since 046. Kept by its id alone with the first report winning,
-- an authority that published, for its own person X, a referral with another authority's referral id for
-- person P, read before P's (another topic partition: a consumer catching up, the feed read again from the
-- topics), made the feed drop P's referral, and P's registration no longer counted as sent by that
-- authority (送り込み) in its feed. The id is no secret: the shared view shows a referral's id to every
-- recipient of the person's consent. Now both are kept and each counts only for its own person and
-- authority, in either order (tests/integration/test_feed_referral_squat.py). The same leading column, so
-- look-ups by referral id use the index as before.
ALTER TABLE feed_referrals DROP CONSTRAINT feed_referrals_pkey,
  ADD PRIMARY KEY (referral_id, person_key, authority);
