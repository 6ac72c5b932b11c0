-- Operator console: offset samples for rates and charts, where dead letters sit in their topic, what
-- operators did about them, and every console action with who did it. Nothing here holds personal data.

-- End offsets (summed over partitions) sampled by the console every few seconds.
CREATE TABLE topic_offset_samples (
    topic      text        NOT NULL,
    sampled_at timestamptz NOT NULL DEFAULT now(),
    end_total  bigint      NOT NULL,
    PRIMARY KEY (topic, sampled_at)
);

-- Where each dead letter sits in the dead-letter topic (so redrive reads one record, not the topic),
-- with the display-safe envelope headers only (see consumers.monitoring.figures.safe_headers).
CREATE TABLE dead_letter_locations (
    dlq_topic        text        NOT NULL,
    dlq_partition    integer     NOT NULL,
    dlq_offset       bigint      NOT NULL,
    consumer         text        NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    headers          jsonb       NOT NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX dead_letter_locations_source
    ON dead_letter_locations (source_topic, source_partition, source_offset);

-- How far the console has read the dead-letter topic, per partition.
CREATE TABLE dead_letter_scan_positions (
    dlq_topic   text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (dlq_topic, partition)
);

-- Every console action (login, redrive, discard), with who did it and how it ended.
CREATE TABLE console_actions (
    id        bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    client_id text        NOT NULL,
    actor     text        NOT NULL,
    action    text        NOT NULL CHECK (action IN ('login', 'login_refused', 'logout', 'redrive', 'discard')),
    target    text        NOT NULL DEFAULT '',
    outcome   text        NOT NULL,
    detail    text        NOT NULL DEFAULT ''
);
CREATE INDEX console_actions_at ON console_actions (at DESC);

-- A register row is resolved once: redriven (re-published to its source topic) or discarded.
CREATE TABLE dead_letter_resolutions (
    dead_letter_id bigint      PRIMARY KEY REFERENCES dead_letters (id),
    resolution     text        NOT NULL CHECK (resolution IN ('redriven', 'discarded')),
    action_id      bigint      NOT NULL REFERENCES console_actions (id),
    resolved_at    timestamptz NOT NULL DEFAULT now()
);

-- "Last accepted event per adapter" without scanning the whole outbox.
CREATE INDEX outbox_origin_accepted ON outbox (origin, accepted_at);
