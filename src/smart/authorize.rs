//! The authorization endpoint's flow: validate the request (client, exact redirect URI, PKCE
//! S256, `aud` = this FHIR server, scopes, EHR `launch`), keep it as a pending request, let
//! the user sign in, then consent (choosing a patient when a practitioner launches standalone
//! with `launch/patient`) and redirect back with a single-use code. Also EHR launch contexts.

use super::accounts::{self, Role, User};
use super::tokens::Grant;
use super::{Smart, SmartError, crypto, now_ms};
use crate::auth::ScopeContext;
use crate::fhir::types::is_valid_id;
use crate::store::auth::LaunchRow;
use serde::{Deserialize, Serialize};

/// The parameters of an authorization request (query of GET or form of POST).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub launch: Option<String>,
    pub nonce: Option<String>,
}

/// A validated request waiting for sign-in and consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    /// The scopes that may be granted (requested ∩ allowed).
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub aud: String,
    /// EHR launch: the context the EHR created.
    pub launch_patient: Option<String>,
    pub launch_encounter: Option<String>,
    pub ehr_launch: bool,
    /// EHR launch: the user who created it, the only one who may complete it.
    #[serde(default)]
    pub launch_user: Option<String>,
}

impl Pending {
    pub fn has_scope(&self, s: &str) -> bool {
        self.scopes.iter().any(|x| x == s)
    }

    /// Whether `user` must pick the patient in context (standalone `launch/patient` by
    /// someone who is not a patient).
    pub fn needs_patient_pick(&self, user: &User) -> bool {
        !self.ehr_launch && self.has_scope("launch/patient") && user.role != Role::Patient
    }

    fn redirect_error(&self, error: &str, description: &str) -> String {
        redirect_with(
            &self.redirect_uri,
            &[
                ("error", error),
                ("error_description", description),
                ("state", self.state.as_deref().unwrap_or("")),
            ],
        )
    }
}

/// Why an authorization step failed.
#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// The client cannot be trusted with a redirect (unknown client, bad redirect URI, an
    /// expired request): tell the user on a page.
    Page(String),
    /// Send the user back to the client with an OAuth error.
    Redirect(String),
    /// The server could not answer.
    Failure(SmartError),
}

impl From<SmartError> for AuthorizeError {
    fn from(e: SmartError) -> Self {
        AuthorizeError::Failure(e)
    }
}

/// The result of a sign-in.
pub enum SignIn {
    /// Signed in: ask for consent.
    Consent(Pending, User),
    /// Wrong name or password: show the form again.
    Failed(Pending),
    /// Too many failures for this account or address: locked for a while (the password was
    /// not checked).
    Locked(Pending),
    /// Too many failures on this request: it is gone; the app must start again.
    Ended,
}

/// Failed sign-ins one pending request survives.
pub const REQUEST_ATTEMPTS: i64 = 3;
/// Failures (within [`FAILURE_WINDOW_MS`]) after which an account is locked…
pub const ACCOUNT_ATTEMPTS: i64 = 5;
/// …and after which an address is.
pub const ADDRESS_ATTEMPTS: i64 = 20;
/// Failures older than this are forgotten.
pub const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;
/// The first lock lasts this long and doubles with every further failure…
const FIRST_LOCK_MS: i64 = 30 * 1000;
/// …up to this.
const LONGEST_LOCK_MS: i64 = 15 * 60 * 1000;

/// How long a key with `failures` (over `threshold`) stays locked.
fn lock_ms(failures: i64, threshold: i64) -> Option<i64> {
    let over = failures - threshold;
    (over >= 0).then(|| {
        let doublings = u32::try_from(over.min(10)).unwrap_or(10);
        (FIRST_LOCK_MS << doublings).min(LONGEST_LOCK_MS)
    })
}

/// `uri` with `pairs` added to its query (empty values left out).
pub fn redirect_with(uri: &str, pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{query}")
}

impl Smart {
    /// Validates an authorization request for the FHIR base `fhir_base` and stores it as
    /// pending; returns the opaque request id for the sign-in form.
    pub async fn begin(
        &self,
        p: &AuthorizeParams,
        fhir_base: &str,
    ) -> Result<(String, Pending), AuthorizeError> {
        let client_id = p
            .client_id
            .as_deref()
            .ok_or_else(|| AuthorizeError::Page("The request names no client_id".into()))?;
        let client = accounts::client(self.store.as_ref(), client_id)
            .await?
            .ok_or_else(|| AuthorizeError::Page("The application is not registered".into()))?;
        let redirect_uri = match (&p.redirect_uri, client.redirect_uris.as_slice()) {
            (Some(r), registered) if registered.iter().any(|u| u == r) => r.clone(),
            // the web app returns to the origin it is served from
            (Some(r), _)
                if client.client_id == super::WEB_CLIENT_ID
                    && *r == super::web_redirect(fhir_base) =>
            {
                r.clone()
            }
            (None, [only]) => only.clone(),
            _ => {
                return Err(AuthorizeError::Page(
                    "The redirect_uri is not registered for this application".into(),
                ));
            }
        };
        let mut pending = Pending {
            client_id: client.client_id.clone(),
            client_name: client.name.clone(),
            redirect_uri,
            scopes: Vec::new(),
            state: p.state.clone(),
            code_challenge: String::new(),
            nonce: p.nonce.clone(),
            aud: fhir_base.to_string(),
            launch_patient: None,
            launch_encounter: None,
            ehr_launch: false,
            launch_user: None,
        };
        let fail = |pending: &Pending, error: &str, description: &str| {
            AuthorizeError::Redirect(pending.redirect_error(error, description))
        };
        if p.response_type.as_deref() != Some("code") {
            return Err(fail(
                &pending,
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        match (&p.code_challenge, p.code_challenge_method.as_deref()) {
            (Some(c), Some("S256")) if crypto::valid_challenge(c) => {
                pending.code_challenge = c.clone();
            }
            _ => {
                return Err(fail(
                    &pending,
                    "invalid_request",
                    "PKCE is required: code_challenge with code_challenge_method=S256",
                ));
            }
        }
        if !p
            .aud
            .as_deref()
            .is_some_and(|a| super::same_base(fhir_base, a))
        {
            return Err(fail(
                &pending,
                "invalid_request",
                "aud must be this server's FHIR base URL",
            ));
        }
        let requested = p.scope.clone().unwrap_or_default();
        pending.scopes = accounts::grantable(
            &requested,
            &client,
            &[ScopeContext::Patient, ScopeContext::User],
            true,
        );
        if let Some(launch) = &p.launch {
            // single use: taken whether or not what follows succeeds
            let ctx = self
                .store
                .take_launch(launch, now_ms())
                .await
                .map_err(SmartError::from)?
                .ok_or_else(|| {
                    fail(
                        &pending,
                        "invalid_request",
                        "Unknown, expired or already used launch",
                    )
                })?;
            if ctx.client_id.as_deref() != Some(client.client_id.as_str()) {
                return Err(fail(
                    &pending,
                    "invalid_request",
                    "The launch was created for another application",
                ));
            }
            if !pending.has_scope("launch") {
                return Err(fail(
                    &pending,
                    "invalid_scope",
                    "An EHR launch needs the launch scope",
                ));
            }
            pending.ehr_launch = true;
            pending.launch_patient = ctx.patient;
            pending.launch_encounter = ctx.encounter;
            pending.launch_user = Some(ctx.created_by);
        } else {
            pending.scopes.retain(|s| s != "launch");
        }
        if pending.scopes.is_empty() {
            return Err(fail(
                &pending,
                "invalid_scope",
                "None of the requested scopes may be granted to this application",
            ));
        }
        let id = crypto::random_token(32);
        let now = now_ms();
        let json = serde_json::to_string(&pending)
            .map_err(|e| SmartError::Internal(format!("pending request: {e}")))?;
        self.store
            .insert_request(
                &crypto::digest(&id),
                &json,
                now + self.config.request_ttl_secs * 1000,
            )
            .await
            .map_err(SmartError::from)?;
        Ok((id, pending))
    }

    /// A pending request and who signed in for it.
    pub async fn pending(
        &self,
        request_id: &str,
    ) -> Result<(Pending, Option<User>), AuthorizeError> {
        let row = self
            .store
            .request(&crypto::digest(request_id), now_ms())
            .await
            .map_err(SmartError::from)?
            .ok_or_else(expired)?;
        let pending: Pending = serde_json::from_str(&row.params)
            .map_err(|e| SmartError::Internal(format!("pending request: {e}")))?;
        let user = match row.username {
            Some(u) => accounts::user(self.store.as_ref(), &u).await?,
            None => None,
        };
        Ok((pending, user))
    }

    /// Checks the credentials for a pending request, sent from `address`. Failures count
    /// against the request (it ends after [`REQUEST_ATTEMPTS`]), the account name (known or
    /// not, so a lock says nothing about which names exist) and the address; a locked
    /// account or address is refused without its password being checked.
    pub async fn sign_in(
        &self,
        request_id: &str,
        username: &str,
        password: &str,
        address: Option<&str>,
    ) -> Result<SignIn, AuthorizeError> {
        let (pending, _) = self.pending(request_id).await?;
        let now = now_ms();
        let account = format!("user:{}", username.to_lowercase());
        let addr = address.map(|a| format!("addr:{a}"));
        let mut keys = vec![(account.clone(), ACCOUNT_ATTEMPTS)];
        keys.extend(addr.iter().map(|a| (a.clone(), ADDRESS_ATTEMPTS)));
        for (key, _) in &keys {
            if self
                .store
                .locked_until(key)
                .await
                .map_err(SmartError::from)?
                > now
            {
                return Ok(SignIn::Locked(pending));
            }
        }
        match accounts::sign_in(self.store.as_ref(), username, password).await? {
            Some(user) => {
                self.store
                    .set_request_user(&crypto::digest(request_id), &user.username)
                    .await
                    .map_err(SmartError::from)?;
                self.store
                    .clear_failures(&account)
                    .await
                    .map_err(SmartError::from)?;
                Ok(SignIn::Consent(pending, user))
            }
            None => {
                for (key, threshold) in &keys {
                    let n = self
                        .store
                        .record_failure(key, now, now - FAILURE_WINDOW_MS)
                        .await
                        .map_err(SmartError::from)?;
                    if let Some(ms) = lock_ms(n, *threshold) {
                        self.store
                            .lock(key, now + ms)
                            .await
                            .map_err(SmartError::from)?;
                    }
                }
                let digest = crypto::digest(request_id);
                let n = self
                    .store
                    .request_failed(&digest)
                    .await
                    .map_err(SmartError::from)?;
                if n >= REQUEST_ATTEMPTS {
                    self.store
                        .take_request(&digest, now)
                        .await
                        .map_err(SmartError::from)?;
                    return Ok(SignIn::Ended);
                }
                Ok(SignIn::Failed(pending))
            }
        }
    }

    /// Ends a pending request with the user's decision: the redirect back to the client,
    /// with a code (approve) or `access_denied`. `patient` is the patient the user picked
    /// (its existence checked by the caller).
    pub async fn decide(
        &self,
        request_id: &str,
        approve: bool,
        patient: Option<&str>,
    ) -> Result<String, AuthorizeError> {
        let row = self
            .store
            .take_request(&crypto::digest(request_id), now_ms())
            .await
            .map_err(SmartError::from)?
            .ok_or_else(expired)?;
        let pending: Pending = serde_json::from_str(&row.params)
            .map_err(|e| SmartError::Internal(format!("pending request: {e}")))?;
        let username = row
            .username
            .ok_or_else(|| AuthorizeError::Page("Sign in first".into()))?;
        let user = accounts::user(self.store.as_ref(), &username)
            .await?
            .ok_or_else(|| AuthorizeError::Page("The account no longer exists".into()))?;
        if !approve {
            return Err(AuthorizeError::Redirect(
                pending.redirect_error("access_denied", "The user denied the request"),
            ));
        }
        if pending.ehr_launch && pending.launch_user.as_deref() != Some(user.username.as_str()) {
            // a launch is bound to the user who created it in the EHR
            return Err(AuthorizeError::Redirect(pending.redirect_error(
                "access_denied",
                "The launch was created for another user",
            )));
        }
        let mut scopes = pending.scopes.clone();
        if user.role == Role::Patient {
            // a patient acts for themself only
            scopes.retain(|s| !s.starts_with("user/"));
        }
        let patient = if pending.ehr_launch {
            pending.launch_patient.clone()
        } else if let Some(own) = user.own_patient() {
            Some(own.to_string())
        } else if user.is_caregiver() {
            // the patient of the caregiver's RelatedPerson, resolved by the caller
            patient.filter(|p| is_valid_id(p)).map(str::to_string)
        } else if pending.needs_patient_pick(&user) {
            match patient {
                Some(p) if is_valid_id(p) => Some(p.to_string()),
                _ => {
                    return Err(AuthorizeError::Page(
                        "Choose the patient this application may see".into(),
                    ));
                }
            }
        } else {
            None
        };
        if patient.is_none() {
            scopes.retain(|s| s != "launch/patient");
        }
        let grant = Grant {
            client_id: pending.client_id.clone(),
            scope: scopes.join(" "),
            username: Some(user.username.clone()),
            fhir_user: user.fhir_user.clone(),
            patient,
            encounter: pending
                .launch_encounter
                .clone()
                .filter(|_| pending.ehr_launch),
            need_patient_banner: !pending.ehr_launch,
            nonce: pending.nonce.clone(),
            aud: pending.aud.clone(),
            family: None,
        };
        let code = crypto::random_token(32);
        let stored = CodeGrant {
            grant,
            redirect_uri: pending.redirect_uri.clone(),
            code_challenge: pending.code_challenge.clone(),
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| SmartError::Internal(format!("code grant: {e}")))?;
        let now = now_ms();
        self.store
            .insert_code(
                &crypto::digest(&code),
                &json,
                now + self.config.code_ttl_secs * 1000,
            )
            .await
            .map_err(SmartError::from)?;
        Ok(redirect_with(
            &pending.redirect_uri,
            &[
                ("code", code.as_str()),
                ("state", pending.state.as_deref().unwrap_or("")),
            ],
        ))
    }

    /// Creates an EHR launch context for `patient` (and `encounter`) on behalf of a signed-in
    /// practitioner or admin `username`, for the app `client_id`; returns the opaque launch
    /// id. The launch works once, for that user and that app, within the launch lifetime.
    pub async fn create_launch(
        &self,
        username: &str,
        client_id: &str,
        patient: Option<&str>,
        encounter: Option<&str>,
    ) -> Result<String, SmartError> {
        if accounts::client(self.store.as_ref(), client_id)
            .await?
            .is_none()
        {
            return Err(SmartError::invalid_request(
                "client_id names no registered application",
            ));
        }
        let user = accounts::user(self.store.as_ref(), username)
            .await?
            .ok_or_else(|| SmartError::invalid_token("The token's user no longer exists"))?;
        if !matches!(user.role, Role::Practitioner | Role::Admin) {
            return Err(SmartError::OAuth {
                status: 403,
                error: "insufficient_scope",
                description: "Only practitioners and admins create EHR launches".into(),
            });
        }
        for id in [patient, encounter].into_iter().flatten() {
            if !is_valid_id(id) {
                return Err(SmartError::invalid_request(
                    "patient and encounter are FHIR ids",
                ));
            }
        }
        let id = crypto::random_token(24);
        let now = now_ms();
        self.store
            .insert_launch(&LaunchRow {
                id: id.clone(),
                patient: patient.map(str::to_string),
                encounter: encounter.map(str::to_string),
                created_by: user.username,
                client_id: Some(client_id.to_string()),
                expires: now + self.config.launch_ttl_secs * 1000,
            })
            .await?;
        Ok(id)
    }
}

fn expired() -> AuthorizeError {
    AuthorizeError::Page(
        "This sign-in page has expired or was already used; start again from the application"
            .into(),
    )
}

/// What an authorization code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeGrant {
    pub grant: Grant,
    pub redirect_uri: String,
    pub code_challenge: String,
}
