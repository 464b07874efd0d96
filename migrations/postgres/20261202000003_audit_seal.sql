-- Tamper evidence (issue 12): TRUNCATE skips row triggers, so the append-only tables refuse
-- it with statement triggers. (Links are keyed with the server's audit key from now on; the
-- key and the signed head live outside the database.)
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_immutable();
CREATE TRIGGER resource_version_no_truncate BEFORE TRUNCATE ON resource_version
    FOR EACH STATEMENT EXECUTE FUNCTION resource_version_immutable();
