-- Background work (issue 13): the durable job queue (the outbox) and the change feed.

-- A job exists if and only if the write that enqueued it committed: it is inserted in that
-- write's transaction. Workers claim due jobs with FOR UPDATE SKIP LOCKED and a lease; a job
-- whose node died is taken over when its lease expires. `attempt` fences every update of a
-- running job: a node whose lease was taken over cannot finish or fail the job any more.
CREATE TABLE job (
    id           TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,
    idem_key     TEXT,             -- idempotency key, unique per kind (NULL: none)
    payload      TEXT    NOT NULL, -- JSON
    state        TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead', 'cancelled')),
    attempts     BIGINT  NOT NULL DEFAULT 0,
    max_attempts BIGINT  NOT NULL,
    run_at       BIGINT  NOT NULL, -- ms since the Unix epoch: not before
    lease_until  BIGINT,
    leased_by    TEXT,
    last_error   TEXT,
    created      BIGINT  NOT NULL,
    updated      BIGINT  NOT NULL,
    UNIQUE (kind, idem_key)
);
CREATE INDEX job_due ON job (state, run_at);
CREATE INDEX job_lease ON job (state, lease_until);

-- One row per attempt: which node ran it, when, and how it ended (NULL: still running, or
-- the node died).
CREATE TABLE job_attempt (
    job_id   TEXT    NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    attempt  BIGINT  NOT NULL,
    node     TEXT    NOT NULL,
    started  BIGINT  NOT NULL,
    finished BIGINT,
    outcome  TEXT,
    error    TEXT,
    PRIMARY KEY (job_id, attempt)
);

-- The change feed: every committed resource version, numbered in commit order. A writer
-- numbers its versions at the very end of its transaction under one advisory lock, which it
-- holds until its commit is visible; so a reader that sees position n has every position below
-- n visible too (a sequence alone commits out of order: see docs/ARCHITECTURE.md).
CREATE SEQUENCE change_feed_pos;
CREATE TABLE change_feed (
    pos BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL -- resource_version.seq (no foreign key: versions are append-only)
);
INSERT INTO change_feed (pos, seq)
    SELECT nextval('change_feed_pos'), seq FROM (SELECT seq FROM resource_version ORDER BY seq) s;
