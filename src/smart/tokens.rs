//! Access and id tokens: RS256 JWTs signed with the current key. An access token carries
//! iss, sub, aud (the FHIR base URL), exp, iat, jti, scope, client_id and the SMART context
//! (patient, encounter, fhirUser); every FHIR request verifies signature, expiry, audience and
//! standing (not revoked; client and user still registered and enabled — one query) and turns
//! the claims into a [`Principal`]. Also introspection (RFC 7662) and revocation (RFC 7009).

use super::{Smart, SmartError, crypto, now_ms};
use crate::auth::{Principal, Role, parse_scopes};
use crate::store::auth::TokenStanding;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The user's account name, or the client id for backend services.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    pub client_id: String,
    /// The signed-in user's account name (absent for backend services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// The user's role when the token was issued (absent for backend services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl AccessClaims {
    pub fn principal(&self) -> Principal {
        Principal {
            client_id: self.client_id.clone(),
            user: self.username.clone(),
            role: self.role.as_deref().and_then(|r| Role::parse(r).ok()),
            fhir_user: self.fhir_user.clone(),
            patient_context: self.patient.clone(),
            grants: parse_scopes(&self.scope),
            scope: self.scope.clone(),
            token_id: Some(self.jti.clone()),
        }
    }
}

/// What a token is issued for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    pub client_id: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(default)]
    pub need_patient_banner: bool,
    /// The OpenID Connect nonce of the authorization request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The FHIR base URL the token is for.
    pub aud: String,
    /// The refresh-token family: every token rotated from one first refresh token shares
    /// it, and a replayed (already rotated) member revokes them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

impl Grant {
    pub fn has_scope(&self, s: &str) -> bool {
        self.scope.split_whitespace().any(|x| x == s)
    }
}

impl Smart {
    /// Signs an access token for `grant`; returns (token, claims).
    pub async fn access_token(&self, grant: &Grant) -> Result<(String, AccessClaims), SmartError> {
        // the account's role as it is now: a changed role takes effect at the next token
        let role = match &grant.username {
            Some(u) => Some(
                super::accounts::user(self.store.as_ref(), u)
                    .await?
                    .ok_or_else(|| SmartError::invalid_grant("The account no longer exists"))?
                    .role
                    .as_str()
                    .to_string(),
            ),
            None => None,
        };
        let now = now_ms() / 1000;
        let claims = AccessClaims {
            iss: grant.aud.clone(),
            sub: grant
                .username
                .clone()
                .unwrap_or_else(|| grant.client_id.clone()),
            aud: grant.aud.clone(),
            exp: now + self.config.access_token_ttl_secs,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: grant.scope.clone(),
            client_id: grant.client_id.clone(),
            username: grant.username.clone(),
            patient: grant.patient.clone(),
            encounter: grant.encounter.clone(),
            fhir_user: grant.fhir_user.clone(),
            role,
        };
        let token = self.sign(&claims).await?;
        Ok((token, claims))
    }

    /// An OpenID Connect id token for a user grant with `openid`.
    pub async fn id_token(&self, grant: &Grant) -> Result<Option<String>, SmartError> {
        let Some(user) = &grant.username else {
            return Ok(None);
        };
        if !grant.has_scope("openid") {
            return Ok(None);
        }
        let now = now_ms() / 1000;
        let mut claims = json!({
            "iss": grant.aud,
            "sub": user,
            "aud": grant.client_id,
            "exp": now + self.config.access_token_ttl_secs,
            "iat": now,
            "auth_time": now,
        });
        if let Some(obj) = claims.as_object_mut() {
            if let Some(f) = &grant.fhir_user
                && (grant.has_scope("fhirUser") || grant.has_scope("profile"))
            {
                obj.insert("fhirUser".into(), json!(f));
            }
            if let Some(n) = &grant.nonce {
                obj.insert("nonce".into(), json!(n));
            }
        }
        self.sign(&claims).await.map(Some)
    }

    async fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SmartError> {
        let key = self.keys.signing(self.store.as_ref()).await?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".to_string());
        jsonwebtoken::encode(&header, claims, &key.key)
            .map_err(|e| SmartError::Internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies an access token for the FHIR base `aud`: signature with a known key, expiry,
    /// issuer and audience, and that it was not revoked.
    pub async fn verify(&self, token: &str, aud: &str) -> Result<AccessClaims, SmartError> {
        let claims = self.verify_signature(token, Some(aud), true).await?;
        if claims.username.is_some()
            && claims
                .role
                .as_deref()
                .and_then(|r| Role::parse(r).ok())
                .is_none()
        {
            // a user token without a role cannot be confined: refuse it rather than guess
            return Err(SmartError::invalid_token(
                "The access token carries no role; sign in again",
            ));
        }
        // one query: revoked, or its client or user disabled or removed since it was issued
        let standing = self
            .store
            .token_standing(&claims.jti, &claims.client_id, claims.username.as_deref())
            .await?;
        match standing {
            TokenStanding::Valid => Ok(claims),
            TokenStanding::Revoked => {
                Err(SmartError::invalid_token("The access token was revoked"))
            }
            TokenStanding::ClientInactive => Err(SmartError::invalid_token(
                "The access token's client is disabled or no longer registered",
            )),
            TokenStanding::UserInactive => Err(SmartError::invalid_token(
                "The access token's user is disabled or no longer exists",
            )),
        }
    }

    /// Checks signature (and, when asked, expiry and audience) of one of our access tokens.
    async fn verify_signature(
        &self,
        token: &str,
        aud: Option<&str>,
        check_exp: bool,
    ) -> Result<AccessClaims, SmartError> {
        let bad = || SmartError::invalid_token("The access token is not valid");
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad())?;
        if header.alg != Algorithm::RS256 {
            return Err(bad());
        }
        let kid = header.kid.ok_or_else(bad)?;
        let key = self
            .keys
            .verifying(self.store.as_ref(), &kid)
            .await?
            .ok_or_else(bad)?;
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = 0;
        v.validate_exp = check_exp;
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        match aud {
            Some(aud) => {
                let aliases = super::base_aliases(aud);
                v.set_audience(&aliases);
                v.set_issuer(&aliases);
            }
            None => v.validate_aud = false,
        }
        match jsonwebtoken::decode::<AccessClaims>(token, &key, &v) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    SmartError::invalid_token("The access token has expired")
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience
                | jsonwebtoken::errors::ErrorKind::InvalidIssuer => SmartError::invalid_token(
                    "The access token was issued for another server (aud)",
                ),
                _ => bad(),
            }),
        }
    }

    /// RFC 7662 introspection of an access or refresh token, for the FHIR base `aud`.
    pub async fn introspect(&self, token: &str, aud: &str) -> Result<Value, SmartError> {
        if token.matches('.').count() == 2 {
            return Ok(match self.verify(token, aud).await {
                Ok(c) => {
                    let mut out = json!({
                        "active": true,
                        "token_type": "Bearer",
                        "scope": c.scope,
                        "client_id": c.client_id,
                        "sub": c.sub,
                        "iss": c.iss,
                        "aud": c.aud,
                        "exp": c.exp,
                        "iat": c.iat,
                        "jti": c.jti,
                    });
                    if let Some(obj) = out.as_object_mut() {
                        if let Some(u) = &c.username {
                            obj.insert("username".into(), json!(u));
                        }
                        if let Some(p) = &c.patient {
                            obj.insert("patient".into(), json!(p));
                        }
                        if let Some(e) = &c.encounter {
                            obj.insert("encounter".into(), json!(e));
                        }
                        if let Some(f) = &c.fhir_user {
                            obj.insert("fhirUser".into(), json!(f));
                        }
                        if let Some(r) = &c.role {
                            obj.insert("role".into(), json!(r));
                        }
                    }
                    out
                }
                Err(SmartError::OAuth { .. }) => json!({"active": false}),
                Err(e) => return Err(e),
            });
        }
        let Some(row) = self.store.refresh_token(&crypto::digest(token)).await? else {
            return Ok(json!({"active": false}));
        };
        let grant: Grant = serde_json::from_str(&row.grant_json)
            .map_err(|e| SmartError::Internal(format!("stored grant: {e}")))?;
        if row.revoked || row.expires <= now_ms() || !super::same_base(&grant.aud, aud) {
            return Ok(json!({"active": false}));
        }
        let mut out = json!({
            "active": true,
            "token_type": "refresh_token",
            "scope": grant.scope,
            "client_id": grant.client_id,
            "exp": row.expires / 1000,
        });
        if let Some(obj) = out.as_object_mut() {
            if let Some(u) = &grant.username {
                obj.insert("sub".into(), json!(u));
                obj.insert("username".into(), json!(u));
            }
            if let Some(p) = &grant.patient {
                obj.insert("patient".into(), json!(p));
            }
            if let Some(f) = &grant.fhir_user {
                obj.insert("fhirUser".into(), json!(f));
            }
        }
        Ok(out)
    }

    /// RFC 7009 revocation by the client `client_id`: an access token stops working (its id
    /// is recorded until it would have expired), a refresh token is marked revoked. Tokens of
    /// other clients and unknown tokens are ignored, as the RFC asks.
    pub async fn revoke(&self, token: &str, client_id: &str) -> Result<(), SmartError> {
        if token.matches('.').count() == 2 {
            if let Ok(c) = self.verify_signature(token, None, false).await
                && c.client_id == client_id
            {
                self.store.revoke_token_id(&c.jti, c.exp * 1000).await?;
            }
            return Ok(());
        }
        let hash = crypto::digest(token);
        if let Some(row) = self.store.refresh_token(&hash).await?
            && row.client_id == client_id
        {
            self.store.revoke_refresh_token(&hash).await?;
        }
        Ok(())
    }
}
