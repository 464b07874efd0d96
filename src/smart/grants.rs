//! The token endpoint: client authentication (none for public clients, client_secret_basic
//! or _post, private_key_jwt) and the grants authorization_code (with the PKCE check),
//! refresh_token (rotating) and client_credentials (backend services, system scopes only).

use super::accounts::{self, Client, ClientKind};
use super::assertion::ASSERTION_TYPE;
use super::authorize::CodeGrant;
use super::tokens::Grant;
use super::{Smart, SmartError, crypto, now_ms};
use crate::auth::ScopeContext;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The form of a token, introspection or revocation request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
    /// Introspection and revocation: the token in question.
    pub token: Option<String>,
}

/// Credentials from an `Authorization: Basic` header.
#[derive(Clone)]
pub struct BasicCredentials {
    pub client_id: String,
    pub secret: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicCredentials({}, ***)", self.client_id)
    }
}

impl Smart {
    /// Authenticates the calling client. `required`: public clients (client_id only) are
    /// refused.
    pub async fn authenticate_client(
        &self,
        form: &TokenForm,
        basic: Option<&BasicCredentials>,
        token_endpoint: &str,
        required: bool,
    ) -> Result<Client, SmartError> {
        if let Some(assertion) = &form.client_assertion {
            if form.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
                return Err(SmartError::invalid_client(format!(
                    "client_assertion_type must be {ASSERTION_TYPE}"
                )));
            }
            let client = self.verify_assertion(assertion, token_endpoint).await?;
            if form
                .client_id
                .as_ref()
                .is_some_and(|c| c != &client.client_id)
            {
                return Err(SmartError::invalid_client(
                    "client_id does not match the assertion",
                ));
            }
            return Ok(client);
        }
        let secret_pair = match (basic, &form.client_secret) {
            (Some(b), _) => Some((b.client_id.clone(), b.secret.clone())),
            (None, Some(s)) => form.client_id.clone().map(|c| (c, s.clone())),
            (None, None) => None,
        };
        if let Some((id, secret)) = secret_pair {
            let client = accounts::client(self.store.as_ref(), &id).await?;
            return match client {
                Some(c) if c.kind == ClientKind::Confidential && c.secret_matches(&secret) => Ok(c),
                _ => Err(SmartError::invalid_client("Client authentication failed")),
            };
        }
        let id = form
            .client_id
            .as_deref()
            .ok_or_else(|| SmartError::invalid_client("No client authentication"))?;
        match accounts::client(self.store.as_ref(), id).await? {
            Some(c) if c.kind == ClientKind::Public && !required => Ok(c),
            Some(_) => Err(SmartError::invalid_client(
                "This client must authenticate (client secret or private_key_jwt)",
            )),
            None => Err(SmartError::invalid_client("Unknown client")),
        }
    }

    /// Handles a token request for the FHIR base `fhir_base`; the JSON token response.
    pub async fn token(
        &self,
        form: &TokenForm,
        basic: Option<&BasicCredentials>,
        fhir_base: &str,
        token_endpoint: &str,
    ) -> Result<Value, SmartError> {
        let grant_type = form
            .grant_type
            .as_deref()
            .ok_or_else(|| SmartError::invalid_request("grant_type is missing"))?;
        if !matches!(
            grant_type,
            "authorization_code" | "refresh_token" | "client_credentials"
        ) {
            return Err(SmartError::OAuth {
                status: 400,
                error: "unsupported_grant_type",
                description: "grant_type must be authorization_code, refresh_token or \
                    client_credentials"
                    .into(),
            });
        }
        // a public client's refresh may leave out client_id (SMART does not require it; the
        // fhirclient library sends none): the refresh token names its client, and only a
        // public one is accepted this way (a confidential client still authenticates)
        let mut named;
        let form = if grant_type == "refresh_token"
            && form.client_id.is_none()
            && form.client_assertion.is_none()
            && basic.is_none()
            && let Some(token) = form.refresh_token.as_deref()
            && let Some(row) = self.store.refresh_token(&crypto::digest(token)).await?
        {
            named = form.clone();
            named.client_id = Some(row.client_id);
            &named
        } else {
            form
        };
        let client = self
            .authenticate_client(
                form,
                basic,
                token_endpoint,
                grant_type == "client_credentials",
            )
            .await?;
        match grant_type {
            "authorization_code" => self.code_grant(form, &client, fhir_base).await,
            "refresh_token" => self.refresh_grant(form, &client, fhir_base).await,
            _ => self.client_credentials(form, &client, fhir_base).await,
        }
    }

    async fn code_grant(
        &self,
        form: &TokenForm,
        client: &Client,
        fhir_base: &str,
    ) -> Result<Value, SmartError> {
        let code = form
            .code
            .as_deref()
            .ok_or_else(|| SmartError::invalid_request("code is missing"))?;
        let stored = self
            .store
            .redeem_code(&crypto::digest(code), now_ms())
            .await?
            .ok_or_else(|| {
                SmartError::invalid_grant("The code is unknown, expired or already used")
            })?;
        let stored: CodeGrant = serde_json::from_str(&stored)
            .map_err(|e| SmartError::Internal(format!("code grant: {e}")))?;
        if stored.grant.client_id != client.client_id {
            return Err(SmartError::invalid_grant(
                "The code was issued to another client",
            ));
        }
        if form.redirect_uri.as_deref() != Some(stored.redirect_uri.as_str()) {
            return Err(SmartError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        let verifier = form
            .code_verifier
            .as_deref()
            .ok_or_else(|| SmartError::invalid_grant("code_verifier is missing (PKCE)"))?;
        if !crypto::pkce_s256_matches(verifier, &stored.code_challenge) {
            return Err(SmartError::invalid_grant(
                "code_verifier does not match the code_challenge (PKCE)",
            ));
        }
        if !super::same_base(&stored.grant.aud, fhir_base) {
            return Err(SmartError::invalid_grant(
                "The code was issued for another server",
            ));
        }
        self.respond(&stored.grant, None).await
    }

    async fn refresh_grant(
        &self,
        form: &TokenForm,
        client: &Client,
        fhir_base: &str,
    ) -> Result<Value, SmartError> {
        let token = form
            .refresh_token
            .as_deref()
            .ok_or_else(|| SmartError::invalid_request("refresh_token is missing"))?;
        let hash = crypto::digest(token);
        let invalid =
            || SmartError::invalid_grant("The refresh token is invalid, expired or revoked");
        let row = self.store.refresh_token(&hash).await?.ok_or_else(invalid)?;
        if row.client_id != client.client_id {
            return Err(invalid());
        }
        let mut grant: Grant = serde_json::from_str(&row.grant_json)
            .map_err(|e| SmartError::Internal(format!("stored grant: {e}")))?;
        if row.revoked {
            // a rotated token used again: it was stolen, or the one that replaced it was;
            // the whole family ends (RFC 9700 §4.14.2)
            if let Some(family) = &grant.family {
                self.store.revoke_refresh_family(family).await?;
            }
            tracing::warn!("refresh token reused; its family is revoked");
            return Err(invalid());
        }
        if row.expires <= now_ms() {
            return Err(invalid());
        }
        if !super::same_base(&grant.aud, fhir_base) {
            return Err(invalid());
        }
        // a disabled or removed account cannot refresh; the token is kept (not rotated), so
        // it works again once the account is enabled
        if let Some(username) = &grant.username
            && accounts::user(self.store.as_ref(), username)
                .await?
                .is_none()
        {
            return Err(invalid());
        }
        if let Some(narrower) = &form.scope {
            let asked: Vec<&str> = narrower.split_whitespace().collect();
            if asked.iter().any(|s| !grant.has_scope(s)) {
                return Err(SmartError::invalid_scope(
                    "A refresh may only narrow the granted scopes",
                ));
            }
            grant.scope = asked.join(" ");
        }
        // rotation: the old token stops working; a replay of it fails
        if !self.store.revoke_refresh_token(&hash).await? {
            return Err(invalid());
        }
        grant.nonce = None;
        self.respond(&grant, Some(row.expires)).await
    }

    async fn client_credentials(
        &self,
        form: &TokenForm,
        client: &Client,
        fhir_base: &str,
    ) -> Result<Value, SmartError> {
        if client.kind == ClientKind::Public {
            return Err(SmartError::unauthorized_client(
                "Public clients cannot use client_credentials",
            ));
        }
        let requested = form.scope.clone().unwrap_or_default();
        let scopes = accounts::grantable(&requested, client, &[ScopeContext::System], false);
        if scopes.is_empty() {
            return Err(SmartError::invalid_scope(
                "client_credentials grants system/ scopes the client is registered for",
            ));
        }
        let grant = Grant {
            client_id: client.client_id.clone(),
            scope: scopes.join(" "),
            aud: fhir_base.to_string(),
            ..Grant::default()
        };
        self.respond(&grant, None).await
    }

    /// The token response for a grant: access token, SMART context, id token and (with
    /// offline_access / online_access) a refresh token expiring at `refresh_expires` or after
    /// the configured lifetime.
    async fn respond(
        &self,
        grant: &Grant,
        refresh_expires: Option<i64>,
    ) -> Result<Value, SmartError> {
        let (token, claims) = self.access_token(grant).await?;
        let mut out = Map::new();
        out.insert("access_token".into(), json!(token));
        out.insert("token_type".into(), json!("Bearer"));
        out.insert("expires_in".into(), json!(claims.exp - claims.iat));
        out.insert("scope".into(), json!(grant.scope));
        if grant.username.is_some() {
            out.insert(
                "need_patient_banner".into(),
                json!(grant.need_patient_banner),
            );
        }
        if let Some(p) = &grant.patient {
            out.insert("patient".into(), json!(p));
        }
        if let Some(e) = &grant.encounter {
            out.insert("encounter".into(), json!(e));
        }
        if let Some(id) = self.id_token(grant).await? {
            out.insert("id_token".into(), json!(id));
        }
        let ttl = if grant.has_scope("offline_access") {
            Some(self.config.offline_ttl_secs)
        } else if grant.has_scope("online_access") {
            Some(self.config.online_ttl_secs)
        } else {
            None
        };
        if let Some(ttl) = ttl
            && grant.username.is_some()
        {
            let now = now_ms();
            let refresh = crypto::random_token(32);
            let mut grant = grant.clone();
            let family = grant
                .family
                .get_or_insert_with(|| crypto::random_token(16))
                .clone();
            let json = serde_json::to_string(&grant)
                .map_err(|e| SmartError::Internal(format!("grant: {e}")))?;
            self.store
                .insert_refresh_token(
                    &crypto::digest(&refresh),
                    &grant.client_id,
                    grant.username.as_deref(),
                    &json,
                    &family,
                    refresh_expires.unwrap_or(now + ttl * 1000),
                )
                .await?;
            out.insert("refresh_token".into(), json!(refresh));
        }
        Ok(Value::Object(out))
    }
}
