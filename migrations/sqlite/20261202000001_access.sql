-- Access control (issue 11): EHR launches are bound to the app they were created for and
-- used once; break-glass grants give a practitioner short-lived, audited access to one patient.
ALTER TABLE auth_launch ADD COLUMN client_id TEXT;

CREATE TABLE auth_access_grant (
    id       TEXT    PRIMARY KEY,
    username TEXT    NOT NULL,
    patient  TEXT    NOT NULL,
    reason   TEXT    NOT NULL,
    created  INTEGER NOT NULL,
    expires  INTEGER NOT NULL
);
CREATE INDEX auth_access_grant_user ON auth_access_grant (username, expires);

-- The policy's internal search parameters (Binary securityContext, a document Bundle's
-- subject) have no index rows for resources written before them: mark them for the next
-- `healporium reindex` where such resources exist.
INSERT INTO search_param_state (base, code, status, updated)
SELECT 'Binary', 'hp-security-context', 'pending', 0
WHERE EXISTS (SELECT 1 FROM resource WHERE resource_type = 'Binary');
INSERT INTO search_param_state (base, code, status, updated)
SELECT 'Bundle', 'hp-subject', 'pending', 0
WHERE EXISTS (SELECT 1 FROM resource WHERE resource_type = 'Bundle');
