//! Token signing keys: RS256 key pairs kept in the database, the newest unretired one signing.
//! `key rotate` adds a key and retires the others; retired keys stay in the JWKS (and keep
//! verifying) until every token they signed has expired, then they are pruned. Each node
//! caches the keys and reloads them periodically and on an unknown `kid`.

use super::SmartError;
use crate::store::AuthStore;
use crate::store::auth::KeyRow;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long a node trusts its cached keys before looking at the database again: a key made
/// by `key rotate` on any node signs everywhere, and a removed one stops verifying, within it.
const RELOAD_AFTER: Duration = Duration::from_secs(5);
/// At most one reload per this interval is triggered by unknown `kid`s.
const MISS_RELOAD_AFTER: Duration = Duration::from_secs(2);

/// Generates a new RS256 key pair (CPU-bound: run it off the async workers).
pub fn generate(now_ms: i64) -> Result<KeyRow, SmartError> {
    let mut rng = rand::rngs::OsRng;
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048)
        .map_err(|e| SmartError::Internal(format!("cannot generate an RSA key: {e}")))?;
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SmartError::Internal(format!("cannot encode the RSA key: {e}")))?
        .to_string();
    let kid = super::crypto::random_token(12);
    let jwk = public_jwk(&pem, &kid)?;
    Ok(KeyRow {
        kid,
        alg: "RS256".to_string(),
        private_pem: pem,
        public_jwk: jwk.to_string(),
        created: now_ms,
        retired: None,
    })
}

fn public_jwk(pem: &str, kid: &str) -> Result<Value, SmartError> {
    let enc = EncodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|e| SmartError::Internal(format!("bad signing key: {e}")))?;
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256)
        .map_err(|e| SmartError::Internal(format!("bad signing key: {e}")))?;
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    serde_json::to_value(&jwk).map_err(|e| SmartError::Internal(e.to_string()))
}

/// The key that signs new tokens.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub key: EncodingKey,
}

#[derive(Default)]
struct Loaded {
    at: Option<Instant>,
    last_miss_reload: Option<Instant>,
    signing: Option<SigningKey>,
    verifying: HashMap<String, DecodingKey>,
    /// (public JWK, retired at) of every key in the database.
    public: Vec<(Value, Option<i64>)>,
}

/// A node's cache of the signing keys.
#[derive(Default)]
pub struct KeyRing {
    loaded: RwLock<Loaded>,
}

impl KeyRing {
    /// Creates the first key when the database has none.
    pub async fn ensure(&self, store: &dyn AuthStore, now_ms: i64) -> Result<(), SmartError> {
        if store.signing_keys().await?.is_empty() {
            let key = tokio::task::spawn_blocking(move || generate(now_ms))
                .await
                .map_err(|e| SmartError::Internal(e.to_string()))??;
            store.insert_first_signing_key(&key).await?;
        }
        self.reload(store).await
    }

    async fn reload(&self, store: &dyn AuthStore) -> Result<(), SmartError> {
        let rows = store.signing_keys().await?;
        let mut signing = None;
        let mut verifying = HashMap::new();
        let mut public = Vec::new();
        for row in rows {
            let jwk: Value = serde_json::from_str(&row.public_jwk)
                .map_err(|e| SmartError::Internal(format!("stored JWK: {e}")))?;
            let parsed: Jwk = serde_json::from_value(jwk.clone())
                .map_err(|e| SmartError::Internal(format!("stored JWK: {e}")))?;
            let dec = DecodingKey::from_jwk(&parsed)
                .map_err(|e| SmartError::Internal(format!("stored JWK: {e}")))?;
            verifying.insert(row.kid.clone(), dec);
            // rows come newest first: the first unretired key signs
            if row.retired.is_none() && signing.is_none() {
                let key = EncodingKey::from_rsa_pem(row.private_pem.as_bytes())
                    .map_err(|e| SmartError::Internal(format!("stored key: {e}")))?;
                signing = Some(SigningKey {
                    kid: row.kid.clone(),
                    key,
                });
            }
            public.push((jwk, row.retired));
        }
        let mut loaded = self
            .loaded
            .write()
            .map_err(|_| SmartError::Internal("key cache poisoned".into()))?;
        loaded.signing = signing;
        loaded.verifying = verifying;
        loaded.public = public;
        loaded.at = Some(Instant::now());
        Ok(())
    }

    fn stale(&self) -> bool {
        self.loaded
            .read()
            .map(|l| l.at.is_none_or(|at| at.elapsed() > RELOAD_AFTER))
            .unwrap_or(true)
    }

    /// The key that signs new tokens.
    pub async fn signing(&self, store: &dyn AuthStore) -> Result<SigningKey, SmartError> {
        if self.stale() {
            self.reload(store).await?;
        }
        if let Some(k) = self.current()? {
            return Ok(k);
        }
        // a fresh database: make the first key
        self.ensure(store, super::now_ms()).await?;
        self.current()?.ok_or_else(|| {
            SmartError::Internal("no signing key: run `healporium key rotate`".into())
        })
    }

    fn current(&self) -> Result<Option<SigningKey>, SmartError> {
        Ok(self
            .loaded
            .read()
            .map_err(|_| SmartError::Internal("key cache poisoned".into()))?
            .signing
            .clone())
    }

    /// The key that verifies tokens signed with `kid`, if it is (still) known.
    pub async fn verifying(
        &self,
        store: &dyn AuthStore,
        kid: &str,
    ) -> Result<Option<DecodingKey>, SmartError> {
        let (found, may_reload) = {
            let l = self
                .loaded
                .read()
                .map_err(|_| SmartError::Internal("key cache poisoned".into()))?;
            let fresh = l.at.is_some_and(|at| at.elapsed() <= RELOAD_AFTER);
            let may = l
                .last_miss_reload
                .is_none_or(|t| t.elapsed() > MISS_RELOAD_AFTER);
            (l.verifying.get(kid).cloned().filter(|_| fresh), may)
        };
        if found.is_some() {
            return Ok(found);
        }
        if self.stale() || may_reload {
            if let Ok(mut l) = self.loaded.write() {
                l.last_miss_reload = Some(Instant::now());
            }
            self.reload(store).await?;
        }
        Ok(self
            .loaded
            .read()
            .map_err(|_| SmartError::Internal("key cache poisoned".into()))?
            .verifying
            .get(kid)
            .cloned())
    }

    /// The JWK Set: every key not retired longer than `max_token_ttl_ms` ago.
    pub async fn jwks(
        &self,
        store: &dyn AuthStore,
        now_ms: i64,
        max_token_ttl_ms: i64,
    ) -> Result<Value, SmartError> {
        if self.stale() {
            self.reload(store).await?;
        }
        let l = self
            .loaded
            .read()
            .map_err(|_| SmartError::Internal("key cache poisoned".into()))?;
        let keys: Vec<Value> = l
            .public
            .iter()
            .filter(|(_, retired)| retired.is_none_or(|r| r + max_token_ttl_ms > now_ms))
            .map(|(jwk, _)| jwk.clone())
            .collect();
        Ok(serde_json::json!({ "keys": keys }))
    }
}

/// Rotates: a new key signs from now on; keys retired longer ago than `max_token_ttl_ms` are
/// deleted. Returns the new key id.
pub async fn rotate(
    store: &dyn AuthStore,
    now_ms: i64,
    max_token_ttl_ms: i64,
) -> Result<(String, u64), SmartError> {
    let key = tokio::task::spawn_blocking(move || generate(now_ms))
        .await
        .map_err(|e| SmartError::Internal(e.to_string()))??;
    store.rotate_signing_key(&key).await?;
    let pruned = store.prune_signing_keys(now_ms - max_token_ttl_ms).await?;
    Ok((key.kid, pruned))
}
