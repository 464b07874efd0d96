//! Accounts and clients: parsing what `healporium user add` / `client add` (and `--demo`)
//! register, storing it (passwords and secrets only as argon2 hashes), reading it back (a
//! disabled account or client reads as absent: every flow refuses it as unknown), and
//! deciding which requested scopes a client and user may be granted.

use super::SmartError;
use super::crypto::{self, PasswordCost};
use crate::auth::{ScopeContext, parse_scope};
use crate::fhir::types::is_valid_id;
use crate::store::auth::{ClientRow, UserRow};
use crate::store::{AuthStore, StoreError};

pub use crate::auth::Role;

/// A user account as the server uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub role: Role,
    /// `Patient/123`, `Practitioner/7`…
    pub fhir_user: Option<String>,
    password_hash: String,
}

impl User {
    /// The id of the Patient a patient user is.
    pub fn own_patient(&self) -> Option<&str> {
        if self.role != Role::Patient {
            return None;
        }
        self.fhir_user.as_deref()?.strip_prefix("Patient/")
    }

    /// A caregiver: a patient-role account whose `fhirUser` is a RelatedPerson; they act
    /// for that RelatedPerson's patient, confined like the patient's own token.
    pub fn is_caregiver(&self) -> bool {
        self.role == Role::Patient
            && self
                .fhir_user
                .as_deref()
                .is_some_and(|f| f.starts_with("RelatedPerson/"))
    }

    /// A user with no password, for unit tests of what is shown about a user.
    #[cfg(test)]
    pub(crate) fn for_tests(username: &str, role: Role, fhir_user: Option<&str>) -> User {
        User {
            username: username.to_string(),
            role,
            fhir_user: fhir_user.map(str::to_string),
            password_hash: String::new(),
        }
    }
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    pub fhir_user: Option<String>,
}

const FHIR_USER_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Person",
];

fn check_fhir_user(role: Role, fhir_user: Option<&str>) -> Result<(), String> {
    match fhir_user {
        None if role == Role::Patient => {
            Err("a patient needs --fhir-user Patient/<id>".to_string())
        }
        None => Ok(()),
        Some(f) => {
            let (t, id) = f.split_once('/').unwrap_or(("", ""));
            if !FHIR_USER_TYPES.contains(&t) || !is_valid_id(id) {
                return Err(format!(
                    "--fhir-user '{f}' is not a reference such as Patient/123 or Practitioner/7"
                ));
            }
            // a caregiver's account is the RelatedPerson through which they act for a patient
            if role == Role::Patient && t != "Patient" && t != "RelatedPerson" {
                return Err(
                    "a patient's --fhir-user is Patient/<id> (or a caregiver's RelatedPerson/<id>)"
                        .to_string(),
                );
            }
            Ok(())
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._@".contains(&b))
}

/// A password long enough to be accepted.
pub(super) fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < 8 {
        return Err("the password needs at least 8 characters".to_string());
    }
    Ok(())
}

/// Registers a user; one-line errors for bad input or a taken name.
pub async fn add_user(
    store: &dyn AuthStore,
    user: NewUser,
    cost: PasswordCost,
) -> Result<(), String> {
    if !valid_name(&user.username) {
        return Err(format!(
            "username '{}' must be 1-128 of A-Z a-z 0-9 - . _ @",
            user.username.chars().take(40).collect::<String>()
        ));
    }
    check_password(&user.password)?;
    check_fhir_user(user.role, user.fhir_user.as_deref())?;
    let hash = crypto::hash_password(&user.password, cost)?;
    let row = UserRow {
        username: user.username.clone(),
        password_hash: hash,
        role: user.role.as_str().to_string(),
        fhir_user: user.fhir_user,
        created: super::now_ms(),
        disabled: false,
    };
    store.insert_user(&row).await.map_err(|e| match e {
        StoreError::Conflict => format!("user '{}' exists already", user.username),
        e => format!("cannot store the user: {e}"),
    })
}

/// The user, if the password is right. Unknown users cost as much time as wrong passwords.
pub async fn sign_in(
    store: &dyn AuthStore,
    username: &str,
    password: &str,
) -> Result<Option<User>, SmartError> {
    let found = user(store, username).await?;
    let ok = match &found {
        Some(u) => crypto::verify_password(password, &u.password_hash),
        None => {
            // burn comparable time so response times do not reveal which names exist
            let _ = crypto::hash_password(password, PasswordCost::Standard);
            false
        }
    };
    Ok(found.filter(|_| ok))
}

/// The account named `username`; None when there is none or it is disabled.
pub async fn user(store: &dyn AuthStore, username: &str) -> Result<Option<User>, SmartError> {
    let Some(row) = store.user(username).await?.filter(|r| !r.disabled) else {
        return Ok(None);
    };
    let role = Role::parse(&row.role).map_err(SmartError::Internal)?;
    Ok(Some(User {
        username: row.username,
        role,
        fhir_user: row.fhir_user,
        password_hash: row.password_hash,
    }))
}

/// How a client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A browser or native app without a secret (PKCE only).
    Public,
    /// A confidential app with a client secret (client_secret_basic).
    Confidential,
    /// An asymmetric client (private_key_jwt) — backend services and confidential apps.
    Backend,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Public => "public",
            ClientKind::Confidential => "confidential",
            ClientKind::Backend => "backend",
        }
    }

    pub fn parse(s: &str) -> Result<ClientKind, String> {
        match s {
            "public" => Ok(ClientKind::Public),
            "confidential" => Ok(ClientKind::Confidential),
            "backend" => Ok(ClientKind::Backend),
            _ => Err(format!(
                "unknown client type '{s}' (public, confidential, backend)"
            )),
        }
    }
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    /// The scopes the client may be granted.
    pub scopes: Vec<String>,
    pub jwks: Option<serde_json::Value>,
    pub jwks_url: Option<String>,
    secret_hash: Option<String>,
}

impl Client {
    /// Whether `secret` is this client's secret.
    pub fn secret_matches(&self, secret: &str) -> bool {
        self.secret_hash
            .as_deref()
            .is_some_and(|h| crypto::verify_password(secret, h))
    }
}

/// A client to register.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// None: generate one.
    pub client_id: Option<String>,
    pub name: String,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    /// Space-separated scopes the client may be granted.
    pub scopes: String,
    /// A JWK Set (JSON text), for backend clients.
    pub jwks: Option<String>,
    pub jwks_url: Option<String>,
}

/// What registration produced: the client id and, for confidential clients, the secret —
/// shown once, stored only as a hash.
#[derive(Debug, Clone)]
pub struct Registered {
    pub client_id: String,
    pub secret: Option<String>,
}

fn valid_redirect(uri: &str) -> bool {
    let scheme_ok = uri.starts_with("https://")
        || uri.starts_with("http://")
        // native apps: a private-use scheme such as com.example.app:/callback
        || uri.split_once(':').is_some_and(|(s, _)| s.contains('.'));
    scheme_ok && !uri.contains('#') && !uri.contains(char::is_whitespace) && uri.len() <= 2000
}

/// Registers a client; one-line errors for bad input or a taken id.
pub async fn add_client(
    store: &dyn AuthStore,
    client: NewClient,
    cost: PasswordCost,
) -> Result<Registered, String> {
    let client_id = client
        .client_id
        .clone()
        .unwrap_or_else(|| crypto::random_token(16));
    if !valid_name(&client_id) {
        return Err(format!(
            "client id '{}' must be 1-128 of A-Z a-z 0-9 - . _ @",
            client_id.chars().take(40).collect::<String>()
        ));
    }
    if let Some(bad) = client.redirect_uris.iter().find(|u| !valid_redirect(u)) {
        return Err(format!(
            "--redirect-uri '{}' is not an absolute URI without fragment",
            bad.chars().take(80).collect::<String>()
        ));
    }
    let scopes: Vec<&str> = client.scopes.split_whitespace().collect();
    if scopes.is_empty() {
        return Err("--scope: give the scopes the client may be granted".to_string());
    }
    if client.kind == ClientKind::Public && client.redirect_uris.is_empty() {
        return Err("a public client needs at least one --redirect-uri".to_string());
    }
    if client.kind == ClientKind::Backend && client.jwks.is_none() == client.jwks_url.is_none() {
        return Err("a backend client needs exactly one of --jwks-file and --jwks-url".to_string());
    }
    let jwks = match &client.jwks {
        None => None,
        Some(text) => {
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|_| "the JWKS file is not JSON".to_string())?;
            let keys = v
                .get("keys")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| "the JWKS has no \"keys\" array".to_string())?;
            if keys.is_empty() || keys.iter().any(|k| k.get("d").is_some()) {
                return Err(
                    "the JWKS must hold public keys only (no \"d\"), at least one".to_string(),
                );
            }
            Some(v.to_string())
        }
    };
    if let Some(url) = &client.jwks_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err("--jwks-url must be an http(s) URL".to_string());
    }
    let secret = (client.kind == ClientKind::Confidential).then(|| crypto::random_token(32));
    let secret_hash = match &secret {
        Some(s) => Some(crypto::hash_password(s, cost)?),
        None => None,
    };
    let row = ClientRow {
        client_id: client_id.clone(),
        name: client.name.clone(),
        kind: client.kind.as_str().to_string(),
        secret_hash,
        redirect_uris: serde_json::to_string(&client.redirect_uris).map_err(|e| e.to_string())?,
        scopes: scopes.join(" "),
        jwks,
        jwks_url: client.jwks_url.clone(),
        created: super::now_ms(),
        disabled: false,
    };
    store.insert_client(&row).await.map_err(|e| match e {
        StoreError::Conflict => format!("client '{client_id}' exists already"),
        e => format!("cannot store the client: {e}"),
    })?;
    Ok(Registered { client_id, secret })
}

/// The client `client_id`; None when there is none or it is disabled.
pub async fn client(store: &dyn AuthStore, client_id: &str) -> Result<Option<Client>, SmartError> {
    let Some(row) = store.client(client_id).await?.filter(|r| !r.disabled) else {
        return Ok(None);
    };
    let kind = ClientKind::parse(&row.kind).map_err(SmartError::Internal)?;
    let redirect_uris: Vec<String> = serde_json::from_str(&row.redirect_uris)
        .map_err(|e| SmartError::Internal(format!("stored redirect URIs: {e}")))?;
    let jwks = match row.jwks {
        Some(t) => Some(
            serde_json::from_str(&t)
                .map_err(|e| SmartError::Internal(format!("stored JWKS: {e}")))?,
        ),
        None => None,
    };
    Ok(Some(Client {
        client_id: row.client_id,
        name: row.name,
        kind,
        redirect_uris,
        scopes: row.scopes.split_whitespace().map(str::to_string).collect(),
        jwks,
        jwks_url: row.jwks_url,
        secret_hash: row.secret_hash,
    }))
}

/// Scopes that grant no data but identity, context or refresh.
pub const CONTEXT_SCOPES: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
];

/// Which of the requested scopes may be granted: resource scopes covered by one of the
/// client's scopes and of an allowed context; identity/context scopes when `user_flow`.
/// Unknown scopes are dropped; the order of the request is kept.
pub fn grantable(
    requested: &str,
    client: &Client,
    contexts: &[ScopeContext],
    user_flow: bool,
) -> Vec<String> {
    let allowed: Vec<_> = client
        .scopes
        .iter()
        .filter_map(|s| parse_scope(s))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for s in requested.split_whitespace() {
        if out.iter().any(|o| o == s) {
            continue;
        }
        let ok = match parse_scope(s) {
            Some(g) => contexts.contains(&g.context) && allowed.iter().any(|a| a.covers(&g)),
            None => user_flow && CONTEXT_SCOPES.contains(&s),
        };
        if ok {
            out.push(s.to_string());
        }
    }
    out
}
