-- What the relay has still to publish is a mark in outbox_pending (the row's id), not a column of the row.
-- The relay stamped published_at on each row it published: an UPDATE that was never HOT (published_at was
-- in the predicate of the pending index, and the pages were full), so every event was written a second
-- time, whole, with an entry in each of the outbox's indexes, and left a dead version for vacuum. Now an
-- outbox row is written once; publishing deletes its mark (a row of one bigint), in the relay's
-- transaction, after Kafka acknowledged the batch.
--
-- Every writer of the outbox (accept_events, accept_file_rows, insert_events) gets its marks from this
-- trigger, one statement per INSERT: no writer can add a row the relay would not see.

-- First the outbox is locked against writers (SHARE ROW EXCLUSIVE, the lock CREATE TRIGGER takes anyway):
-- an acceptance that committed between the fill of the marks below and the trigger would have an outbox
-- row with no mark, never published (tests/integration/test_outbox_migration_writer.py).
LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE;

-- The rows pending now are found by the old partial index (renamed: the table takes its name), then it goes.
ALTER INDEX outbox_pending RENAME TO outbox_unpublished;

CREATE TABLE outbox_pending (
    id bigint PRIMARY KEY  -- outbox.id of a row not yet acknowledged by Kafka
);

INSERT INTO outbox_pending (id) SELECT id FROM outbox WHERE published_at IS NULL;

DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;

CREATE FUNCTION outbox_mark_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_pending (id) SELECT id FROM added;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_pending_marks AFTER INSERT ON outbox REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_mark_pending();
