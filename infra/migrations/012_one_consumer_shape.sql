-- Every consumer skips a repeated event the same way: its facts are keyed (event id or the contract's
-- id) and written with ON CONFLICT, so the feed's separate register of seen event ids goes.
DROP TABLE IF EXISTS feed_seen_events;

-- One consent store for every consumer (consumers/consent_store.py): the feed keeps, as the shared view
-- does, which event carried the kept version. Rows kept before this migration have none.
ALTER TABLE feed_consents ADD COLUMN IF NOT EXISTS event_id text;
