-- Client credentials (hub.auth): one organisation each, secret stored as sha256 only.
CREATE TABLE clients (
    client_id   text        PRIMARY KEY,
    name        text        NOT NULL,
    org_kind    text        NOT NULL CHECK (org_kind IN ('authority', 'office', 'hello_work_national', 'operator')),
    org_code    text        NOT NULL,
    roles       text[]      NOT NULL,
    secret_hash bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
