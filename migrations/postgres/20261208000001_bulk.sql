-- Bulk Data (issue 17): asynchronous exports and imports, their output files and chunks.

-- One row per kick-off. `owner` is who may poll, download and cancel (client|user; empty
-- with authorization off); `principal` is what the job runs as (JSON; NULL: unconfined).
-- State: accepted → running → done | failed, or cancelled at any time. `expires` is set when
-- the job ends: after it, status and files answer 404 and the clean-up removes them.
CREATE TABLE bulk_job (
    id               TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('export', 'import')),
    owner            TEXT    NOT NULL,
    principal        TEXT,
    request          TEXT    NOT NULL,
    base             TEXT    NOT NULL,
    params           TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('accepted', 'running', 'done', 'failed',
                                                       'cancelled')),
    progress         TEXT,
    transaction_time BIGINT  NOT NULL, -- ms since the Unix epoch
    created BIGINT NOT NULL,
    finished BIGINT,
    expires BIGINT,
    error            TEXT
);
CREATE INDEX bulk_job_expires ON bulk_job (expires);

-- An output (or error) file of a job: its resource type, lines and bytes.
CREATE TABLE bulk_file (
    job_id        TEXT    NOT NULL,
    file_no BIGINT NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('output', 'error')),
    resource_type TEXT    NOT NULL,
    count BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (job_id, file_no)
);

-- A file's NDJSON text in pieces of about a megabyte, so a download streams in constant
-- memory on any node.
CREATE TABLE bulk_chunk (
    job_id   TEXT    NOT NULL,
    file_no BIGINT NOT NULL,
    chunk_no BIGINT NOT NULL,
    data     TEXT    NOT NULL,
    PRIMARY KEY (job_id, file_no, chunk_no)
);
