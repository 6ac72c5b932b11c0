-- The outbox's event ids are looked up only by equality (a withdrawal's acceptance time for the shared
-- view, the console's latency joins): a hash index does that, and costs an insert less than the b-tree did,
-- which compared 32-character texts down the tree at a random place for every row. A file chunk's COPY +
-- accept_file_rows + commit: 29.4 -> 28.0 and 27.8 -> 25.6 µs of PostgreSQL CPU per row (two runs of 30
-- alternated 2,000-row chunks, backend CPU; the outbox insert alone 12.0 -> 10.7 µs). Built under the
-- lock CREATE INDEX takes (acceptance waits for it).
DROP INDEX outbox_event_id;
CREATE INDEX outbox_event_id ON outbox USING hash (event_id);
