-- Adapters (issue 3): joint sites registry, idempotency keys, rejections for operators.

-- Joint sites (拠点): which authority runs a site and which Hello Work office serves it. Offices publish
-- consent and retention events about a site only if the registry says the site is theirs.
CREATE TABLE sites (
    site_id    text        PRIMARY KEY,
    authority  text        NOT NULL,
    office     text        NOT NULL,
    name       text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (left(site_id, 6) = authority)
);
CREATE INDEX sites_office ON sites (office);

-- Idempotency keys, written in the same transaction as the outbox rows they stand for. Scoped by
-- organisation (not client id) so a re-issued credential still recognises a retry or a re-imported file.
CREATE TABLE idempotency_keys (
    organisation text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    family       text        NOT NULL,
    event_ids    text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation, key)
);

-- Rejected input for operators: which adapter, family and rule — never the rejected values.
CREATE TABLE adapter_rejections (
    id      bigserial   PRIMARY KEY,
    adapter text        NOT NULL,
    family  text        NOT NULL,
    rule    text        NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adapter_rejections_at ON adapter_rejections (at);
