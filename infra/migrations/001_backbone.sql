-- Backbone: consumer positions, transactional outbox, data keys, walking-skeleton event log.

CREATE TABLE consumer_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    last_event_time timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- Transactional outbox: an accepted event is a row here, committed with whatever else accepted it.
-- The relay publishes rows in id order (per person order follows) and stamps published_at.
CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    topic         text        NOT NULL,
    key           bytea       NOT NULL,
    headers       jsonb       NOT NULL,
    value         bytea       NOT NULL,
    event_id      text        NOT NULL,
    origin        text        NOT NULL DEFAULT 'unknown',
    accepted_at   timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- Per-person data keys, wrapped by the master key. Deleting a person's rows is erasure.
CREATE TABLE person_data_keys (
    person_key text        NOT NULL,
    version    integer     NOT NULL,
    wrapped    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (person_key, version)
);

-- Dead letters sent by any consumer, as a register for operators (the messages live in the topic).
CREATE TABLE dead_letters (
    id               bigserial   PRIMARY KEY,
    consumer         text        NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    reason           text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, source_topic, source_partition, source_offset)
);

-- Walking skeleton: every valid event as it arrived (personal fields stay sealed).
CREATE TABLE event_log (
    event_id    text        PRIMARY KEY,
    family      text        NOT NULL,
    type        text        NOT NULL,
    source      text        NOT NULL,
    subject     text        NOT NULL,
    event_time  timestamptz NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    data        jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_log_subject ON event_log (subject);
