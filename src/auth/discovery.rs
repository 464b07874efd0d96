//! What the server tells clients about its authorization: the endpoint URLs, the SMART
//! configuration document (`.well-known/smart-configuration`), the OpenID provider metadata
//! and the CapabilityStatement's `rest.security` block. Pure functions of the FHIR base URL,
//! shared by the API edge and the capabilities interaction so they never disagree.

use serde_json::{Value, json};

/// Whether the server requires tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Security {
    /// No authorization (`--insecure-no-auth`, and the default of embedded test servers).
    #[default]
    Off,
    /// SMART on FHIR: every FHIR request but `metadata` needs a bearer token.
    Smart,
}

/// The authorization server's URLs for one FHIR base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The FHIR base URL: also the token issuer and the `aud` of access tokens.
    pub issuer: String,
    pub authorize: String,
    pub token: String,
    pub introspect: String,
    pub revoke: String,
    pub jwks: String,
    pub launch: String,
}

/// Path of the authorization endpoints below the server's origin.
pub const AUTH_PATH: &str = "/auth";

/// The capabilities of SMART App Launch 2.x this server implements.
pub const CAPABILITIES: &[&str] = &[
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-standalone-patient",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-banner",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "permission-online",
    "authorize-post",
];

/// Scopes listed in the discovery documents (resource scopes follow the v1/v2 grammar).
pub const SCOPES_SUPPORTED: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.cruds",
    "patient/*.read",
    "patient/*.write",
    "user/*.rs",
    "user/*.cruds",
    "user/*.read",
    "user/*.write",
    "system/*.rs",
    "system/*.cruds",
    "system/*.read",
    "system/*.write",
];

impl Endpoints {
    /// The endpoints for a FHIR base such as `https://fhir.example.org/fhir` (prefix `/fhir`):
    /// `https://fhir.example.org/auth/…`.
    pub fn new(fhir_base: &str, prefix: &str) -> Endpoints {
        let base = fhir_base.trim_end_matches('/');
        let origin = base.strip_suffix(prefix).unwrap_or(base);
        let at = |p: &str| format!("{origin}{AUTH_PATH}/{p}");
        Endpoints {
            issuer: base.to_string(),
            authorize: at("authorize"),
            token: at("token"),
            introspect: at("introspect"),
            revoke: at("revoke"),
            jwks: at("jwks"),
            launch: at("launch"),
        }
    }

    /// `GET [base]/.well-known/smart-configuration`.
    pub fn smart_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": self.jwks,
            "authorization_endpoint": self.authorize,
            "token_endpoint": self.token,
            "introspection_endpoint": self.introspect,
            "revocation_endpoint": self.revoke,
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "response_types_supported": ["code"],
            "token_endpoint_auth_methods_supported":
                ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": SCOPES_SUPPORTED,
            "code_challenge_methods_supported": ["S256"],
            "capabilities": CAPABILITIES,
        })
    }

    /// OpenID Provider metadata (`.well-known/openid-configuration`).
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": self.authorize,
            "token_endpoint": self.token,
            "jwks_uri": self.jwks,
            "introspection_endpoint": self.introspect,
            "revocation_endpoint": self.revoke,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported":
                ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
            "scopes_supported": SCOPES_SUPPORTED,
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
            "code_challenge_methods_supported": ["S256"],
        })
    }

    /// `CapabilityStatement.rest.security` of a server that requires SMART tokens.
    pub fn capability_security(&self) -> Value {
        json!({
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": self.authorize},
                    {"url": "token", "valueUri": self.token},
                    {"url": "introspect", "valueUri": self.introspect},
                    {"url": "revoke", "valueUri": self.revoke},
                ],
            }],
            "cors": true,
            "service": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                    "display": "SMART-on-FHIR",
                }],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }],
            "description": "SMART App Launch 2.x: every request except GET metadata needs an \
                OAuth2 bearer token; see .well-known/smart-configuration.",
        })
    }
}

/// The warning an insecure server shows in its CapabilityStatement and log.
pub const INSECURE_WARNING: &str = "WARNING: authorization is off (--insecure-no-auth): anyone \
    who can reach this server can read and change every record. Use only for local experiments.";

/// `CapabilityStatement.rest.security` of a server without authorization.
pub fn insecure_security() -> Value {
    json!({ "cors": true, "description": INSECURE_WARNING })
}

/// `.well-known/smart-configuration` of a server without authorization: no authorization
/// or token endpoint (an app launches against it as an open server), no grants, no scopes,
/// and the warning.
pub fn insecure_smart_configuration() -> Value {
    json!({
        "grant_types_supported": [],
        "response_types_supported": [],
        "scopes_supported": [],
        "code_challenge_methods_supported": [],
        "capabilities": [],
        "authorization_required": false,
        "description": INSECURE_WARNING,
    })
}

/// Whether the FHIR API requires SMART access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No authorization: every request may do everything (`--insecure-no-auth`; the default
    /// of embedded servers so tests and benchmarks run without tokens).
    #[default]
    Off,
    /// Every FHIR request but `GET metadata` needs a valid bearer token; the token's
    /// `auth::Principal` travels in the request extensions.
    On,
}

/// The FHIR base URL of a request: the configured one, else `http://{Host}{prefix}` when the
/// `Host` header is a well-formed loopback name or one of `trusted`, else `localhost`.
pub fn fhir_base(
    configured: Option<&str>,
    host: Option<&str>,
    trusted: &[String],
    prefix: &str,
) -> String {
    if let Some(b) = configured {
        return b.to_string();
    }
    let host = host
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .filter(|h| trusted_host(h, trusted))
        .unwrap_or("localhost");
    format!("http://{host}{prefix}")
}

/// Whether `host` (with or without a port) is a loopback name or one of `trusted`.
fn trusted_host(host: &str, trusted: &[String]) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if !n.ends_with(']') || host.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() {
                n
            } else {
                host
            }
        }
        _ => host,
    };
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
        || trusted.iter().any(|t| t.eq_ignore_ascii_case(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_base() {
        let e = Endpoints::new("https://fhir.example.org/fhir", "/fhir");
        assert_eq!(e.issuer, "https://fhir.example.org/fhir");
        assert_eq!(e.token, "https://fhir.example.org/auth/token");
        let c = e.smart_configuration();
        assert_eq!(c["code_challenge_methods_supported"], json!(["S256"]));
        assert!(
            c["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!("permission-v2"))
        );
    }
}
