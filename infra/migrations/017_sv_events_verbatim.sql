-- The shared view keeps each event's JSON as it arrived, as the event log does (010): `json` stores the
-- text verbatim (validated), where `jsonb` parsed it into a binary form no query of this table reads
-- (nothing looks inside `data` in SQL: the projection reads it whole to rebuild a record), and printed it
-- back as text for every rebuild. A binary COPY writes the record's bytes straight in (the stage's column
-- is json too). Measured (EXPLAIN ANALYZE, 4,000 of bench_projection's events of ~430 bytes, a busy
-- machine): into the table 101-119 ms as jsonb, 45-55 ms as json; read back as text 27-53 ms, 1.5-3 ms.
ALTER TABLE sv_events ALTER COLUMN data TYPE json USING data::json;
