-- accept_events (migration 035) as it was, but a refused unit leaves no data key behind. 026 and 035
-- stored every fresh key not of an erased person, whatever became of the units it was made for: a
-- request refused for its revoked or removed client, for its idempotency key (taken by another unit of
-- the call) or because another of its people got a key meanwhile still left its people's fresh keys
-- stored — a key for a person with no accepted data, and a record that the hub heard of them. Now the
-- keys of units refused before the insert (revoked clients, the erased) are not inserted, and those of
-- units refused after it are deleted again before the call commits, unless a kept unit has the person.
-- Same parameters and OUT columns as 035.
CREATE OR REPLACE FUNCTION accept_events(
    e_unit     int[],          -- per event: its unit
    e_subject  text[],         -- the person (the record's key)
    e_topic    text[],
    e_headers  jsonb[],
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
