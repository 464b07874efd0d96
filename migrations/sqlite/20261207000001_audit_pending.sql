-- AuditEvents that are recorded — durable and linked into the chain — but not yet stored as
-- searchable resources. Requests append here (many requests' events in one multi-row INSERT
-- and one commit); the audit indexer moves them into resource_version and the index tables
-- in large batches, and every interaction that can return AuditEvents moves what is here
-- first, so nothing is ever missing from a read or a search.
CREATE TABLE audit_pending (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_id  TEXT NOT NULL,
    recorded  INTEGER NOT NULL,
    body      TEXT NOT NULL
);
