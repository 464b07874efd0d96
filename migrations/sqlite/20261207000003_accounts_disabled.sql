-- Operators disable, enable and remove accounts and clients (`healporium user …`, `client …`).
-- A disabled account cannot sign in or refresh, a disabled client gets no tokens, and the
-- access tokens of either are refused on their next request (the per-request revocation
-- check reads these columns).
ALTER TABLE auth_user ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE auth_client ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;

-- The account a refresh token was issued to, so a password reset (or a removal) can revoke
-- that account's refresh tokens; filled in from the stored grant for existing tokens.
ALTER TABLE auth_refresh_token ADD COLUMN username TEXT;
UPDATE auth_refresh_token SET username = json_extract(grant_json, '$.username');
CREATE INDEX auth_refresh_token_username ON auth_refresh_token (username);
CREATE INDEX auth_refresh_token_client ON auth_refresh_token (client_id);
