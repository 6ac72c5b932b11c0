-- Monthly placement feed (consumers/feed): the consumer's own projection, site targets, revisions,
-- and the access log of feed downloads. Personal fields stay sealed (ciphertext) in the projection;
-- the revisions hold aggregates and placement references only.

-- Events already applied, by CloudEvents id (an outbox re-send must not count twice).
CREATE TABLE feed_seen_events (
    event_id text PRIMARY KEY
);

-- "arrived_at" is the event's CloudEvents time: when the source system sent it. Revisions filter on it,
-- so replaying the topics rebuilds the same revisions.
CREATE TABLE feed_registrations (
    event_id      text        PRIMARY KEY,
    person_key    text        NOT NULL,
    authority     text        NOT NULL,
    site          text        NOT NULL,
    registered_on date        NOT NULL,
    team_support  boolean     NOT NULL,
    personal      jsonb       NOT NULL,  -- sealed RegistrationPersonal
    arrived_at    timestamptz NOT NULL
);
CREATE INDEX feed_registrations_month ON feed_registrations (authority, registered_on);
CREATE INDEX feed_registrations_person ON feed_registrations (person_key);

CREATE TABLE feed_referrals (
    referral_id text        PRIMARY KEY,
    person_key  text        NOT NULL,
    authority   text        NOT NULL,
    site        text        NOT NULL,
    referred_on date        NOT NULL,
    arrived_at  timestamptz NOT NULL
);
CREATE INDEX feed_referrals_person ON feed_referrals (person_key);
CREATE INDEX feed_referrals_authority ON feed_referrals (authority);

CREATE TABLE feed_placements (
    placement_id    text        PRIMARY KEY,
    person_key      text        NOT NULL,
    site            text        NOT NULL,
    site_authority  text        NOT NULL,
    placed_on       date        NOT NULL,
    route           text        NOT NULL,
    occupation      text        NOT NULL,
    classification_version text NOT NULL,
    employment_type text        NOT NULL,
    sex             text        NOT NULL,
    age_band        text        NOT NULL,
    attributes      text[]      NOT NULL,
    personal        jsonb       NOT NULL,  -- sealed PlacementPersonal (employer)
    arrived_at      timestamptz NOT NULL
);
CREATE INDEX feed_placements_month ON feed_placements (placed_on);
CREATE INDEX feed_placements_person ON feed_placements (person_key);

CREATE TABLE feed_retention (
    placement_id      text        NOT NULL,
    checkpoint_months integer     NOT NULL,
    person_key        text        NOT NULL,
    status            text        NOT NULL,
    checked_on        date        NOT NULL,
    arrived_at        timestamptz NOT NULL,
    PRIMARY KEY (placement_id, checkpoint_months)
);

-- Latest version of each consent record (hub.domain.consent rule 1).
CREATE TABLE feed_consents (
    consent_id  text        PRIMARY KEY,
    person_key  text        NOT NULL,
    version     integer     NOT NULL,
    withdrawn   boolean     NOT NULL,
    scopes      text[]      NOT NULL,
    recipients  jsonb       NOT NULL,
    valid_from  date        NOT NULL,
    valid_until date,
    signed_at   timestamptz NOT NULL
);
CREATE INDEX feed_consents_person ON feed_consents (person_key);

-- Yearly targets per site and fiscal year (年度), set by `hub targets set`.
CREATE TABLE feed_targets (
    site            text        NOT NULL,
    fiscal_year     integer     NOT NULL,
    placements      integer     CHECK (placements >= 0),
    referral_share  numeric     CHECK (referral_share BETWEEN 0 AND 1),
    team_support    integer     CHECK (team_support >= 0),
    set_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, fiscal_year)
);

-- Every revision of every feed, kept. body: published aggregates (suppressed cells are null);
-- suppressed: the cells hidden (carried into the next revision); placement_ids: the feed's placements,
-- from which the consented individual list is built and decrypted at delivery.
CREATE TABLE feed_revisions (
    authority      text        NOT NULL,
    month          text        NOT NULL,
    revision       integer     NOT NULL,
    horizon        timestamptz NOT NULL,
    built_at       timestamptz NOT NULL DEFAULT now(),
    body           jsonb       NOT NULL,
    suppressed     jsonb       NOT NULL,
    placement_ids  text[]      NOT NULL,
    changes        jsonb       NOT NULL DEFAULT '[]',
    published_at   timestamptz,
    PRIMARY KEY (authority, month, revision)
);

-- Every read (or refused read) of a feed with its individual list: who, which organisation, whom,
-- what, why, when. person_keys are pseudonymous and let a person's access history be produced.
CREATE TABLE feed_access_log (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    client_id    text        NOT NULL,
    organisation text        NOT NULL,
    authority    text        NOT NULL,
    month        text        NOT NULL,
    revision     integer,
    fields       text[]      NOT NULL,
    purpose      text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('granted', 'denied')),
    person_keys  text[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX feed_access_log_person ON feed_access_log USING gin (person_keys);

-- Feeds to look at again: one row per applied event and feed (authority, month) it may change, written
-- by the consumer in the batch's transaction. The builder deletes the rows its snapshot saw once it has
-- rebuilt those feeds; rows committed meanwhile stay for the next round (ids, not upserts, so a
-- concurrent mark is never absorbed by one being deleted).
CREATE TABLE feed_dirty (
    id        bigserial   PRIMARY KEY,
    authority text        NOT NULL,
    month     text        NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feed_dirty_month ON feed_dirty (month, authority);

-- For the operators' console: latest revision per feed and how many events received since would
-- change it (they make the next revision at the next build round).
CREATE VIEW v_feed_status AS
SELECT r.authority,
       r.month,
       r.revision,
       r.built_at,
       (SELECT count(*) FROM feed_dirty d
         WHERE d.authority = r.authority AND d.month = r.month) AS late_events_waiting
FROM (SELECT DISTINCT ON (authority, month) authority, month, revision, built_at
        FROM feed_revisions ORDER BY authority, month, revision DESC) r;
