-- The AuditEvent hash chain: each AuditEvent the server records is linked to the previous one
-- by hash = SHA-256(prev_hash || the AuditEvent's exact JSON text), so a changed, removed or
-- inserted record breaks the chain (`healporium audit verify`).
CREATE TABLE audit_chain (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_id  TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE TRIGGER audit_chain_immutable_update BEFORE UPDATE ON audit_chain
BEGIN
    SELECT RAISE(ABORT, 'the audit chain is append-only');
END;
CREATE TRIGGER audit_chain_immutable_delete BEFORE DELETE ON audit_chain
BEGIN
    SELECT RAISE(ABORT, 'the audit chain is append-only');
END;
