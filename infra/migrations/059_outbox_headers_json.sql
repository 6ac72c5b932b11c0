-- The outbox keeps its rows' headers as json, not jsonb: the text as the writer spelled it.
--
-- jsonb put every writer's headers in its own key order (shorter names first), so the relay published
-- every record with its headers out of the order ``contracts.envelope.encode`` writes them, and each
-- consumer's quick read of a record in that order (``decode_canonical``) declined every record that
-- came through the outbox, which then took the whole decode (tests/integration/test_outbox_headers.py).
-- And parsing each row's headers into jsonb cost PostgreSQL ~1.1 µs of the outbox insert's ~12 µs per
-- row (alternated inserts of a 2,000-row file chunk, backend CPU time); json only checks the text is
-- JSON. Nothing queries them but by ->> (the console's trace context), which json has too.
--
-- The writers pass json from here on: a file chunk's staged text (accept_file_rows, from 048a), the
-- packed requests (accept_events_packed, from 050a, unpacking by json_array_elements, which keeps each
-- element's text) and accept_events (from 042; its headers parameter json[] instead of jsonb[], so the
-- old one is dropped). insert_events and the dead letters' redrive pass json parameters. A writer
-- passing jsonb still works (the assignment cast), in jsonb's order.
--
-- The column's type changes by a rewrite of the table under its ACCESS EXCLUSIVE lock (acceptance waits
-- for it); rows written before keep jsonb's spelling.
ALTER TABLE outbox ALTER COLUMN headers TYPE json USING headers::json;

DROP FUNCTION accept_events(
    int[], text[], text[], jsonb[], bytea[], text[], text[], bytea[], int[], text[], text[], bytea[], text[],
    int[], text[], text[], text[], date[], text[], int[], text[], timestamptz[], text[], int[], text[], text,
    text
);

CREATE FUNCTION accept_events(
    e_unit     int[],          -- per event: its unit
    e_subject  text[],         -- the person (the record's key)
    e_topic    text[],
    e_headers  json[],
    e_value    bytea[],
    e_id       text[],
    k_person   text[],         -- fresh data keys, not stored yet
    k_wrapped  bytea[],
    i_unit     int[],          -- per keyed unit: its idempotency key and request
    i_org      text[],
    i_key      text[],
    i_hash     bytea[],
    i_family   text[],
    h_unit     int[],          -- per registration or referral: the parties of its site hold the person
    h_person   text[],
    h_site     text[],
    h_event    text[],
    h_since    date[],
    h_office   text[],
    f_unit     int[],          -- per withdrawal
    f_person   text[],
    f_signed   timestamptz[],
    f_event    text[],
    c_unit     int[],          -- per unit with a client (not a trusted caller's): that client
    c_client   text[],
    p_origin   text,
    p_channel  text,
    OUT revoked    text[],     -- clients revoked, or no longer in the register: each of their units refused
    OUT revoked_at timestamptz[],  -- when (NULL: no longer in the register)
    OUT erased     text[],
    OUT conflicted text[],
    OUT won        int[]
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    refused int[];
    stored  text[];
    kept    int[];
    units   int;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7204002);  -- infra.db.AdvisoryLock.ACCEPTANCE_ERASURE
    -- Locked in client order (two calls sharing clients take their locks in one order); read after the
    -- lock, so a revocation that committed while this call waited for it is seen.
    PERFORM 1 FROM clients WHERE client_id = ANY(c_client) ORDER BY client_id FOR SHARE;
    SELECT coalesce(array_agg(g.client ORDER BY g.client), '{}'), coalesce(array_agg(c.revoked_at ORDER BY g.client), '{}')
    INTO revoked, revoked_at
    FROM (SELECT DISTINCT client FROM unnest(c_client) AS client) AS g
    LEFT JOIN clients c ON c.client_id = g.client
    WHERE c.client_id IS NULL OR c.revoked_at IS NOT NULL;
    erased := ARRAY(SELECT person_key FROM sv_erasures WHERE person_key = ANY(e_subject));
    refused := ARRAY(SELECT DISTINCT u FROM unnest(e_unit, e_subject) AS e(u, s) WHERE s = ANY(erased))
        || ARRAY(SELECT u FROM unnest(c_unit, c_client) AS c(u, c) WHERE c = ANY(revoked));

    -- Fresh keys only for people with an event in a unit not refused yet (no key for a revoked client's
    -- request, nor for the erased: every unit about one is refused).
    IF cardinality(refused) > 0 THEN
        SELECT array_agg(p), array_agg(w) INTO k_person, k_wrapped
        FROM unnest(k_person, k_wrapped) AS k(p, w)
        WHERE p IN (SELECT s FROM unnest(e_unit, e_subject) AS e(u, s) WHERE u <> ALL(refused));
        k_person := coalesce(k_person, '{}');
        k_wrapped := coalesce(k_wrapped, '{}');
    END IF;
    WITH ins AS (
        INSERT INTO person_data_keys (person_key, version, wrapped)
        SELECT p, 1, w FROM unnest(k_person, k_wrapped) AS k(p, w)
        ORDER BY p
        ON CONFLICT (person_key, version) DO NOTHING
        RETURNING person_key
    )
    SELECT ARRAY(SELECT person_key FROM ins) INTO stored;
    conflicted := ARRAY(SELECT p FROM unnest(k_person) AS p WHERE p <> ALL(stored));
    IF cardinality(conflicted) > 0 THEN
        refused := refused
            || ARRAY(SELECT DISTINCT u FROM unnest(e_unit, e_subject) AS e(u, s) WHERE s = ANY(conflicted));
    END IF;

    won := '{}';
    IF cardinality(i_unit) > 0 THEN
        DELETE FROM idempotency_keys
        WHERE (organisation, key) IN (
            SELECT d.organisation, d.key
            FROM idempotency_keys d JOIN unnest(i_org, i_key) AS t(o, k) ON d.organisation = t.o AND d.key = t.k
            WHERE d.expires_at <= now()
            ORDER BY d.organisation, d.key
            FOR UPDATE OF d
        );
        WITH candidates AS (
            SELECT DISTINCT ON (o, k) u, o, k, h, f
            FROM unnest(i_unit, i_org, i_key, i_hash, i_family) AS t(u, o, k, h, f)
            WHERE u <> ALL(refused)
            ORDER BY o, k, u
        ), ins AS (
            INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids)
            SELECT c.o, c.k, c.h, c.f,
                   ARRAY(SELECT x.i FROM unnest(e_unit, e_id) WITH ORDINALITY AS x(u, i, n)
                         WHERE x.u = c.u ORDER BY x.n)
            FROM candidates c
            ORDER BY c.o, c.k
            ON CONFLICT DO NOTHING
            RETURNING organisation, key
        )
        SELECT ARRAY(SELECT c.u FROM candidates c JOIN ins ON ins.organisation = c.o AND ins.key = c.k)
        INTO won;
    END IF;
    kept := ARRAY(
        SELECT DISTINCT u FROM unnest(e_unit) AS u
        WHERE u <> ALL(refused) AND (u <> ALL(i_unit) OR u = ANY(won))
    );
    -- A unit refused after the keys went in (a person of it got a key meanwhile, or its idempotency key
    -- went to another unit) takes back the keys stored for it alone: a key row for a person with no
    -- accepted data is a key for nobody. Deleted in the transaction that inserted them, they were never
    -- seen; a concurrent insert of the same person waiting on this one then stores its own.
    IF cardinality(stored) > 0 THEN
        SELECT count(DISTINCT u) INTO units FROM unnest(e_unit) AS u;
        IF cardinality(kept) < units THEN
            DELETE FROM person_data_keys
            WHERE person_key = ANY(stored) AND version = 1
              AND person_key NOT IN (SELECT s FROM unnest(e_unit, e_subject) AS e(u, s) WHERE u = ANY(kept));
        END IF;
    END IF;
    IF cardinality(kept) = 0 THEN
        RETURN;
    END IF;

    INSERT INTO outbox (topic, key, headers, value, event_id, origin)
    SELECT t, convert_to(s, 'UTF8'), h, v, i, p_origin
    FROM unnest(e_unit, e_subject, e_topic, e_headers, e_value, e_id) WITH ORDINALITY AS e(u, s, t, h, v, i, n)
    WHERE u = ANY(kept)
    ORDER BY n;

    IF cardinality(h_unit) > 0 THEN
        WITH u AS (
            SELECT p, s, i, d, o FROM unnest(h_unit, h_person, h_site, h_event, h_since, h_office)
                AS t(unit, p, s, i, d, o)
            WHERE unit = ANY(kept)
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

    IF cardinality(f_unit) > 0 THEN
        INSERT INTO withdrawal_fences (person_key, signed_at, event_id)
        SELECT DISTINCT ON (p) p, s, i
        FROM unnest(f_unit, f_person, f_signed, f_event) WITH ORDINALITY AS t(unit, p, s, i, n)
        WHERE unit = ANY(kept)
        ORDER BY p, s DESC, n
        ON CONFLICT (person_key) DO UPDATE SET signed_at = EXCLUDED.signed_at, event_id = EXCLUDED.event_id,
            accepted_at = now()
        WHERE EXCLUDED.signed_at > withdrawal_fences.signed_at;
    END IF;

    PERFORM pg_notify(p_channel, '');
END
$$;

CREATE OR REPLACE FUNCTION accept_events_packed(
    e_unit      text,
    e_subject   text,
    e_topic     text,
    e_headers   text,
    e_value     bytea,
    e_value_end text,
    e_id        text,
    k_person    text,
    k_wrapped   bytea,
    k_wrapped_end text,
    i_unit      int[],
    i_org       text[],
    i_key       text[],
    i_hash      bytea[],
    i_family    text[],
    h_unit      int[],
    h_person    text[],
    h_site      text[],
    h_event     text[],
    h_since     date[],
    h_office    text[],
    f_unit      int[],
    f_person    text[],
    f_signed    timestamptz[],
    f_event     text[],
    c_unit      text,
    c_client    text,
    p_origin    text,
    p_channel   text,
    OUT revoked    text[],
    OUT revoked_at timestamptz[],
    OUT erased     text[],
    OUT conflicted text[],
    OUT won        int[]
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT a.revoked, a.revoked_at, a.erased, a.conflicted, a.won
    INTO revoked, revoked_at, erased, conflicted, won
    FROM accept_events(
        string_to_array(e_unit, ',')::int[],
        ARRAY(SELECT x FROM json_array_elements_text(e_subject::json) WITH ORDINALITY AS t(x, n) ORDER BY n),
        ARRAY(SELECT x FROM json_array_elements_text(e_topic::json) WITH ORDINALITY AS t(x, n) ORDER BY n),
        ARRAY(SELECT x FROM json_array_elements(e_headers::json) WITH ORDINALITY AS t(x, n) ORDER BY n),
        ARRAY(SELECT substring(e_value FROM s + 1 FOR e - s) FROM (
            SELECT e, n, coalesce(lag(e) OVER (ORDER BY n), 0) AS s
            FROM unnest(string_to_array(e_value_end, ',')::int[]) WITH ORDINALITY AS t(e, n)) AS v ORDER BY n),
        ARRAY(SELECT x FROM json_array_elements_text(e_id::json) WITH ORDINALITY AS t(x, n) ORDER BY n),
        ARRAY(SELECT x FROM json_array_elements_text(k_person::json) WITH ORDINALITY AS t(x, n) ORDER BY n),
        ARRAY(SELECT substring(k_wrapped FROM s + 1 FOR e - s) FROM (
            SELECT e, n, coalesce(lag(e) OVER (ORDER BY n), 0) AS s
            FROM unnest(string_to_array(k_wrapped_end, ',')::int[]) WITH ORDINALITY AS t(e, n)) AS k ORDER BY n),
        i_unit, i_org, i_key, i_hash, i_family,
        h_unit, h_person, h_site, h_event, h_since, h_office,
        f_unit, f_person, f_signed, f_event,
        string_to_array(c_unit, ',')::int[],
        ARRAY(SELECT x FROM json_array_elements_text(c_client::json) WITH ORDINALITY AS t(x, n) ORDER BY n),
        p_origin, p_channel
    ) AS a;
END
$$;

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
        -- A plain insert of the keys not stored yet: ON CONFLICT's speculative insertion cost PostgreSQL
        -- about twice as much per row. A key stored meanwhile by a concurrent acceptance fails it (the
        -- unique index waits for that transaction): then, and only then, the keys go in ON CONFLICT.
        BEGIN
            WITH ins AS (
                INSERT INTO person_data_keys (person_key, version, wrapped)
                SELECT p, 1, w FROM unnest(k_person, k_wrapped) AS k(p, w)
                WHERE p <> ALL(erased)
                  AND NOT EXISTS (
                      SELECT 1 FROM person_data_keys d WHERE d.person_key = k.p AND d.version = 1 OFFSET 0
                  )
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

    -- As the keys: a plain insert of the rows whose key has no live record. A record found expired, or
    -- taken meanwhile by a concurrent import of the same rows, fails it: then expired records are
    -- deleted (in key order) and the rows go in ON CONFLICT.
    BEGIN
        WITH candidates AS (
            SELECT DISTINCT ON (row_key) n, row_key, event_id FROM file_rows_stage
            WHERE subject <> ALL(refused)
            ORDER BY row_key, n
        ), ins AS (
            INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids)
            SELECT p_org, c.row_key, decode(c.row_key, 'hex'), p_family, ARRAY[c.event_id] FROM candidates c
            WHERE NOT EXISTS (
                SELECT 1 FROM idempotency_keys i
                WHERE i.organisation = p_org AND i.key = c.row_key AND i.expires_at > now() OFFSET 0
            )
            ORDER BY c.row_key
            RETURNING key
        )
        SELECT CASE WHEN (SELECT count(*) FROM ins) = (SELECT count(*) FROM candidates)
            THEN ARRAY(SELECT c.n FROM candidates c ORDER BY c.n)  -- every candidate's key inserted
            ELSE ARRAY(SELECT c.n FROM candidates c JOIN ins ON ins.key = c.row_key ORDER BY c.n)
        END INTO accepted;
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
