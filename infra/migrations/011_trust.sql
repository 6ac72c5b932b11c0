-- Trust boundary (issue 10): who holds a person, data-sharing agreements, expiring idempotency records,
-- revocable console sessions. Rule numbers (P1…P8) are those of domain/provenance.py.
-- Idempotent (IF NOT EXISTS, ON CONFLICT): it first shipped as 007_trust.sql, and a database that applied
-- it under that name applies it again under this one (schema_migrations records file names).

-- P3: the organisations that hold a person. Written only by acceptance (producers.holders), in the
-- transaction of the registration or referral that brings the person in at a joint site: the site's
-- authority and its office. No event a client sends can add a row for an organisation that is not a
-- party of the site the person was taken in at. Readers and consumers ask this table, never an event.
CREATE TABLE IF NOT EXISTS person_holders (
    person_key text        NOT NULL,
    org_kind   text        NOT NULL CHECK (org_kind IN ('authority', 'office')),
    org_code   text        NOT NULL,
    since      date        NOT NULL,   -- the first registration / referral date by which it holds them
    site_id    text        NOT NULL,
    event_id   text        NOT NULL,
    held_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (person_key, org_kind, org_code)
);

-- People accepted before this table existed: their registrations and referrals still in the outbox.
WITH intake AS (
    SELECT convert_from(o.value, 'UTF8')::jsonb AS d, o.event_id, o.topic
    FROM outbox o
    WHERE o.topic LIKE '%.registration.v1' OR o.topic LIKE '%.referral.v1'
), parties AS (
    SELECT d->>'person_key' AS person_key, 'authority' AS org_kind, left(d->>'site', 6) AS org_code,
           coalesce(d->>'registered_on', d->>'referred_on')::date AS since, d->>'site' AS site_id, event_id
    FROM intake
    UNION ALL
    SELECT d->>'person_key', 'office', coalesce(d->>'office', s.office),
           coalesce(d->>'registered_on', d->>'referred_on')::date, d->>'site', event_id
    FROM intake LEFT JOIN sites s ON s.site_id = intake.d->>'site'
    WHERE coalesce(d->>'office', s.office) IS NOT NULL
)
INSERT INTO person_holders (person_key, org_kind, org_code, since, site_id, event_id)
SELECT DISTINCT ON (person_key, org_kind, org_code) person_key, org_kind, org_code, since, site_id, event_id
FROM parties
ORDER BY person_key, org_kind, org_code, since
ON CONFLICT DO NOTHING;

-- P7: the withdrawal fence. Written with the withdrawal's outbox row (producers.holders.record_fences),
-- so from the withdrawal's 202 on every disclosure (shared-view reads, feed deliveries) refuses any
-- consent signed at or before it, however far behind the consumers are.
CREATE TABLE IF NOT EXISTS withdrawal_fences (
    person_key  text        PRIMARY KEY,
    signed_at   timestamptz NOT NULL,   -- the latest withdrawal's signed_at
    event_id    text        NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO withdrawal_fences (person_key, signed_at, event_id)
SELECT DISTINCT ON (d->>'person_key') d->>'person_key', (d->'captured'->>'signed_at')::timestamptz, event_id
FROM (SELECT convert_from(value, 'UTF8')::jsonb AS d, event_id FROM outbox WHERE topic LIKE '%.consent.v1') c
WHERE d->>'action' = 'withdrawn'
ORDER BY d->>'person_key', (d->'captured'->>'signed_at')::timestamptz DESC
ON CONFLICT DO NOTHING;

-- 個人情報保護協定: the data-sharing agreement between a prefectural labour bureau (for its Hello Work
-- offices) and the head of an authority, for some or all of that authority's joint sites, stating the
-- purposes. Personal data crosses sides only under consent AND an agreement in force (domain.agreements).
CREATE TABLE IF NOT EXISTS sharing_agreements (
    agreement_id text        PRIMARY KEY,
    authority    text        NOT NULL CHECK (authority ~ '^[0-9]{6}$'),
    offices      text[]      NOT NULL CHECK (cardinality(offices) > 0),
    sites        text[]      NOT NULL DEFAULT '{}',   -- empty: every site of the authority
    purposes     text[]      NOT NULL CHECK (cardinality(purposes) > 0),
    valid_from   date        NOT NULL,
    valid_until  date,
    title        text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    ended_at     timestamptz,
    ended_by     text,
    CHECK (valid_until IS NULL OR valid_until >= valid_from)
);
CREATE INDEX IF NOT EXISTS sharing_agreements_authority ON sharing_agreements (authority);

-- Idempotency records expire: the digest (now an HMAC under a server secret, never a bare hash of a
-- body that holds a name) is kept only as long as a client may retry.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz NOT NULL DEFAULT now() + interval '7 days';
CREATE INDEX IF NOT EXISTS idempotency_keys_expires ON idempotency_keys (expires_at);

-- Console sessions end at logout: a signed cookie stays valid until it expires, so logout records its id.
CREATE TABLE IF NOT EXISTS console_session_revocations (
    session_id text        PRIMARY KEY,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- An authority may opt out of receiving the feed's individual list (names and employers); aggregates
-- still flow. `hub feed individual-list off|on --authority A`.
CREATE TABLE IF NOT EXISTS feed_individual_list_opt_outs (
    authority  text        PRIMARY KEY,
    opted_out_at timestamptz NOT NULL DEFAULT now(),
    by_whom    text        NOT NULL
);
