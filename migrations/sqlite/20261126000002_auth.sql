-- SMART-on-FHIR authorization server: accounts, OAuth clients, signing keys and the
-- short-lived state of the flows. Secrets never stored in clear: passwords and client secrets
-- as argon2 hashes, authorization codes and refresh tokens as SHA-256 hashes. Times are
-- milliseconds since the Unix epoch (UTC).

-- People who sign in (patients, practitioners, pharmacists, insurers, admins).
CREATE TABLE auth_user (
    username      TEXT    PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('patient', 'practitioner', 'pharmacist', 'insurer', 'admin')),
    fhir_user     TEXT,   -- Patient/123, Practitioner/7 …
    created       INTEGER  NOT NULL
);

-- Registered OAuth clients (SMART apps and backend services).
CREATE TABLE auth_client (
    client_id     TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('public', 'confidential', 'backend')),
    secret_hash   TEXT,   -- confidential symmetric clients
    redirect_uris TEXT    NOT NULL, -- JSON array of exact URIs
    scopes        TEXT    NOT NULL, -- the scopes the client may be granted, space separated
    jwks          TEXT,   -- backend clients: a JWK Set (JSON) …
    jwks_url      TEXT,   -- … or where to fetch it
    created       INTEGER  NOT NULL
);

-- Token signing keys (RS256). The newest unretired key signs; retired keys stay published in
-- the JWKS until the tokens they signed have expired.
CREATE TABLE auth_signing_key (
    kid         TEXT   PRIMARY KEY,
    alg         TEXT   NOT NULL,
    private_pem TEXT   NOT NULL,
    public_jwk  TEXT   NOT NULL,
    created     INTEGER NOT NULL,
    retired     INTEGER
);

-- An authorization request between /authorize and the redirect back to the app.
CREATE TABLE auth_request (
    id       TEXT   PRIMARY KEY, -- SHA-256 of the opaque id in the login form
    params   TEXT   NOT NULL,    -- the validated request (JSON)
    username TEXT,               -- set once the user signed in
    expires  INTEGER NOT NULL
);
CREATE INDEX auth_request_expires ON auth_request (expires);

-- Authorization codes: single use, short-lived.
CREATE TABLE auth_code (
    code_hash TEXT   PRIMARY KEY,
    grant_json TEXT  NOT NULL, -- client, redirect URI, PKCE challenge, user, scope, context
    expires   INTEGER NOT NULL,
    used      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX auth_code_expires ON auth_code (expires);

-- Refresh tokens (offline_access / online_access).
CREATE TABLE auth_refresh_token (
    token_hash TEXT   PRIMARY KEY,
    client_id  TEXT   NOT NULL,
    grant_json TEXT   NOT NULL, -- user, scope, context
    expires    INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX auth_refresh_token_expires ON auth_refresh_token (expires);

-- Access tokens revoked before their expiry (by jti).
CREATE TABLE auth_revoked_token (
    jti     TEXT   PRIMARY KEY,
    expires INTEGER NOT NULL
);

-- Client-assertion ids already used (private_key_jwt replay protection).
CREATE TABLE auth_assertion_jti (
    client_id TEXT   NOT NULL,
    jti       TEXT   NOT NULL,
    expires   INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);

-- EHR launch contexts: an opaque launch id bound to a patient (and encounter).
CREATE TABLE auth_launch (
    id         TEXT   PRIMARY KEY,
    patient    TEXT,
    encounter  TEXT,
    created_by TEXT   NOT NULL,
    expires    INTEGER NOT NULL
);
