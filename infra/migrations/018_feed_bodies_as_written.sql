-- A feed revision's body, hidden cells and change summary are kept as the JSON text the builder wrote
-- (`json`: stored verbatim, only validated), not parsed into `jsonb`: nothing looks inside them in SQL,
-- every reader takes them whole (the publisher as text, the portal, deliveries and the next revision as
-- objects), and the jsonb parse on the way in and its printing on the way out were a third of the
-- database's CPU in building a national month (measured on bench_feed: ~2.6 s to parse the 3,100 bodies
-- at the INSERT, ~1.6 s to print them for publishing; the json validation is about a tenth of the parse).
-- The builder writes objects' keys in the order jsonb keeps them (`consumers.feed.builder.as_kept`), so
-- every reader sees what it saw before, byte for byte where it re-encodes (the published records).
--
-- Rewrites feed_revisions (each kept value printed once as text): on a database with years of revisions,
-- plan it like any table rewrite (it holds an exclusive lock on feed_revisions while it runs; ~3,100
-- revisions a month, ~40 KB each).
ALTER TABLE feed_revisions
    ALTER COLUMN body TYPE json USING body::json,
    ALTER COLUMN suppressed TYPE json USING suppressed::json,
    ALTER COLUMN changes DROP DEFAULT,
    ALTER COLUMN changes TYPE json USING changes::json;
ALTER TABLE feed_revisions ALTER COLUMN changes SET DEFAULT '[]';
-- The compression set by 016 stays with the columns' new type where the server has lz4.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
        ALTER TABLE feed_revisions
            ALTER COLUMN body SET COMPRESSION lz4,
            ALTER COLUMN suppressed SET COMPRESSION lz4,
            ALTER COLUMN changes SET COMPRESSION lz4;
    END IF;
END
$$;
