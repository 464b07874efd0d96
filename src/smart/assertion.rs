//! private_key_jwt client authentication (SMART Backend Services): the client signs a JWT
//! with RS384 or ES384 whose `kid` names a key of its registered JWK Set (stored, or fetched
//! from its JWKS URL and cached). iss = sub = client_id, aud = the token endpoint, `exp` at most
//! five minutes ahead, and a `jti` that was never used before.

use super::accounts::{self, Client};
use super::{Smart, SmartError, now_ms};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `client_assertion_type` of a JWT client assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest an assertion may live (`exp` − now), in seconds.
pub const MAX_LIFETIME_SECS: i64 = 300;
/// Clock skew tolerated between client and server, in seconds.
const LEEWAY_SECS: i64 = 30;
/// How long a fetched JWK Set is trusted.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// A kid missing from a cached set triggers a refetch at most this often.
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(10);
/// The largest JWK Set fetched.
const JWKS_MAX_BYTES: usize = 256 * 1024;

/// Fetched JWK Sets by URL.
#[derive(Default)]
pub struct JwksCache {
    entries: Mutex<HashMap<String, (Instant, Value)>>,
}

impl JwksCache {
    fn cached(&self, url: &str) -> Option<(Instant, Value)> {
        self.entries.lock().ok()?.get(url).cloned()
    }

    async fn fetch(&self, url: &str) -> Result<Value, SmartError> {
        let unreachable =
            || SmartError::invalid_client("The client's JWKS URL could not be fetched");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| unreachable())?;
        let resp = client.get(url).send().await.map_err(|_| unreachable())?;
        if !resp.status().is_success() {
            return Err(unreachable());
        }
        let bytes = resp.bytes().await.map_err(|_| unreachable())?;
        if bytes.len() > JWKS_MAX_BYTES {
            return Err(unreachable());
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| unreachable())?;
        if let Ok(mut e) = self.entries.lock() {
            e.insert(url.to_string(), (Instant::now(), v.clone()));
        }
        Ok(v)
    }

    /// The JWK Set behind `url`, refetched when stale or when `kid` is missing (rate-limited).
    async fn get(&self, url: &str, kid: &str) -> Result<Value, SmartError> {
        if let Some((at, set)) = self.cached(url) {
            let has_kid = set.get("keys").and_then(Value::as_array).is_some_and(|ks| {
                ks.iter()
                    .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            });
            let fresh = at.elapsed() < JWKS_TTL;
            if fresh && (has_kid || at.elapsed() < JWKS_REFETCH_AFTER) {
                return Ok(set);
            }
        }
        self.fetch(url).await
    }
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    jti: Option<String>,
}

impl Smart {
    /// Authenticates a client by its JWT assertion for the token endpoint `audience`.
    pub async fn verify_assertion(
        &self,
        assertion: &str,
        audience: &str,
    ) -> Result<Client, SmartError> {
        let bad =
            |why: &str| SmartError::invalid_client(format!("Invalid client assertion: {why}"));
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| bad("not a JWT"))?;
        if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
            return Err(bad("alg must be RS384 or ES384"));
        }
        let kid = header.kid.ok_or_else(|| bad("the header has no kid"))?;
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
            .map_err(|_| bad("unreadable claims"))?;
        let client_id = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no iss"))?
            .to_string();
        let client = accounts::client(self.store.as_ref(), &client_id)
            .await?
            .ok_or_else(|| bad("unknown client"))?;
        let set = match (&client.jwks, &client.jwks_url) {
            (Some(set), _) => set.clone(),
            (None, Some(url)) => self.client_keys.get(url, &kid).await?,
            (None, None) => return Err(bad("the client has no registered keys")),
        };
        let set: JwkSet =
            serde_json::from_value(set).map_err(|_| bad("the client's JWKS is not readable"))?;
        let jwk: &Jwk = set
            .find(&kid)
            .ok_or_else(|| bad("no registered key has this kid"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| bad("the registered key is unusable"))?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS as u64;
        v.set_audience(&[audience]);
        v.set_issuer(&[client_id.as_str()]);
        v.sub = Some(client_id.clone());
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => bad("expired"),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    bad("aud must be the token endpoint")
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => bad("bad signature"),
                _ => bad("claims or signature rejected"),
            })?
            .claims;
        if claims.iss != claims.sub {
            return Err(bad("iss and sub must be the client id"));
        }
        let now = now_ms();
        if claims.exp > now / 1000 + MAX_LIFETIME_SECS + LEEWAY_SECS {
            return Err(bad("exp is more than five minutes ahead"));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| bad("no jti"))?;
        let fresh = self
            .store
            .use_assertion_id(&client_id, &jti, (claims.exp + LEEWAY_SECS) * 1000, now)
            .await?;
        if !fresh {
            return Err(bad("this jti was used before (replay)"));
        }
        Ok(client)
    }
}
