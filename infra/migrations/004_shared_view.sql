-- Consented shared view (issue 4). Clear personal data lives only in sv_persons, and only while the
-- person's consent is active; every other table holds pseudonymous keys, codes and sealed blocks.

-- Latest version of each consent record (newest version wins). No personal data.
CREATE TABLE sv_consents (
    consent_id  text        PRIMARY KEY,
    person_key  text        NOT NULL,
    version     integer     NOT NULL,
    withdrawn   boolean     NOT NULL,
    scopes      text[]      NOT NULL,
    recipients  jsonb       NOT NULL,
    valid_from  date        NOT NULL,
    valid_until date,
    signed_at   timestamptz NOT NULL,
    event_id    text        NOT NULL
);
CREATE INDEX sv_consents_person ON sv_consents (person_key);

-- Every non-consent event of a person as it travelled (personal block sealed): what the view is
-- rebuilt from when consent arrives again, and the store of held events while there is none.
-- applied_at: when the event first became visible in the view (NULL while held).
CREATE TABLE sv_events (
    event_id    text        PRIMARY KEY,
    person_key  text        NOT NULL,
    family      text        NOT NULL,
    event_time  timestamptz NOT NULL,
    data        jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz
);
CREATE INDEX sv_events_person ON sv_events (person_key);

-- The view: one row per person with active consent. List columns are jsonb arrays.
CREATE TABLE sv_persons (
    person_key            text        PRIMARY KEY,
    consent_id            text        NOT NULL,
    scopes                jsonb       NOT NULL,
    recipient_authorities jsonb       NOT NULL,
    recipient_offices     jsonb       NOT NULL,
    valid_from            date        NOT NULL,
    valid_until           date,
    authority             text,
    office                text,
    site                  text,
    registered_on         date,
    sex                   text,
    age_band              text,
    attributes            jsonb       NOT NULL,
    desired_occupation    text,
    team_support          boolean,
    referring_authorities jsonb       NOT NULL,
    referrals             jsonb       NOT NULL,
    placements            jsonb       NOT NULL,
    retention             jsonb       NOT NULL,
    -- personal fields: present only under a granted scope
    name                  text,
    name_kana             text,
    birth_date            date,
    phone                 text,
    email                 text,
    address               text,
    job_seeker_number     text,
    case_numbers          jsonb       NOT NULL,
    masked                boolean     NOT NULL DEFAULT false,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sv_persons_authority ON sv_persons (authority);
CREATE INDEX sv_persons_office ON sv_persons (office);

-- Withdrawal → removal from the view, with latency from acceptance (outbox) when known.
CREATE TABLE sv_withdrawals (
    event_id    text             PRIMARY KEY,
    person_key  text             NOT NULL,
    consent_id  text             NOT NULL,
    accepted_at timestamptz,
    removed_at  timestamptz      NOT NULL,
    latency_ms  double precision
);

-- Register of erasures: the person key is pseudonymous, and replays need to know whom to skip.
CREATE TABLE sv_erasures (
    person_key   text        PRIMARY KEY,
    erased_at    timestamptz NOT NULL DEFAULT now(),
    requested_by text        NOT NULL
);

-- Every read of personal data, granted or refused: who, which organisation, whom, which fields, why.
CREATE TABLE sv_access_log (
    id           bigserial   PRIMARY KEY,
    read_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    client_id    text        NOT NULL,
    client_name  text        NOT NULL,
    organisation text        NOT NULL,
    person_key   text        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('list', 'search', 'fetch')),
    purpose      text        NOT NULL,
    fields       text[]      NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('granted', 'refused')),
    reason       text        NOT NULL DEFAULT ''
);
CREATE INDEX sv_access_log_person ON sv_access_log (person_key, id);

-- End-to-end latency is measured from the outbox's accepted_at, joined by event id.
CREATE INDEX IF NOT EXISTS outbox_event_id ON outbox (event_id);

-- For the operators' console: counts only.
CREATE VIEW v_consent_stats AS
WITH effective AS (
    SELECT DISTINCT ON (person_key) person_key, withdrawn
    FROM sv_consents
    ORDER BY person_key, signed_at DESC, version DESC
)
SELECT
    (SELECT count(*) FROM sv_persons)::bigint AS active,
    (SELECT count(*) FROM effective WHERE withdrawn)::bigint AS withdrawn,
    (SELECT count(*) FROM sv_erasures)::bigint AS erased,
    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FROM sv_withdrawals)::double precision
        AS withdrawal_p50_ms,
    (SELECT max(latency_ms) FROM sv_withdrawals)::double precision AS withdrawal_max_ms;

CREATE VIEW v_shared_view_latency AS
SELECT
    percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::double precision AS p50_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::double precision AS p95_ms,
    count(*)::bigint AS samples
FROM (
    SELECT extract(epoch FROM (e.applied_at - o.accepted_at)) * 1000 AS ms
    FROM sv_events e
    JOIN outbox o ON o.event_id = e.event_id
    WHERE e.applied_at IS NOT NULL
) s;
