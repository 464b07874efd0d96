-- The AuditEvent hash chain: each AuditEvent the server records is linked to the previous one
-- by hash = SHA-256(prev_hash || the AuditEvent's exact JSON text), so a changed, removed or
-- inserted record breaks the chain (`healporium audit verify`).
CREATE TABLE audit_chain (
    seq       BIGSERIAL PRIMARY KEY,
    audit_id  TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE FUNCTION audit_chain_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit chain is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_chain_immutable BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_chain_immutable();
