-- Each revision's published cells as the next revision reads them: per population (in the order the body
-- keeps them), the values published in its layout's order (null where hidden) and each hidden cell's
-- reason, as JSON text ([[values, reasons], ...]). The body holds the same cells as rows of (key, value,
-- reason): parsed in full, each of ~600 cells made a list, a key list and its strings, for each of a
-- national month's ~1,400 previous revisions read back to compose the next one (consumers.feed.builder.
-- read_kept). Written by the builder beside the body; null in revisions kept before (read from the body).
-- Text, not json: it is never queried, and json would have PostgreSQL parse it on every write.
ALTER TABLE feed_revisions ADD COLUMN cells text;
