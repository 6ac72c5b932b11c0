-- accept_events (latest: 042, unchanged here) called with its columns of one value per event, or per
-- data key or per client, packed into one parameter each. asyncpg checks every element of an array
-- parameter against three abstract base classes (Iterable, Sized, Mapping: Python-level calls) and
-- encodes each jsonb element with a Python call: about 30 such calls per single-event request, for the
-- ~10 elements each event puts into accept_events' arrays. Packed, a column is one value whatever the
-- group's size: integers comma-separated, texts as a JSON array (any text, escaped by JSON), the
-- headers as one JSON array of objects, byte strings laid end to end with their end offsets. The arrays
-- unpacked here are the ones accept_events takes, in the same order; the rarer columns (idempotency keys,
-- holders, fences) stay arrays.

-- A comma-separated list of integers ('' for none) as int[].
CREATE FUNCTION packed_ints(p text) RETURNS int[] LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT string_to_array(p, ',')::int[]
$$;

-- A JSON array of texts as text[], in its order.
CREATE FUNCTION packed_texts(p text) RETURNS text[] LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT ARRAY(SELECT x FROM json_array_elements_text(p::json) WITH ORDINALITY AS t(x, n) ORDER BY n)
$$;

-- Byte strings laid end to end in p, each ending at the offset of its place in ends (comma-separated),
-- as bytea[], in their order.
CREATE FUNCTION packed_slices(p bytea, ends text) RETURNS bytea[] LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT ARRAY(
        SELECT substring(p FROM s + 1 FOR e - s)
        FROM (
            SELECT e, n, coalesce(lag(e) OVER (ORDER BY n), 0) AS s
            FROM unnest(string_to_array(ends, ',')::int[]) WITH ORDINALITY AS t(e, n)
        ) AS x
        ORDER BY n
    )
$$;

CREATE FUNCTION accept_events_packed(
    e_unit      text,          -- per event: its unit (comma-separated)
    e_subject   text,          -- JSON array of texts
    e_topic     text,          -- JSON array of texts
    e_headers   text,          -- JSON array of objects
    e_value     bytea,         -- the values end to end ...
    e_value_end text,          -- ... each ending at this offset (comma-separated)
    e_id        text,          -- JSON array of texts
    k_person    text,          -- fresh data keys: JSON array of texts
    k_wrapped   bytea,         -- the wrapped keys end to end ...
    k_wrapped_end text,        -- ... each ending at this offset
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
    c_unit      text,          -- per unit with a client: comma-separated
    c_client    text,          -- JSON array of texts
    p_origin    text,
    p_channel   text,
    OUT revoked    text[],
    OUT revoked_at timestamptz[],
    OUT erased     text[],
    OUT conflicted text[],
    OUT won        int[]
) LANGUAGE sql VOLATILE AS $$
    SELECT * FROM accept_events(
        packed_ints(e_unit), packed_texts(e_subject), packed_texts(e_topic),
        ARRAY(SELECT h FROM jsonb_array_elements(e_headers::jsonb) WITH ORDINALITY AS t(h, n) ORDER BY n),
        packed_slices(e_value, e_value_end), packed_texts(e_id),
        packed_texts(k_person), packed_slices(k_wrapped, k_wrapped_end),
        i_unit, i_org, i_key, i_hash, i_family,
        h_unit, h_person, h_site, h_event, h_since, h_office,
        f_unit, f_person, f_signed, f_event,
        packed_ints(c_unit), packed_texts(c_client),
        p_origin, p_channel
    )
$$;
