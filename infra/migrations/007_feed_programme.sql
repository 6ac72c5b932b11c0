-- The feed counts what the programme counts (issue 12): target-group attributes recorded at
-- registration, prior applications at another office, team support enrolled after registration,
-- targets of several kinds per site or authority, units left out of the evaluation, and each feed
-- revision's true monthly counts per site (kept for year-to-date results and the ministry roll-up;
-- never published or delivered).

ALTER TABLE feed_registrations
    ADD COLUMN attributes               text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN sex                      text    NOT NULL DEFAULT 'not_stated',
    ADD COLUMN age_band                 text    NOT NULL DEFAULT '',
    ADD COLUMN foreign_national         boolean NOT NULL DEFAULT false,
    ADD COLUMN prior_application_office text;
ALTER TABLE feed_placements ADD COLUMN foreign_national boolean NOT NULL DEFAULT false;
ALTER TABLE feed_referrals ADD COLUMN team_support_from date;
CREATE INDEX feed_referrals_team_support ON feed_referrals (team_support_from) WHERE team_support_from IS NOT NULL;
CREATE INDEX feed_registrations_team_support ON feed_registrations (registered_on) WHERE team_support;
ALTER TABLE feed_revisions ADD COLUMN tallies jsonb NOT NULL DEFAULT '{}';

-- Yearly targets (目標) per site (scope = site id) or authority (scope = local government code).
CREATE TABLE feed_target_values (
    scope        text        NOT NULL,
    fiscal_year  integer     NOT NULL,
    kind         text        NOT NULL,
    target_group text        NOT NULL DEFAULT '',  -- '' = all people
    value        numeric     NOT NULL CHECK (value >= 0),
    set_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, fiscal_year, kind, target_group)
);
INSERT INTO feed_target_values (scope, fiscal_year, kind, value, set_at)
    SELECT site, fiscal_year, 'referral_placements', placements, set_at FROM feed_targets WHERE placements IS NOT NULL
    UNION ALL SELECT site, fiscal_year, 'referral_share', referral_share, set_at FROM feed_targets WHERE referral_share IS NOT NULL
    UNION ALL SELECT site, fiscal_year, 'team_support', team_support, set_at FROM feed_targets WHERE team_support IS NOT NULL;
DROP TABLE feed_targets;

-- Sites and authorities left out of a fiscal year's evaluation (e.g. new that year).
CREATE TABLE feed_evaluation_exclusions (
    scope       text    NOT NULL,
    fiscal_year integer NOT NULL,
    reason      text    NOT NULL,
    PRIMARY KEY (scope, fiscal_year)
);

-- The ministry's roll-up of a fiscal year (national and per prefecture), kept per revision like a feed.
CREATE TABLE feed_rollups (
    fiscal_year integer     NOT NULL,
    through     text        NOT NULL,  -- the last month counted, YYYY-MM
    revision    integer     NOT NULL,
    built_at    timestamptz NOT NULL DEFAULT now(),
    body        jsonb       NOT NULL,
    PRIMARY KEY (fiscal_year, through, revision)
);

-- The ministry (厚生労働省) reads the roll-up: a client kind of its own.
ALTER TABLE clients DROP CONSTRAINT clients_org_kind_check;
ALTER TABLE clients ADD CONSTRAINT clients_org_kind_check
    CHECK (org_kind IN ('authority', 'office', 'hello_work_national', 'operator', 'ministry'));
