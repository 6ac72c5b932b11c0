-- The SHA-256 of a dead letter's original record (key, the headers a redrive keeps, value:
-- domain.monitoring.record_digest), kept by the consumer in the register and by the console for each record
-- it indexes in the dead-letter topic. A writer of that topic can put a record there claiming a real
-- letter's source position and consumer; the console took the earliest such record, so a redrive could
-- queue the planted bytes for the event topic. Now it shows and redrives only a record whose digest equals
-- the register row's. NULL for rows kept before this migration: the console refuses to redrive those (the
-- topic cannot prove which record is the original); an operator discards them.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS digest bytea;
ALTER TABLE dead_letter_locations ADD COLUMN IF NOT EXISTS digest bytea;
