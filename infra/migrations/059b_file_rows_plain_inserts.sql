-- A file chunk's data keys and row keys go in by plain inserts, with no look-up of each first (from 059's
-- accept_file_rows). The keys given are of people who had none when the chunk was read and a file's rows
-- are mostly new, so the look-ups (a subplan and an index descent per key and per row) found nothing in
-- the common chunk: COPY + accept_file_rows + commit 26.5 -> 22.6 µs of PostgreSQL CPU per row (30
-- alternated 2,000-row chunks of new rows, backend CPU). A key or row key stored already fails the
-- insert, as one stored by a concurrent acceptance did before: the chunk then takes the other way it
-- had (ON CONFLICT, expired records deleted first), with the same outcome. The price is paid by a chunk
-- that meets one: a file sent again, 6.4 -> 8.4 µs per row (every row a duplicate: the failed insert
-- ends at its first).
CREATE OR REPLACE FUNCTION accept_file_rows(
    p_client   text,
    p_org      text,
    p_family   text,
    k_person   text[],
    k_wrapped  bytea[],
    h_n        int[],
    h_person   text[],
    h_site     text[],
    h_event    text[],
    h_since    date[],
    h_office   text[],
    f_n        int[],
    f_person   text[],
    f_signed   timestamptz[],
    f_event    text[],
    p_origin   text,
    p_channel  text,
    OUT known      boolean,
    OUT revoked_at timestamptz,
    OUT erased     text[],
    OUT conflicted text[],
    OUT accepted   int[]
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    refused text[];
    stored  text[];
    expired text[];
    staged  int;
BEGIN
    erased := '{}';
    conflicted := '{}';
    accepted := '{}';
    PERFORM pg_advisory_xact_lock_shared(7204002);  -- infra.db.AdvisoryLock.ACCEPTANCE_ERASURE
    SELECT true, c.revoked_at INTO known, revoked_at FROM clients c WHERE c.client_id = p_client FOR SHARE OF c;
    known := coalesce(known, false);
    IF NOT known OR revoked_at IS NOT NULL THEN
        RETURN;
    END IF;
    staged := (SELECT count(*) FROM file_rows_stage);
    erased := ARRAY(
        SELECT DISTINCT s.subject FROM file_rows_stage s
        WHERE EXISTS (SELECT 1 FROM sv_erasures e WHERE e.person_key = s.subject OFFSET 0)
    );

    IF cardinality(k_person) > 0 THEN
        -- A plain insert: the keys given are of people who had none when the chunk was read. A key
        -- stored since (by a concurrent acceptance, or by the file's previous chunk for a person of both)
        -- fails it (the unique index waits for that transaction): then, and only then, the keys go in ON
        -- CONFLICT, whose speculative insertion cost PostgreSQL about twice as much per row.
        BEGIN
            WITH ins AS (
                INSERT INTO person_data_keys (person_key, version, wrapped)
                SELECT p, 1, w FROM unnest(k_person, k_wrapped) AS k(p, w)
                WHERE p <> ALL(erased)
                ORDER BY p
                RETURNING person_key
            )
            SELECT ARRAY(SELECT person_key FROM ins) INTO stored;
        EXCEPTION WHEN unique_violation THEN
            WITH ins AS (
                INSERT INTO person_data_keys (person_key, version, wrapped)
                SELECT p, 1, w FROM unnest(k_person, k_wrapped) AS k(p, w)
                WHERE p <> ALL(erased)
                ORDER BY p
                ON CONFLICT (person_key, version) DO NOTHING
                RETURNING person_key
            )
            SELECT ARRAY(SELECT person_key FROM ins) INTO stored;
        END;
        -- A key not inserted is stored already: the one given (sealed again after a conflict, or stored
        -- by the previous chunk of the file), or another one.
        IF cardinality(stored) < cardinality(k_person) THEN
            conflicted := ARRAY(
                SELECT k.p FROM unnest(k_person, k_wrapped) AS k(p, w)
                WHERE k.p NOT IN (SELECT unnest(stored)) AND k.p <> ALL(erased)
                  AND EXISTS (
                      SELECT 1 FROM person_data_keys d
                      WHERE d.person_key = k.p AND d.version = 1 AND d.wrapped <> k.w OFFSET 0
                  )
            );
        END IF;
    END IF;
    refused := erased || conflicted;

    -- As the keys: a plain insert of every candidate row's key. A record of one (a row imported before,
    -- a record expired, one taken meanwhile by a concurrent import of the same rows) fails it: then
    -- expired records are deleted (in key order) and the rows go in ON CONFLICT.
    BEGIN
        WITH candidates AS (
            SELECT DISTINCT ON (row_key) n, row_key, event_id FROM file_rows_stage
            WHERE subject <> ALL(refused)
            ORDER BY row_key, n
        ), ins AS (
            INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids)
            SELECT p_org, c.row_key, decode(c.row_key, 'hex'), p_family, ARRAY[c.event_id] FROM candidates c
            ORDER BY c.row_key
        )
        SELECT ARRAY(SELECT c.n FROM candidates c ORDER BY c.n) INTO accepted;  -- every candidate's key
    EXCEPTION WHEN unique_violation THEN
        expired := ARRAY(
            SELECT DISTINCT s.row_key FROM file_rows_stage s
            WHERE EXISTS (
                SELECT 1 FROM idempotency_keys i
                WHERE i.organisation = p_org AND i.key = s.row_key AND i.expires_at <= now() OFFSET 0
            )
        );
        DELETE FROM idempotency_keys
        WHERE (organisation, key) IN (
            SELECT d.organisation, d.key FROM idempotency_keys d
            WHERE d.organisation = p_org AND d.key = ANY(expired) AND d.expires_at <= now()
            ORDER BY d.organisation, d.key
            FOR UPDATE OF d
        );
        WITH candidates AS (
            SELECT DISTINCT ON (row_key) n, row_key, event_id FROM file_rows_stage
            WHERE subject <> ALL(refused)
            ORDER BY row_key, n
        ), ins AS (
            INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids)
            SELECT p_org, row_key, decode(row_key, 'hex'), p_family, ARRAY[event_id] FROM candidates
            ORDER BY row_key
            ON CONFLICT DO NOTHING
            RETURNING key
        )
        SELECT ARRAY(SELECT c.n FROM candidates c JOIN ins ON ins.key = c.row_key ORDER BY c.n) INTO accepted;
    END;
    -- Keys inserted above for people none of whose rows were accepted: taken back. Only when a row of
    -- the chunk was not accepted (its row key taken, or its person refused above).
    IF cardinality(stored) > 0 AND cardinality(accepted) < staged THEN
        DELETE FROM person_data_keys
        WHERE version = 1 AND person_key IN (
            SELECT unnest(stored)
            EXCEPT
            SELECT s.subject FROM file_rows_stage s JOIN unnest(accepted) AS a(n) ON a.n = s.n
        );
    END IF;
    IF cardinality(accepted) = 0 THEN
        RETURN;
    END IF;

    IF cardinality(accepted) = staged THEN  -- every staged row accepted (each n once)
        INSERT INTO outbox (topic, key, headers, value, event_id, origin)
        SELECT s.topic, convert_to(s.subject, 'UTF8'), s.headers::json, s.value, s.event_id, p_origin
        FROM file_rows_stage s
        ORDER BY s.n;
    ELSE
        INSERT INTO outbox (topic, key, headers, value, event_id, origin)
        SELECT s.topic, convert_to(s.subject, 'UTF8'), s.headers::json, s.value, s.event_id, p_origin
        FROM file_rows_stage s JOIN unnest(accepted) AS a(n) ON a.n = s.n
        ORDER BY s.n;
    END IF;

    IF cardinality(h_n) > 0 THEN
        WITH u AS (
            SELECT p, s, i, d, o FROM unnest(h_n, h_person, h_site, h_event, h_since, h_office)
                AS t(n, p, s, i, d, o)
            WHERE n IN (SELECT unnest(accepted))  -- hashed: not a scan of accepted per row
        ), parties AS (
            SELECT u.p, 'authority' AS kind, left(u.s, 6) AS code, u.d, u.s, u.i FROM u
            UNION ALL
            SELECT u.p, 'office', coalesce(u.o, st.office), u.d, u.s, u.i
            FROM u LEFT JOIN sites st ON st.site_id = u.s
            WHERE coalesce(u.o, st.office) IS NOT NULL
        )
        INSERT INTO person_holders (person_key, org_kind, org_code, since, site_id, event_id)
        SELECT p, kind, code, min(d), min(s), min(i) FROM parties
        GROUP BY p, kind, code ORDER BY p, kind, code
        ON CONFLICT (person_key, org_kind, org_code)
        DO UPDATE SET since = least(person_holders.since, EXCLUDED.since);
    END IF;

    IF cardinality(f_n) > 0 THEN
        INSERT INTO withdrawal_fences (person_key, signed_at, event_id)
        SELECT DISTINCT ON (p) p, s, i
        FROM unnest(f_n, f_person, f_signed, f_event) AS t(n, p, s, i)
        WHERE n IN (SELECT unnest(accepted))  -- hashed: not a scan of accepted per row
        ORDER BY p, s DESC, n
        ON CONFLICT (person_key) DO UPDATE SET signed_at = EXCLUDED.signed_at, event_id = EXCLUDED.event_id,
            accepted_at = now()
        WHERE EXCLUDED.signed_at > withdrawal_fences.signed_at;
    END IF;

    PERFORM pg_notify(p_channel, '');
END
$$;
