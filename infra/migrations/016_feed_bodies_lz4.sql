-- A feed revision's body is ~37 KB of JSON, kept compressed out of line (TOAST). PostgreSQL's default
-- compression (pglz) took about half of the database's CPU in keeping a national month's 3,100 revisions
-- (measured: 5.7 s of PostgreSQL CPU to insert the bodies with pglz, 3.1 s with lz4; reading them back
-- for publishing and comparison is faster too). Only values written from now on are compressed so;
-- older ones stay readable as they are. A server built without lz4 keeps pglz.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
        ALTER TABLE feed_revisions
            ALTER COLUMN body SET COMPRESSION lz4,
            ALTER COLUMN suppressed SET COMPRESSION lz4,
            ALTER COLUMN placement_ids SET COMPRESSION lz4,
            ALTER COLUMN changes SET COMPRESSION lz4,
            ALTER COLUMN tallies SET COMPRESSION lz4;
    END IF;
END
$$;
