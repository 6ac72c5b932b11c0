-- Single-writer roles (outbox relay, shared-view projector, feed builder): who leads, under which epoch.
-- A leader holds a session advisory lock and bumps its role's epoch when it takes the lock; every unit
-- of its work checks the epoch in the same transaction (SELECT ... FOR SHARE), so a holder that lost
-- the lock (its connection died with a database restart) cannot commit anything afterwards.
CREATE TABLE leader_epochs (
    role        text PRIMARY KEY,
    epoch       bigint NOT NULL,
    holder      text NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
