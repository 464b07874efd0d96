//! L3: the embedded OAuth2 / OpenID Connect authorization server of SMART App Launch 2.x —
//! accounts, clients, signing keys, the authorization-code flow with PKCE, EHR and standalone
//! launch, refresh tokens, backend services (client_credentials with private_key_jwt or a
//! client secret), introspection and revocation, and the verification of access tokens on
//! every FHIR request. No HTTP types: `api/smart.rs` is the edge, the store keeps the state.
//!
//! Deciding what a token may do with a resource is not here: the token becomes an
//! [`crate::auth::Principal`] and the interaction layer enforces it.

pub mod accounts;
pub mod assertion;
pub mod authorize;
pub mod crypto;
pub mod grants;
pub mod keys;
pub mod manage;
pub mod tokens;

use crate::store::{AuthStore, StoreError};
use std::sync::Arc;

pub use crypto::PasswordCost;

/// Lifetimes and costs of the authorization server.
#[derive(Debug, Clone)]
pub struct SmartConfig {
    /// Access (and id) token lifetime, in seconds.
    pub access_token_ttl_secs: i64,
    /// Authorization code lifetime, in seconds.
    pub code_ttl_secs: i64,
    /// Lifetime of a pending authorization request (login and consent), in seconds.
    pub request_ttl_secs: i64,
    /// Refresh token lifetime with `offline_access`, in seconds.
    pub offline_ttl_secs: i64,
    /// Refresh token lifetime with `online_access`, in seconds.
    pub online_ttl_secs: i64,
    /// EHR launch context lifetime, in seconds.
    pub launch_ttl_secs: i64,
    /// Cost of password and secret hashes made by the server (`serve --demo`).
    pub password_cost: PasswordCost,
}

impl Default for SmartConfig {
    fn default() -> Self {
        SmartConfig {
            access_token_ttl_secs: 3600,
            code_ttl_secs: 120,
            request_ttl_secs: 900,
            offline_ttl_secs: 90 * 24 * 3600,
            online_ttl_secs: 12 * 3600,
            launch_ttl_secs: 300,
            password_cost: PasswordCost::Standard,
        }
    }
}

/// A failure of the authorization server, before the edge renders it (RFC 6749 JSON error,
/// OperationOutcome or an HTML page, as the endpoint demands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmartError {
    /// An OAuth error: RFC 6749 code, description and HTTP status.
    OAuth {
        status: u16,
        error: &'static str,
        description: String,
    },
    /// The database could not answer.
    Unavailable(String),
    Internal(String),
}

impl SmartError {
    pub fn invalid_request(description: impl Into<String>) -> SmartError {
        SmartError::OAuth {
            status: 400,
            error: "invalid_request",
            description: description.into(),
        }
    }

    pub fn invalid_client(description: impl Into<String>) -> SmartError {
        SmartError::OAuth {
            status: 401,
            error: "invalid_client",
            description: description.into(),
        }
    }

    pub fn invalid_grant(description: impl Into<String>) -> SmartError {
        SmartError::OAuth {
            status: 400,
            error: "invalid_grant",
            description: description.into(),
        }
    }

    pub fn invalid_scope(description: impl Into<String>) -> SmartError {
        SmartError::OAuth {
            status: 400,
            error: "invalid_scope",
            description: description.into(),
        }
    }

    pub fn unauthorized_client(description: impl Into<String>) -> SmartError {
        SmartError::OAuth {
            status: 400,
            error: "unauthorized_client",
            description: description.into(),
        }
    }

    pub fn invalid_token(description: impl Into<String>) -> SmartError {
        SmartError::OAuth {
            status: 401,
            error: "invalid_token",
            description: description.into(),
        }
    }

    /// The message for a person or a client (never contains secrets).
    pub fn message(&self) -> String {
        match self {
            SmartError::OAuth { description, .. } => description.clone(),
            SmartError::Unavailable(_) => "The database is unavailable; retry later".to_string(),
            SmartError::Internal(_) => "Internal server error".to_string(),
        }
    }
}

impl From<StoreError> for SmartError {
    fn from(e: StoreError) -> SmartError {
        match e {
            StoreError::Unavailable(m) | StoreError::Contention(m) | StoreError::TooCostly(m) => {
                SmartError::Unavailable(m)
            }
            StoreError::Conflict => SmartError::Internal("unexpected conflict".to_string()),
            StoreError::Internal(m) => SmartError::Internal(m),
        }
    }
}

/// The authorization server of one node: its store, settings, key cache and the cache of
/// clients' JWK Sets.
pub struct Smart {
    pub store: Arc<dyn AuthStore>,
    pub config: SmartConfig,
    pub keys: keys::KeyRing,
    pub client_keys: assertion::JwksCache,
}

impl Smart {
    /// The server on a store; the first signing key is made on first use (or by
    /// [`Smart::prepare`]).
    pub fn new(store: Arc<dyn AuthStore>, config: SmartConfig) -> Smart {
        Smart {
            store,
            config,
            keys: keys::KeyRing::default(),
            client_keys: assertion::JwksCache::default(),
        }
    }

    /// Creates the first signing key if there is none and loads the keys, so a problem shows
    /// at start rather than on the first sign-in.
    pub async fn prepare(&self) -> Result<(), SmartError> {
        self.keys.ensure(self.store.as_ref(), now_ms()).await
    }

    /// The JWK Set published at the jwks_uri.
    pub async fn jwks(&self) -> Result<serde_json::Value, SmartError> {
        self.keys.signing(self.store.as_ref()).await?;
        self.keys
            .jwks(
                self.store.as_ref(),
                now_ms(),
                self.config.access_token_ttl_secs * 1000,
            )
            .await
    }
}

/// The web app's client: a public client of the server's own (`/app/`), registered on first
/// use. Its one redirect URI is the callback on the origin of the FHIR base being signed in
/// to, so it works under any base URL without registration by hand; it is otherwise a client
/// like any other (an operator may disable it, its tokens are checked and audited alike).
pub const WEB_CLIENT_ID: &str = "healporium-web";

/// The web app's callback path, on the server's origin.
pub const WEB_CALLBACK: &str = "/app/callback";

/// What the web app may be granted; a user's role and the patient context narrow it.
pub const WEB_SCOPES: &str = "openid fhirUser online_access patient/*.cruds user/*.cruds";

/// The origin (`scheme://host[:port]`) of an absolute URL.
pub fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// The web app's redirect URI for the FHIR base `fhir_base`.
pub fn web_redirect(fhir_base: &str) -> String {
    format!("{}{WEB_CALLBACK}", origin_of(fhir_base))
}

impl Smart {
    /// Registers the web app's client unless it exists (a disabled one stays disabled).
    pub async fn ensure_web_client(&self, fhir_base: &str) -> Result<(), SmartError> {
        if self.store.client(WEB_CLIENT_ID).await?.is_some() {
            return Ok(());
        }
        let client = accounts::NewClient {
            client_id: Some(WEB_CLIENT_ID.to_string()),
            name: "Healporium".to_string(),
            kind: accounts::ClientKind::Public,
            redirect_uris: vec![web_redirect(fhir_base)],
            scopes: WEB_SCOPES.to_string(),
            jwks: None,
            jwks_url: None,
        };
        match accounts::add_client(self.store.as_ref(), client, self.config.password_cost).await {
            Ok(_) => Ok(()),
            // another node registered it first
            Err(e) if e.contains("exists already") => Ok(()),
            Err(e) => Err(SmartError::Internal(e)),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    crate::fhir::types::Instant::now().millis()
}

/// The spellings of one FHIR base URL a token or a code is good for: the URL itself and,
/// when its host is a loopback name (`localhost`, `127.0.0.1`, `[::1]`), the same URL with
/// each of the others — a browser on `localhost` and a `curl` on `127.0.0.1` reach the same
/// server. Any other host stands only for itself.
pub fn base_aliases(base: &str) -> Vec<String> {
    let base = base.trim_end_matches('/');
    let Some((scheme, rest)) = base.split_once("://") else {
        return vec![base.to_string()];
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];
    if !LOOPBACK.iter().any(|l| l.eq_ignore_ascii_case(host)) {
        return vec![base.to_string()];
    }
    let mut out = vec![base.to_string()];
    for name in LOOPBACK {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let alias = format!("{scheme}://{name}{port}{path}");
        if !out.contains(&alias) {
            out.push(alias);
        }
    }
    out
}

/// Whether `a` and `b` name the same FHIR base ([`base_aliases`]).
pub fn same_base(a: &str, b: &str) -> bool {
    base_aliases(a).iter().any(|x| x == b.trim_end_matches('/'))
}

#[cfg(test)]
mod base_tests {
    use super::*;

    #[test]
    fn loopback_names_are_one_server_other_hosts_are_not() {
        assert!(same_base(
            "http://127.0.0.1:8080/fhir",
            "http://localhost:8080/fhir"
        ));
        assert!(same_base(
            "http://localhost:8080/fhir",
            "http://[::1]:8080/fhir/"
        ));
        assert!(same_base("http://localhost/fhir", "http://127.0.0.1/fhir"));
        assert!(!same_base(
            "http://127.0.0.1:8080/fhir",
            "http://localhost:8081/fhir"
        ));
        assert!(!same_base(
            "http://127.0.0.1:8080/fhir",
            "http://localhost:8080/other"
        ));
        assert!(!same_base(
            "https://127.0.0.1:8080/fhir",
            "http://localhost:8080/fhir"
        ));
        assert!(!same_base(
            "https://fhir.example/fhir",
            "https://localhost/fhir"
        ));
        assert!(!same_base(
            "http://localhost.evil.example:8080/fhir",
            "http://127.0.0.1:8080/fhir"
        ));
        assert_eq!(base_aliases("https://fhir.example/fhir").len(), 1);
    }
}
