-- A held event's time of becoming visible is derived, not written into its row (issue 14). A person new to
-- the view used to UPDATE every one of their held events (applied_at = the instant): in a replay, where a
-- topic's batches come one at a time and most events arrive before their person's consent, that rewrote
-- two thirds of sv_events (each row a new version, two index entries), 8.2 us of PostgreSQL per event.
-- Now each reveal is one row here, and a held event (applied_at NULL) became visible at its person's first
-- reveal after it was stored.
--
-- "After" is read on PostgreSQL's own clock on both sides: received_at is the row's clock_timestamp() as
-- the COPY writes it (it was the transaction's start, which may precede an earlier transaction's reveal
-- when this one waited for the person's lock), revealed_at the reveal's. A person's events and reveals are
-- only written under the person's lock (consumers/shared_view/store.begin), one statement after another,
-- so their clock readings are in the order they were written.
CREATE TABLE sv_reveals (
    person_key  text        NOT NULL,
    revealed_at timestamptz NOT NULL
);
CREATE INDEX sv_reveals_person ON sv_reveals (person_key, revealed_at);

ALTER TABLE sv_events ALTER COLUMN received_at SET DEFAULT clock_timestamp();

-- Every stored event with the instant it became visible in the view (NULL while held): the one place that
-- derivation is written (the latency view, the console's slowest events, the tests).
CREATE VIEW sv_events_applied AS
SELECT
    e.event_id,
    e.person_key,
    e.family,
    coalesce(
        e.applied_at,
        (SELECT min(r.revealed_at) FROM sv_reveals r
         WHERE r.person_key = e.person_key AND r.revealed_at > e.received_at)
    ) AS applied_at
FROM sv_events e;

CREATE OR REPLACE VIEW v_shared_view_latency AS
SELECT
    percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::double precision AS p50_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::double precision AS p95_ms,
    count(*)::bigint AS samples
FROM (
    SELECT extract(epoch FROM (e.applied_at - o.accepted_at)) * 1000 AS ms
    FROM sv_events_applied e
    JOIN outbox o ON o.event_id = e.event_id
    WHERE e.applied_at IS NOT NULL
) s;
