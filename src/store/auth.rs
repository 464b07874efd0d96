//! The authorization server's tables (migrations `*_auth.sql`, `*_accounts_disabled.sql`):
//! accounts and OAuth clients (each with a disabled flag the per-request token check reads),
//! signing keys, pending authorization requests, codes, refresh tokens, revoked token ids,
//! used client-assertion ids and EHR launch contexts. One [`AuthStore`] trait; the SQL is
//! written once (both dialects accept it) and implemented for SQLite and PostgreSQL by a macro.
//!
//! Rows are plain data: the rules (hashing, expiry policy, what a grant holds) live in
//! `smart/`. Times are milliseconds since the Unix epoch.

use super::{StoreResult, map_err};
use async_trait::async_trait;
use sqlx::{Pool, Postgres, Sqlite};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub fhir_user: Option<String>,
    pub created: i64,
    /// A disabled account cannot sign in or refresh, and its access tokens are refused.
    pub disabled: bool,
}

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    pub name: String,
    /// `public`, `confidential` or `backend`.
    pub kind: String,
    pub secret_hash: Option<String>,
    /// JSON array of redirect URIs.
    pub redirect_uris: String,
    /// Space-separated scopes the client may be granted.
    pub scopes: String,
    pub jwks: Option<String>,
    pub jwks_url: Option<String>,
    pub created: i64,
    /// A disabled client gets no tokens, and its access tokens are refused.
    pub disabled: bool,
}

/// A token signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub private_pem: String,
    pub public_jwk: String,
    pub created: i64,
    pub retired: Option<i64>,
}

/// A pending authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    pub params: String,
    pub username: Option<String>,
    pub expires: i64,
}

/// A refresh token's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub client_id: String,
    pub grant_json: String,
    pub expires: i64,
    pub revoked: bool,
}

/// Whether an access token may still be used, beyond its signature and expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStanding {
    Valid,
    /// Its id was revoked (RFC 7009).
    Revoked,
    /// Its client was disabled or removed.
    ClientInactive,
    /// Its user was disabled or removed.
    UserInactive,
}

/// An EHR launch context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRow {
    pub id: String,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub created_by: String,
    /// The app the launch is for (None for launches created before launches were bound).
    pub client_id: Option<String>,
    pub expires: i64,
}

/// A break-glass grant: `username` may see `patient` until `expires`, for `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrantRow {
    pub id: String,
    pub username: String,
    pub patient: String,
    pub reason: String,
    pub created: i64,
    pub expires: i64,
}

/// Storage of the authorization server.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Adds a user; Conflict when the name is taken.
    async fn insert_user(&self, user: &UserRow) -> StoreResult<()>;
    /// The account, disabled or not.
    async fn user(&self, username: &str) -> StoreResult<Option<UserRow>>;
    /// Every account, by name.
    async fn users(&self) -> StoreResult<Vec<UserRow>>;
    /// Disables or enables an account; false when there is none.
    async fn set_user_disabled(&self, username: &str, disabled: bool) -> StoreResult<bool>;
    /// Replaces an account's password hash and revokes its refresh tokens, in one
    /// transaction; false when there is no such account.
    async fn set_password(&self, username: &str, hash: &str) -> StoreResult<bool>;
    /// Deletes an account with its refresh tokens and break-glass grants, in one
    /// transaction; false when there was none.
    async fn remove_user(&self, username: &str) -> StoreResult<bool>;
    /// Adds a client; Conflict when the id is taken.
    async fn insert_client(&self, client: &ClientRow) -> StoreResult<()>;
    /// The client, disabled or not.
    async fn client(&self, client_id: &str) -> StoreResult<Option<ClientRow>>;
    /// Every client, by id.
    async fn clients(&self) -> StoreResult<Vec<ClientRow>>;
    /// Disables or enables a client; false when there is none.
    async fn set_client_disabled(&self, client_id: &str, disabled: bool) -> StoreResult<bool>;
    /// Replaces a confidential client's secret hash; false when there is no confidential
    /// client `client_id`.
    async fn set_client_secret(&self, client_id: &str, hash: &str) -> StoreResult<bool>;
    /// Deletes a client with its refresh tokens and launch contexts, in one transaction;
    /// false when there was none.
    async fn remove_client(&self, client_id: &str) -> StoreResult<bool>;

    /// Every signing key, newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<KeyRow>>;
    /// Adds a key and retires every other unretired key at `key.created`, in one transaction.
    async fn rotate_signing_key(&self, key: &KeyRow) -> StoreResult<()>;
    /// Adds the first key unless one exists already (several nodes may start at once).
    async fn insert_first_signing_key(&self, key: &KeyRow) -> StoreResult<()>;
    /// Deletes keys retired before `before`; how many went.
    async fn prune_signing_keys(&self, before: i64) -> StoreResult<u64>;

    /// Stores a pending authorization request.
    async fn insert_request(&self, id: &str, params: &str, expires: i64) -> StoreResult<()>;
    /// An unexpired pending request.
    async fn request(&self, id: &str, now: i64) -> StoreResult<Option<RequestRow>>;
    /// Records who signed in for a pending request.
    async fn set_request_user(&self, id: &str, username: &str) -> StoreResult<()>;
    /// Removes a pending request, returning it when it was unexpired.
    async fn take_request(&self, id: &str, now: i64) -> StoreResult<Option<RequestRow>>;

    /// Stores an authorization code (by hash).
    async fn insert_code(&self, hash: &str, grant: &str, expires: i64) -> StoreResult<()>;
    /// Marks an unused, unexpired code used and returns its grant; None otherwise.
    async fn redeem_code(&self, hash: &str, now: i64) -> StoreResult<Option<String>>;

    /// Stores a refresh token (by hash) of `client_id`, for the account `username`.
    async fn insert_refresh_token(
        &self,
        hash: &str,
        client_id: &str,
        username: Option<&str>,
        grant: &str,
        family: &str,
        expires: i64,
    ) -> StoreResult<()>;
    /// Revokes every refresh token of one family.
    async fn revoke_refresh_family(&self, family: &str) -> StoreResult<()>;
    async fn refresh_token(&self, hash: &str) -> StoreResult<Option<RefreshRow>>;
    /// Revokes a refresh token; true when it was active.
    async fn revoke_refresh_token(&self, hash: &str) -> StoreResult<bool>;

    /// Records a revoked access token id until it expires.
    async fn revoke_token_id(&self, jti: &str, expires: i64) -> StoreResult<()>;
    /// Whether the access token `jti` of `client_id` (and `username`) may still be used: not
    /// revoked, its client and user present and enabled. One query: it runs on every FHIR
    /// request.
    async fn token_standing(
        &self,
        jti: &str,
        client_id: &str,
        username: Option<&str>,
    ) -> StoreResult<TokenStanding>;

    /// Records a client-assertion id; false when the client used it already (a replay).
    async fn use_assertion_id(
        &self,
        client_id: &str,
        jti: &str,
        expires: i64,
        now: i64,
    ) -> StoreResult<bool>;

    async fn insert_launch(&self, launch: &LaunchRow) -> StoreResult<()>;
    /// Removes a launch context, returning it when it was unexpired (launches are single use).
    async fn take_launch(&self, id: &str, now: i64) -> StoreResult<Option<LaunchRow>>;

    /// Stores a break-glass grant.
    async fn insert_access_grant(&self, grant: &AccessGrantRow) -> StoreResult<()>;
    /// Deletes expired requests, codes, refresh tokens, revoked token ids, assertion ids,
    /// launches and break-glass grants (the clean-up job); how many rows went.
    async fn purge_expired(&self, now: i64) -> StoreResult<u64>;
    /// The patients `username` holds an unexpired break-glass grant for.
    async fn access_grants(&self, username: &str, now: i64) -> StoreResult<Vec<String>>;

    /// Until when `key` ('user:…' or 'addr:…') is locked (0: not locked).
    async fn locked_until(&self, key: &str) -> StoreResult<i64>;
    /// Counts a failed sign-in for `key` (restarting the count when the last failure is
    /// older than `window_start`); returns the count.
    async fn record_failure(&self, key: &str, now: i64, window_start: i64) -> StoreResult<i64>;
    /// Locks `key` until `until`.
    async fn lock(&self, key: &str, until: i64) -> StoreResult<()>;
    /// Forgets the failures of `key` (a successful sign-in).
    async fn clear_failures(&self, key: &str) -> StoreResult<()>;
    /// Counts a failed sign-in on a pending request; returns the count.
    async fn request_failed(&self, id: &str) -> StoreResult<i64>;
}

/// The auth tables of one database: reads on `read`, writes on `write` (SQLite keeps a
/// separate single-connection write pool; PostgreSQL passes the same pool twice).
pub struct AuthSql<DB: sqlx::Database> {
    pub(super) read: Pool<DB>,
    pub(super) write: Pool<DB>,
}

type UserTuple = (String, String, String, Option<String>, i64, bool);
#[allow(clippy::type_complexity)]
type ClientTuple = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    bool,
);
type KeyTuple = (String, String, String, String, i64, Option<i64>);
type LaunchTuple = (
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    i64,
);

fn user_row(t: UserTuple) -> UserRow {
    UserRow {
        username: t.0,
        password_hash: t.1,
        role: t.2,
        fhir_user: t.3,
        created: t.4,
        disabled: t.5,
    }
}

fn client_row(t: ClientTuple) -> ClientRow {
    ClientRow {
        client_id: t.0,
        name: t.1,
        kind: t.2,
        secret_hash: t.3,
        redirect_uris: t.4,
        scopes: t.5,
        jwks: t.6,
        jwks_url: t.7,
        created: t.8,
        disabled: t.9,
    }
}

fn key_row(t: KeyTuple) -> KeyRow {
    KeyRow {
        kid: t.0,
        alg: t.1,
        private_pem: t.2,
        public_jwk: t.3,
        created: t.4,
        retired: t.5,
    }
}

fn launch_row(t: LaunchTuple) -> LaunchRow {
    LaunchRow {
        id: t.0,
        patient: t.1,
        encounter: t.2,
        created_by: t.3,
        client_id: t.4,
        expires: t.5,
    }
}

/// The columns of a [`UserRow`] (a macro, for `concat!`).
macro_rules! user_columns {
    () => {
        "username, password_hash, role, fhir_user, created, disabled"
    };
}

/// The columns of a [`ClientRow`].
macro_rules! client_columns {
    () => {
        "client_id, name, kind, secret_hash, redirect_uris, scopes, jwks, jwks_url, created, \
         disabled"
    };
}

/// Why an access token is refused (0: it is not), in one statement: its id revoked, its
/// client missing or disabled, its user (when it has one) missing or disabled.
const TOKEN_STANDING: &str = "SELECT CAST(CASE \
    WHEN EXISTS (SELECT 1 FROM auth_revoked_token WHERE jti = $1) THEN 1 \
    WHEN NOT EXISTS (SELECT 1 FROM auth_client WHERE client_id = $2 AND disabled = FALSE) THEN 2 \
    WHEN $3 IS NOT NULL AND NOT EXISTS \
        (SELECT 1 FROM auth_user WHERE username = $3 AND disabled = FALSE) THEN 3 \
    ELSE 0 END AS BIGINT)";

/// What the clean-up job deletes: rows past their expiry.
const PURGE_EXPIRED: [&str; 7] = [
    "DELETE FROM auth_request WHERE expires < $1",
    "DELETE FROM auth_code WHERE expires < $1",
    "DELETE FROM auth_refresh_token WHERE expires < $1",
    "DELETE FROM auth_revoked_token WHERE expires < $1",
    "DELETE FROM auth_assertion_jti WHERE expires < $1",
    "DELETE FROM auth_launch WHERE expires < $1",
    "DELETE FROM auth_access_grant WHERE expires < $1",
];

macro_rules! auth_store_impl {
    ($db:ty) => {
        #[async_trait]
        impl AuthStore for AuthSql<$db> {
            async fn insert_user(&self, u: &UserRow) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_user (username, password_hash, role, fhir_user, created, \
                     disabled) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&u.username)
                .bind(&u.password_hash)
                .bind(&u.role)
                .bind(&u.fhir_user)
                .bind(u.created)
                .bind(u.disabled)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn user(&self, username: &str) -> StoreResult<Option<UserRow>> {
                let row: Option<UserTuple> = sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM auth_user WHERE username = $1"
                ))
                    .bind(username)
                    .fetch_optional(&self.read)
                    .await
                    .map_err(map_err)?;
                Ok(row.map(user_row))
            }

            async fn users(&self) -> StoreResult<Vec<UserRow>> {
                let rows: Vec<UserTuple> = sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM auth_user ORDER BY username"
                ))
                    .fetch_all(&self.read)
                    .await
                    .map_err(map_err)?;
                Ok(rows.into_iter().map(user_row).collect())
            }

            async fn set_user_disabled(&self, username: &str, disabled: bool) -> StoreResult<bool> {
                sqlx::query::<$db>("UPDATE auth_user SET disabled = $2 WHERE username = $1")
                    .bind(username)
                    .bind(disabled)
                    .execute(&self.write)
                    .await
                    .map(|r| r.rows_affected() > 0)
                    .map_err(map_err)
            }

            async fn set_password(&self, username: &str, hash: &str) -> StoreResult<bool> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                let found = sqlx::query::<$db>(
                    "UPDATE auth_user SET password_hash = $2 WHERE username = $1",
                )
                .bind(username)
                .bind(hash)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected()
                    > 0;
                sqlx::query::<$db>(
                    "UPDATE auth_refresh_token SET revoked = TRUE WHERE username = $1",
                )
                .bind(username)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(found)
            }

            async fn remove_user(&self, username: &str) -> StoreResult<bool> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                for sql in [
                    "DELETE FROM auth_refresh_token WHERE username = $1",
                    "DELETE FROM auth_access_grant WHERE username = $1",
                ] {
                    sqlx::query::<$db>(sql)
                        .bind(username)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                let found = sqlx::query::<$db>("DELETE FROM auth_user WHERE username = $1")
                    .bind(username)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected()
                    > 0;
                tx.commit().await.map_err(map_err)?;
                Ok(found)
            }

            async fn insert_client(&self, c: &ClientRow) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_client (client_id, name, kind, secret_hash, redirect_uris, \
                     scopes, jwks, jwks_url, created, disabled) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&c.client_id)
                .bind(&c.name)
                .bind(&c.kind)
                .bind(&c.secret_hash)
                .bind(&c.redirect_uris)
                .bind(&c.scopes)
                .bind(&c.jwks)
                .bind(&c.jwks_url)
                .bind(c.created)
                .bind(c.disabled)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn client(&self, client_id: &str) -> StoreResult<Option<ClientRow>> {
                let row: Option<ClientTuple> = sqlx::query_as(concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM auth_client WHERE client_id = $1"
                ))
                    .bind(client_id)
                    .fetch_optional(&self.read)
                    .await
                    .map_err(map_err)?;
                Ok(row.map(client_row))
            }

            async fn clients(&self) -> StoreResult<Vec<ClientRow>> {
                let rows: Vec<ClientTuple> = sqlx::query_as(concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM auth_client ORDER BY client_id"
                ))
                    .fetch_all(&self.read)
                    .await
                    .map_err(map_err)?;
                Ok(rows.into_iter().map(client_row).collect())
            }

            async fn set_client_disabled(
                &self,
                client_id: &str,
                disabled: bool,
            ) -> StoreResult<bool> {
                sqlx::query::<$db>("UPDATE auth_client SET disabled = $2 WHERE client_id = $1")
                    .bind(client_id)
                    .bind(disabled)
                    .execute(&self.write)
                    .await
                    .map(|r| r.rows_affected() > 0)
                    .map_err(map_err)
            }

            async fn set_client_secret(&self, client_id: &str, hash: &str) -> StoreResult<bool> {
                sqlx::query::<$db>(
                    "UPDATE auth_client SET secret_hash = $2 \
                     WHERE client_id = $1 AND kind = 'confidential'",
                )
                .bind(client_id)
                .bind(hash)
                .execute(&self.write)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(map_err)
            }

            async fn remove_client(&self, client_id: &str) -> StoreResult<bool> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                for sql in [
                    "DELETE FROM auth_refresh_token WHERE client_id = $1",
                    "DELETE FROM auth_launch WHERE client_id = $1",
                ] {
                    sqlx::query::<$db>(sql)
                        .bind(client_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                let found = sqlx::query::<$db>("DELETE FROM auth_client WHERE client_id = $1")
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected()
                    > 0;
                tx.commit().await.map_err(map_err)?;
                Ok(found)
            }

            async fn signing_keys(&self) -> StoreResult<Vec<KeyRow>> {
                let rows: Vec<KeyTuple> = sqlx::query_as(
                    "SELECT kid, alg, private_pem, public_jwk, created, retired \
                     FROM auth_signing_key ORDER BY created DESC, kid DESC",
                )
                .fetch_all(&self.read)
                .await
                .map_err(map_err)?;
                Ok(rows.into_iter().map(key_row).collect())
            }

            async fn rotate_signing_key(&self, k: &KeyRow) -> StoreResult<()> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                sqlx::query::<$db>(
                    "UPDATE auth_signing_key SET retired = $1 WHERE retired IS NULL",
                )
                .bind(k.created)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                sqlx::query::<$db>(
                    "INSERT INTO auth_signing_key (kid, alg, private_pem, public_jwk, created, \
                     retired) VALUES ($1, $2, $3, $4, $5, NULL)",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.private_pem)
                .bind(&k.public_jwk)
                .bind(k.created)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            }

            async fn insert_first_signing_key(&self, k: &KeyRow) -> StoreResult<()> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_signing_key")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if n == 0 {
                    sqlx::query::<$db>(
                        "INSERT INTO auth_signing_key (kid, alg, private_pem, public_jwk, \
                         created, retired) VALUES ($1, $2, $3, $4, $5, NULL)",
                    )
                    .bind(&k.kid)
                    .bind(&k.alg)
                    .bind(&k.private_pem)
                    .bind(&k.public_jwk)
                    .bind(k.created)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            }

            async fn prune_signing_keys(&self, before: i64) -> StoreResult<u64> {
                sqlx::query::<$db>(
                    "DELETE FROM auth_signing_key WHERE retired IS NOT NULL AND retired < $1",
                )
                .bind(before)
                .execute(&self.write)
                .await
                .map(|r| r.rows_affected())
                .map_err(map_err)
            }

            async fn insert_request(
                &self,
                id: &str,
                params: &str,
                expires: i64,
            ) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_request (id, params, username, expires) \
                     VALUES ($1, $2, NULL, $3)",
                )
                .bind(id)
                .bind(params)
                .bind(expires)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn request(&self, id: &str, now: i64) -> StoreResult<Option<RequestRow>> {
                let row: Option<(String, Option<String>, i64)> = sqlx::query_as(
                    "SELECT params, username, expires FROM auth_request \
                     WHERE id = $1 AND expires > $2",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?;
                Ok(row.map(|(params, username, expires)| RequestRow {
                    params,
                    username,
                    expires,
                }))
            }

            async fn set_request_user(&self, id: &str, username: &str) -> StoreResult<()> {
                sqlx::query::<$db>("UPDATE auth_request SET username = $2 WHERE id = $1")
                    .bind(id)
                    .bind(username)
                    .execute(&self.write)
                    .await
                    .map(|_| ())
                    .map_err(map_err)
            }

            async fn take_request(&self, id: &str, now: i64) -> StoreResult<Option<RequestRow>> {
                let row: Option<(String, Option<String>, i64)> = sqlx::query_as(
                    "DELETE FROM auth_request WHERE id = $1 AND expires > $2 \
                     RETURNING params, username, expires",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?;
                Ok(row.map(|(params, username, expires)| RequestRow {
                    params,
                    username,
                    expires,
                }))
            }

            async fn insert_code(
                &self,
                hash: &str,
                grant: &str,
                expires: i64,
            ) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_code (code_hash, grant_json, expires, used) \
                     VALUES ($1, $2, $3, FALSE)",
                )
                .bind(hash)
                .bind(grant)
                .bind(expires)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn redeem_code(&self, hash: &str, now: i64) -> StoreResult<Option<String>> {
                sqlx::query_scalar(
                    "UPDATE auth_code SET used = TRUE \
                     WHERE code_hash = $1 AND used = FALSE AND expires > $2 \
                     RETURNING grant_json",
                )
                .bind(hash)
                .bind(now)
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)
            }

            async fn insert_refresh_token(
                &self,
                hash: &str,
                client_id: &str,
                username: Option<&str>,
                grant: &str,
                family: &str,
                expires: i64,
            ) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_refresh_token (token_hash, client_id, grant_json, \
                     expires, revoked, family, username) VALUES ($1, $2, $3, $4, FALSE, $5, $6)",
                )
                .bind(hash)
                .bind(client_id)
                .bind(grant)
                .bind(expires)
                .bind(family)
                .bind(username)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn revoke_refresh_family(&self, family: &str) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "UPDATE auth_refresh_token SET revoked = TRUE WHERE family = $1",
                )
                .bind(family)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn refresh_token(&self, hash: &str) -> StoreResult<Option<RefreshRow>> {
                let row: Option<(String, String, i64, bool)> = sqlx::query_as(
                    "SELECT client_id, grant_json, expires, revoked FROM auth_refresh_token \
                     WHERE token_hash = $1",
                )
                .bind(hash)
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?;
                Ok(
                    row.map(|(client_id, grant_json, expires, revoked)| RefreshRow {
                        client_id,
                        grant_json,
                        expires,
                        revoked,
                    }),
                )
            }

            async fn revoke_refresh_token(&self, hash: &str) -> StoreResult<bool> {
                sqlx::query::<$db>(
                    "UPDATE auth_refresh_token SET revoked = TRUE \
                     WHERE token_hash = $1 AND revoked = FALSE",
                )
                .bind(hash)
                .execute(&self.write)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(map_err)
            }

            async fn revoke_token_id(&self, jti: &str, expires: i64) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_revoked_token (jti, expires) VALUES ($1, $2) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(expires)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn token_standing(
                &self,
                jti: &str,
                client_id: &str,
                username: Option<&str>,
            ) -> StoreResult<TokenStanding> {
                let why: i64 = sqlx::query_scalar(TOKEN_STANDING)
                    .bind(jti)
                    .bind(client_id)
                    .bind(username)
                    .fetch_one(&self.read)
                    .await
                    .map_err(map_err)?;
                Ok(match why {
                    0 => TokenStanding::Valid,
                    1 => TokenStanding::Revoked,
                    2 => TokenStanding::ClientInactive,
                    _ => TokenStanding::UserInactive,
                })
            }

            async fn use_assertion_id(
                &self,
                client_id: &str,
                jti: &str,
                expires: i64,
                now: i64,
            ) -> StoreResult<bool> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_assertion_jti (client_id, jti, expires) VALUES ($1, $2, $3) \
                     ON CONFLICT (client_id, jti) DO UPDATE SET expires = excluded.expires \
                     WHERE auth_assertion_jti.expires < $4",
                )
                .bind(client_id)
                .bind(jti)
                .bind(expires)
                .bind(now)
                .execute(&self.write)
                .await
                .map(|r| r.rows_affected() == 1)
                .map_err(map_err)
            }

            async fn insert_launch(&self, l: &LaunchRow) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_launch (id, patient, encounter, created_by, client_id, \
                     expires) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&l.id)
                .bind(&l.patient)
                .bind(&l.encounter)
                .bind(&l.created_by)
                .bind(&l.client_id)
                .bind(l.expires)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn take_launch(&self, id: &str, now: i64) -> StoreResult<Option<LaunchRow>> {
                let row: Option<LaunchTuple> = sqlx::query_as(
                    "DELETE FROM auth_launch WHERE id = $1 RETURNING id, patient, encounter, \
                     created_by, client_id, expires",
                )
                .bind(id)
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?;
                Ok(row.map(launch_row).filter(|l| l.expires > now))
            }

            async fn insert_access_grant(&self, g: &AccessGrantRow) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO auth_access_grant (id, username, patient, reason, created, \
                     expires) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&g.id)
                .bind(&g.username)
                .bind(&g.patient)
                .bind(&g.reason)
                .bind(g.created)
                .bind(g.expires)
                .execute(&self.write)
                .await
                .map(|_| ())
                .map_err(map_err)
            }

            async fn locked_until(&self, key: &str) -> StoreResult<i64> {
                let until: Option<i64> =
                    sqlx::query_scalar("SELECT locked_until FROM auth_failure WHERE key = $1")
                        .bind(key)
                        .fetch_optional(&self.write)
                        .await
                        .map_err(map_err)?;
                Ok(until.unwrap_or(0))
            }

            async fn record_failure(
                &self,
                key: &str,
                now: i64,
                window_start: i64,
            ) -> StoreResult<i64> {
                sqlx::query_scalar(
                    "INSERT INTO auth_failure (key, failures, locked_until, updated) \
                     VALUES ($1, 1, 0, $2) ON CONFLICT (key) DO UPDATE SET \
                     failures = CASE WHEN auth_failure.updated < $3 THEN 1 \
                     ELSE auth_failure.failures + 1 END, updated = $2 RETURNING failures",
                )
                .bind(key)
                .bind(now)
                .bind(window_start)
                .fetch_one(&self.write)
                .await
                .map_err(map_err)
            }

            async fn lock(&self, key: &str, until: i64) -> StoreResult<()> {
                sqlx::query::<$db>("UPDATE auth_failure SET locked_until = $2 WHERE key = $1")
                    .bind(key)
                    .bind(until)
                    .execute(&self.write)
                    .await
                    .map(|_| ())
                    .map_err(map_err)
            }

            async fn clear_failures(&self, key: &str) -> StoreResult<()> {
                sqlx::query::<$db>("DELETE FROM auth_failure WHERE key = $1")
                    .bind(key)
                    .execute(&self.write)
                    .await
                    .map(|_| ())
                    .map_err(map_err)
            }

            async fn request_failed(&self, id: &str) -> StoreResult<i64> {
                let n: Option<i64> = sqlx::query_scalar(
                    "UPDATE auth_request SET failures = failures + 1 WHERE id = $1 \
                     RETURNING failures",
                )
                .bind(id)
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?;
                Ok(n.unwrap_or(i64::MAX))
            }

            async fn purge_expired(&self, now: i64) -> StoreResult<u64> {
                let mut n = 0;
                for sql in PURGE_EXPIRED {
                    n += sqlx::query::<$db>(sql)
                        .bind(now)
                        .execute(&self.write)
                        .await
                        .map_err(map_err)?
                        .rows_affected();
                }
                Ok(n)
            }

            async fn access_grants(&self, username: &str, now: i64) -> StoreResult<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT DISTINCT patient FROM auth_access_grant WHERE username = $1 AND \
                     expires > $2",
                )
                .bind(username)
                .bind(now)
                .fetch_all(&self.read)
                .await
                .map_err(map_err)?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }
        }
    };
}

auth_store_impl!(Sqlite);
auth_store_impl!(Postgres);
