-- Sign-in protections (issue 12): failed sign-ins counted per account and per address, with
-- a lock that grows with them; a pending authorization request dies after a few failures.
CREATE TABLE auth_failure (
    key          TEXT   PRIMARY KEY, -- 'user:<name>' or 'addr:<address>'
    failures     BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    updated      BIGINT NOT NULL
);

ALTER TABLE auth_request ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;

-- Refresh tokens rotated from one another share a family; reusing a rotated one revokes it.
ALTER TABLE auth_refresh_token ADD COLUMN family TEXT;
CREATE INDEX auth_refresh_token_family ON auth_refresh_token (family);
