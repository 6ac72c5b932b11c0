-- accept_events_packed (050) as one PL/pgSQL statement: the same unpacking, written inline. As SQL
-- functions (not inlinable: their bodies hold subqueries), the wrapper and its three helpers were planned
-- afresh on every call, nine plans per accepting call (PostgreSQL's CPU per single-event request rose by
-- ~40 µs); a PL/pgSQL statement keeps its plan for the session. Same parameters, OUT columns and arrays.
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
        ARRAY(SELECT x FROM jsonb_array_elements(e_headers::jsonb) WITH ORDINALITY AS t(x, n) ORDER BY n),
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

-- The unpacking is written once, above: the helpers 050 used are gone.
DROP FUNCTION packed_ints(text);
DROP FUNCTION packed_texts(text);
DROP FUNCTION packed_slices(bytea, text);
