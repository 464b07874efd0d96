-- Background work (issue 13): the durable job queue (the outbox). SQLite serializes writers,
-- so a claim is a plain UPDATE … RETURNING; the change feed is resource_version.seq itself
-- (versions are numbered inside the single writer's transaction, so in commit order).

CREATE TABLE job (
    id           TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,
    idem_key     TEXT,
    payload      TEXT    NOT NULL CHECK (json_valid(payload)),
    state        TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    lease_until  INTEGER,
    leased_by    TEXT,
    last_error   TEXT,
    created      INTEGER NOT NULL,
    updated      INTEGER NOT NULL,
    UNIQUE (kind, idem_key)
) WITHOUT ROWID;
CREATE INDEX job_due ON job (state, run_at);
CREATE INDEX job_lease ON job (state, lease_until);

CREATE TABLE job_attempt (
    job_id   TEXT    NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    node     TEXT    NOT NULL,
    started  INTEGER NOT NULL,
    finished INTEGER,
    outcome  TEXT,
    error    TEXT,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
