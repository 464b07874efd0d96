//! L4: the HTTP edge of the SMART authorization server — discovery documents, the JWKS, the
//! authorization endpoint with its server-rendered sign-in, consent and patient-picker pages
//! (their HTML is in [`pages`](super::pages)), the token, introspection, revocation and
//! EHR-launch endpoints — and the middleware that requires a valid bearer token on every FHIR
//! request but `GET metadata`, putting the token's [`Principal`](crate::auth::Principal) into
//! the request extensions.
//!
//! Errors: RFC 6749 JSON at the OAuth endpoints, HTML pages in the browser flow, and a 401
//! OperationOutcome with `WWW-Authenticate: Bearer` on the FHIR API. Tokens, passwords,
//! secrets and bodies are never logged.

use super::pages::{ConsentPage, LoginPage, MessagePage, html};
use super::{ApiError, ApiState, FhirBody};
use crate::auth::discovery::Endpoints;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::interaction::search::{SearchRequest, SearchScope};
use crate::interaction::{self, FhirRequest, Interaction, Preconditions};
use crate::smart::accounts::User;
use crate::smart::authorize::{AuthorizeError, AuthorizeParams, SignIn};
use crate::smart::grants::{BasicCredentials, TokenForm};
use crate::smart::{Smart, SmartError};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// State of the authorization endpoints and the token middleware.
#[derive(Clone)]
pub struct SmartState {
    pub api: ApiState,
    pub smart: Arc<Smart>,
}

impl SmartState {
    fn base(&self, headers: &HeaderMap) -> String {
        super::base_url(&self.api, headers)
    }

    fn endpoints(&self, headers: &HeaderMap) -> Endpoints {
        Endpoints::new(&self.base(headers), &self.api.prefix)
    }
}

/// The authorization server's routes (merged beside the FHIR router).
pub fn router(state: SmartState) -> Router {
    let prefix = state.api.prefix.to_string();
    Router::new()
        .route(
            &format!("{prefix}/.well-known/smart-configuration"),
            get(smart_configuration),
        )
        .route(
            &format!("{prefix}/.well-known/openid-configuration"),
            get(openid_configuration),
        )
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/auth/jwks", get(jwks))
        .route("/auth/token", post(token))
        .route("/auth/introspect", post(introspect))
        .route("/auth/revoke", post(revoke))
        .route("/auth/launch", post(launch))
        .with_state(state)
}

/// The pages a person uses in a browser (authorize, sign-in, consent): same-origin only, so
/// mounted without the CORS layer the API and token endpoints have.
pub fn pages(state: SmartState) -> Router {
    Router::new()
        .route("/auth/authorize", get(authorize_get).post(authorize_post))
        .route("/auth/login", post(login))
        .route("/auth/consent", post(consent))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// the FHIR API's gate

/// Requires a valid bearer token on every FHIR request except `GET [base]/metadata`.
pub async fn require_token(
    State(state): State<SmartState>,
    mut req: Request,
    next: Next,
) -> Response {
    let prefix: &str = &state.api.prefix;
    let path = req.uri().path();
    // outside the FHIR prefix there is only the 404 fallback, and the HL7 v2 edge
    let outside = !path.starts_with(prefix) && path != super::hl7v2::PATH;
    let public = outside
        || (matches!(*req.method(), Method::GET | Method::HEAD)
            && path.trim_end_matches('/') == format!("{prefix}/metadata"));
    if public {
        return next.run(req).await;
    }
    let token = match bearer(req.headers()) {
        Some(t) => t,
        None => return unauthorized("An access token is required (Authorization: Bearer)"),
    };
    let aud = state.base(req.headers());
    match state.smart.verify(&token, &aud).await {
        Ok(claims) => {
            req.extensions_mut().insert(claims.principal());
            next.run(req).await
        }
        Err(SmartError::OAuth { description, .. }) => {
            let headers = req.headers().clone();
            let response = unauthorized(&description);
            audited(&state, &headers, None, None, "token-rejected", response).await
        }
        Err(e) => smart_failure(e),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// 401 with `WWW-Authenticate: Bearer … error="invalid_token"` and an OperationOutcome.
fn unauthorized(description: &str) -> Response {
    let mut resp = ApiError(Outcome::new(ErrorKind::Unauthorized, description)).into_response();
    let clean: String = description
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    let challenge = format!(
        "Bearer realm=\"healporium\", error=\"invalid_token\", error_description=\"{clean}\""
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

/// A database or server failure behind the gate, as an OperationOutcome.
fn smart_failure(e: SmartError) -> Response {
    let kind = match e {
        SmartError::Unavailable(_) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    ApiError(Outcome::new(kind, e.message())).into_response()
}

// ---------------------------------------------------------------------------------------
// discovery

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body.to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

async fn smart_configuration(State(state): State<SmartState>, headers: HeaderMap) -> Response {
    json_response(
        StatusCode::OK,
        &state.endpoints(&headers).smart_configuration(),
    )
}

async fn openid_configuration(State(state): State<SmartState>, headers: HeaderMap) -> Response {
    json_response(
        StatusCode::OK,
        &state.endpoints(&headers).openid_configuration(),
    )
}

async fn jwks(State(state): State<SmartState>) -> Response {
    match state.smart.jwks().await {
        Ok(set) => json_response(StatusCode::OK, &set),
        Err(e) => oauth_error(e, false),
    }
}

// ---------------------------------------------------------------------------------------
// OAuth JSON errors and forms

/// An RFC 6749 error response (`invalid_client` after Basic auth also gets a challenge).
fn oauth_error(e: SmartError, basic: bool) -> Response {
    let (status, error, description) = match &e {
        SmartError::OAuth {
            status,
            error,
            description,
        } => (*status, *error, description.clone()),
        SmartError::Unavailable(_) => (503, "temporarily_unavailable", e.message()),
        SmartError::Internal(detail) => {
            tracing::error!(error = %detail, "authorization server fault");
            (500, "server_error", e.message())
        }
    };
    if status < 500 {
        tracing::warn!(error, status, "oauth request rejected");
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json_response(
        status,
        &json!({"error": error, "error_description": description}),
    );
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if basic {
            "Basic realm=\"healporium\""
        } else {
            "Bearer realm=\"healporium\""
        };
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    resp
}

/// A form body (`application/x-www-form-urlencoded`).
fn form<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, SmartError> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(SmartError::invalid_request(
            "The body must be application/x-www-form-urlencoded",
        ));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|_| SmartError::invalid_request("The form cannot be decoded"))
}

/// `Authorization: Basic` client credentials (each part form-urlencoded, RFC 6749 2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<BasicCredentials>, SmartError> {
    let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some((scheme, rest)) = v.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad = || SmartError::invalid_client("Malformed Basic credentials");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| -> Result<String, SmartError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(&format!("v={s}")).map_err(|_| bad())?;
        Ok(pairs.into_iter().next().map(|(_, v)| v).unwrap_or_default())
    };
    Ok(Some(BasicCredentials {
        client_id: unescape(id)?,
        secret: unescape(secret)?,
    }))
}

// ---------------------------------------------------------------------------------------
// token, introspection, revocation, launch

async fn token(
    State(state): State<SmartState>,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Response {
    let basic = match basic_credentials(&headers) {
        Ok(b) => b,
        Err(e) => return oauth_error(e, true),
    };
    let used_basic = basic.is_some();
    let form: TokenForm = match form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return oauth_error(e, used_basic),
    };
    let endpoints = state.endpoints(&headers);
    let client = basic
        .as_ref()
        .map(|b| b.client_id.clone())
        .or(form.client_id.clone());
    let result = state
        .smart
        .token(&form, basic.as_ref(), &endpoints.issuer, &endpoints.token)
        .await;
    let response = match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => oauth_error(e, used_basic),
    };
    let subtype = if response.status().is_success() {
        "token"
    } else {
        "token-failed"
    };
    audited(&state, &headers, None, client.as_deref(), subtype, response).await
}

/// Records a sign-in or token event before the response leaves (an event that cannot be
/// recorded fails the request).
async fn audited(
    state: &SmartState,
    headers: &HeaderMap,
    user: Option<&str>,
    client: Option<&str>,
    subtype: &str,
    response: Response,
) -> Response {
    let address = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().chars().take(64).collect::<String>());
    match crate::interaction::audit::security_event(
        &state.api.ctx,
        user,
        client,
        subtype,
        response.status().as_u16(),
        address,
    )
    .await
    {
        Ok(()) => response,
        Err(o) => crate::api::ApiError(o).into_response(),
    }
}

async fn introspect(
    State(state): State<SmartState>,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Response {
    let basic = match basic_credentials(&headers) {
        Ok(b) => b,
        Err(e) => return oauth_error(e, true),
    };
    let form: TokenForm = match form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return oauth_error(e, basic.is_some()),
    };
    let endpoints = state.endpoints(&headers);
    // the caller: an authenticated confidential/backend client, or a valid bearer token; it
    // learns about its own client's tokens only, unless it is a resource server (a client
    // registered with the scope `introspect`)
    let caller: Option<(String, bool)> = match bearer(&headers) {
        Some(t) => state
            .smart
            .verify(&t, &endpoints.issuer)
            .await
            .ok()
            .map(|c| (c.client_id, false)),
        None => state
            .smart
            .authenticate_client(&form, basic.as_ref(), &endpoints.token, true)
            .await
            .ok()
            .map(|c| {
                let resource_server = c.scopes.iter().any(|s| s == "introspect");
                (c.client_id, resource_server)
            }),
    };
    let Some((caller, resource_server)) = caller else {
        return oauth_error(
            SmartError::invalid_client("Introspection needs client authentication or a token"),
            basic.is_some(),
        );
    };
    let Some(token) = form.token.as_deref().filter(|t| !t.is_empty()) else {
        return oauth_error(SmartError::invalid_request("token is missing"), false);
    };
    match state.smart.introspect(token, &endpoints.issuer).await {
        Ok(v)
            if resource_server
                || v.get("client_id").and_then(Value::as_str) == Some(caller.as_str()) =>
        {
            json_response(StatusCode::OK, &v)
        }
        Ok(_) => json_response(StatusCode::OK, &serde_json::json!({"active": false})),
        Err(e) => oauth_error(e, false),
    }
}

async fn revoke(
    State(state): State<SmartState>,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Response {
    let basic = match basic_credentials(&headers) {
        Ok(b) => b,
        Err(e) => return oauth_error(e, true),
    };
    let form: TokenForm = match form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return oauth_error(e, basic.is_some()),
    };
    let endpoints = state.endpoints(&headers);
    let client = match state
        .smart
        .authenticate_client(&form, basic.as_ref(), &endpoints.token, false)
        .await
    {
        Ok(c) => c,
        Err(e) => return oauth_error(e, basic.is_some()),
    };
    let Some(token) = form.token.as_deref().filter(|t| !t.is_empty()) else {
        return oauth_error(SmartError::invalid_request("token is missing"), false);
    };
    match state.smart.revoke(token, &client.client_id).await {
        Ok(()) => json_response(StatusCode::OK, &json!({})),
        Err(e) => oauth_error(e, false),
    }
}

#[derive(Debug, Default, Deserialize)]
struct LaunchBody {
    /// The app the launch is for.
    client_id: Option<String>,
    patient: Option<String>,
    encounter: Option<String>,
}

/// `POST /auth/launch` with a practitioner's (or admin's) token: creates an EHR launch
/// context; answers `{"launch": "<id>"}` for the app's launch URL.
async fn launch(
    State(state): State<SmartState>,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return oauth_error(
            SmartError::invalid_token("An access token is required"),
            false,
        );
    };
    let base = state.base(&headers);
    let claims = match state.smart.verify(&token, &base).await {
        Ok(c) => c,
        Err(e) => return oauth_error(e, false),
    };
    let Some(username) = claims.username.as_deref() else {
        return oauth_error(
            SmartError::invalid_token("Launch contexts are created by signed-in users"),
            false,
        );
    };
    let parsed: Result<LaunchBody, SmartError> = if body.is_empty() {
        Ok(LaunchBody::default())
    } else if headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
    {
        serde_json::from_slice(&body)
            .map_err(|_| SmartError::invalid_request("The body must be {\"patient\": …}"))
    } else {
        form(&headers, &body)
    };
    let b = match parsed {
        Ok(b) => b,
        Err(e) => return oauth_error(e, false),
    };
    let Some(client_id) = b.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return oauth_error(
            SmartError::invalid_request("client_id (the app to launch) is missing"),
            false,
        );
    };
    if let Some(p) = &b.patient {
        // the launching user must be allowed to see the patient (else: as if unknown)
        let principal = claims.principal();
        if !visible_patient(&state, &headers, principal, p).await {
            return oauth_error(SmartError::invalid_request("No such Patient"), false);
        }
    }
    match state
        .smart
        .create_launch(
            username,
            client_id,
            b.patient.as_deref(),
            b.encounter.as_deref(),
        )
        .await
    {
        Ok(id) => json_response(
            StatusCode::CREATED,
            &json!({"launch": id, "iss": base, "patient": b.patient, "encounter": b.encounter}),
        ),
        Err(e) => oauth_error(e, false),
    }
}

// ---------------------------------------------------------------------------------------
// the browser flow: authorize → sign in → consent (+ patient picker) → redirect

async fn authorize_get(State(state): State<SmartState>, req: Request) -> Response {
    let params: AuthorizeParams = match req.uri().query() {
        None => AuthorizeParams::default(),
        Some(q) => match serde_urlencoded::from_str(q) {
            Ok(p) => p,
            Err(_) => return page_error("The authorization request cannot be decoded"),
        },
    };
    let headers = req.headers().clone();
    authorize(&state, &headers, params).await
}

async fn authorize_post(
    State(state): State<SmartState>,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Response {
    match form::<AuthorizeParams>(&headers, &body) {
        Ok(params) => authorize(&state, &headers, params).await,
        Err(_) => page_error("The authorization request cannot be decoded"),
    }
}

async fn authorize(state: &SmartState, headers: &HeaderMap, params: AuthorizeParams) -> Response {
    let base = state.base(headers);
    match state.smart.begin(&params, &base).await {
        Ok((id, pending)) => html(StatusCode::OK, &LoginPage::new(&id, &pending, None)),
        Err(e) => authorize_failure(e),
    }
}

fn authorize_failure(e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Page(msg) => page_error(&msg),
        AuthorizeError::Redirect(url) => see_other(&url),
        AuthorizeError::Failure(e) => {
            if let SmartError::Internal(detail) = &e {
                tracing::error!(error = %detail, "authorization server fault");
            }
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                &MessagePage::try_again_later(&e.message()),
            )
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    request: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The TCP peer's address: what sign-in failures are counted against (X-Forwarded-For is
/// the client's to write, so it is not trusted for this).
struct Peer(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
        ))
    }
}

async fn login(
    State(state): State<SmartState>,
    Peer(address): Peer,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Response {
    let Ok(f) = form::<LoginForm>(&headers, &body) else {
        return page_error("The sign-in form cannot be decoded");
    };
    let (Some(request), Some(username), Some(password)) = (f.request, f.username, f.password)
    else {
        return page_error("The sign-in form is incomplete");
    };
    let response = match state
        .smart
        .sign_in(&request, &username, &password, address.as_deref())
        .await
    {
        // the server's own web app needs no consent: it is the server
        Ok(SignIn::Consent(pending, user))
            if pending.client_id == crate::smart::WEB_CLIENT_ID
                && !pending.needs_patient_pick(&user) =>
        {
            let cared_for = caregiver_patient(&state, &user).await;
            match state
                .smart
                .decide(&request, true, cared_for.as_deref())
                .await
            {
                Ok(url) => see_other(&url),
                Err(e) => authorize_failure(e),
            }
        }
        Ok(SignIn::Consent(pending, user)) => {
            let patients = if pending.needs_patient_pick(&user) {
                patient_choices(&state, &headers, &user, None).await
            } else {
                Vec::new()
            };
            html(
                StatusCode::OK,
                &ConsentPage::new(&request, &pending, &user, &patients, None),
            )
        }
        Ok(SignIn::Failed(pending)) => {
            tracing::warn!("sign-in failed");
            html(
                StatusCode::UNAUTHORIZED,
                &LoginPage::new(&request, &pending, Some("Wrong user name or password")),
            )
        }
        Ok(SignIn::Locked(pending)) => {
            tracing::warn!("sign-in refused: too many failures");
            html(
                StatusCode::TOO_MANY_REQUESTS,
                &LoginPage::new(
                    &request,
                    &pending,
                    Some("Too many failed sign-ins; try again in a few minutes"),
                ),
            )
        }
        Ok(SignIn::Ended) => {
            tracing::warn!("sign-in failed; the request ended");
            html(StatusCode::UNAUTHORIZED, &MessagePage::sign_in_ended())
        }
        Err(e) => authorize_failure(e),
    };
    let subtype = if response.status().is_success() {
        "login"
    } else {
        "login-failed"
    };
    audited(&state, &headers, Some(&username), None, subtype, response).await
}

#[derive(Debug, Default, Deserialize)]
struct ConsentForm {
    request: Option<String>,
    decision: Option<String>,
    patient: Option<String>,
    patient_id: Option<String>,
    /// A name to narrow the patient picker with (decision `search`).
    q: Option<String>,
}

async fn consent(
    State(state): State<SmartState>,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Response {
    let Ok(f) = form::<ConsentForm>(&headers, &body) else {
        return page_error("The consent form cannot be decoded");
    };
    let Some(request) = f.request else {
        return page_error("The consent form is incomplete");
    };
    if f.decision.as_deref() == Some("search") {
        // the picker again, narrowed to a name
        let (pending, user) = match state.smart.pending(&request).await {
            Ok((p, Some(u))) => (p, u),
            Ok((_, None)) => return page_error("Sign in first"),
            Err(e) => return authorize_failure(e),
        };
        let q = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let patients = patient_choices(&state, &headers, &user, q).await;
        return html(
            StatusCode::OK,
            &ConsentPage::new(&request, &pending, &user, &patients, q),
        );
    }
    let approve = f.decision.as_deref() == Some("allow");
    let patient = f
        .patient_id
        .filter(|p| !p.trim().is_empty())
        .or(f.patient.filter(|p| !p.is_empty()))
        .map(|p| p.trim().to_string());
    if approve && let Some(p) = &patient {
        // only a patient the signed-in user may see (else: as if there were none)
        let user = match state.smart.pending(&request).await {
            Ok((_, Some(u))) => u,
            Ok((_, None)) => return page_error("Sign in first"),
            Err(e) => return authorize_failure(e),
        };
        if !visible_patient(&state, &headers, user_principal(&user), p).await {
            return page_error("There is no such patient; go back and choose another");
        }
    }
    // a caregiver acts for the patient of their RelatedPerson, never one from the form
    let patient = match state.smart.pending(&request).await {
        Ok((_, Some(u))) if u.is_caregiver() => caregiver_patient(&state, &u).await,
        _ => patient,
    };
    match state
        .smart
        .decide(&request, approve, patient.as_deref())
        .await
    {
        Ok(url) => see_other(&url),
        Err(e) => authorize_failure(e),
    }
}

/// The patient a caregiver acts for: the `patient` of their active RelatedPerson, read from
/// the store (as the Guard's reach reads it at every request). None for other users.
async fn caregiver_patient(state: &SmartState, user: &User) -> Option<String> {
    let id = user.fhir_user.as_deref()?.strip_prefix("RelatedPerson/")?;
    if !user.is_caregiver() {
        return None;
    }
    let stored = state.api.ctx.store.read("RelatedPerson", id).await.ok()??;
    let rp: Value = serde_json::from_str(stored.body.as_deref()?).ok()?;
    if rp.get("active").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    rp.pointer("/patient/reference")
        .and_then(Value::as_str)?
        .strip_prefix("Patient/")
        .map(str::to_string)
}

/// The signed-in user as the picker and the consent checks see them: their role, reading
/// Patients (`user/Patient.rs`), so the role's confinement decides which patients show.
fn user_principal(user: &User) -> crate::auth::Principal {
    let scope = "user/Patient.rs".to_string();
    crate::auth::Principal {
        client_id: "healporium-consent".to_string(),
        user: Some(user.username.clone()),
        role: Some(user.role),
        fhir_user: user.fhir_user.clone(),
        patient_context: None,
        grants: crate::auth::parse_scopes(&scope),
        scope,
        token_id: None,
    }
}

/// Whether `principal` may read `Patient/<id>` (a live one), through the interaction layer.
async fn visible_patient(
    state: &SmartState,
    headers: &HeaderMap,
    principal: crate::auth::Principal,
    id: &str,
) -> bool {
    let request = FhirRequest {
        base: state.base(headers),
        interaction: Interaction::Read {
            resource_type: "Patient".to_string(),
            id: id.to_string(),
        },
        preconditions: Preconditions::default(),
        cascade: false,
        provenance: None,
        prefer: Default::default(),
        principal: Some(principal),
        source: None,
    };
    interaction::handle(&state.api.ctx, request).await.is_ok()
}

/// Patients the signed-in user may see, to choose from (the first 50 by family name,
/// narrowed to `name` when given), as (id, display name).
async fn patient_choices(
    state: &SmartState,
    headers: &HeaderMap,
    user: &User,
    name: Option<&str>,
) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("_count".to_string(), "50".to_string()),
        ("_sort".to_string(), "family".to_string()),
    ];
    if let Some(n) = name {
        pairs.push(("name".to_string(), n.chars().take(100).collect()));
    }
    let request = FhirRequest {
        base: state.base(headers),
        interaction: Interaction::Search(SearchRequest {
            scope: SearchScope::Type("Patient".to_string()),
            pairs,
            strict: false,
            paging: false,
        }),
        preconditions: Preconditions::default(),
        cascade: false,
        provenance: None,
        prefer: Default::default(),
        // as the signed-in user: their role decides which patients they may pick
        principal: Some(user_principal(user)),
        source: None,
    };
    let Ok(response) = interaction::handle(&state.api.ctx, request).await else {
        return Vec::new();
    };
    let Some(Ok(bundle)) = response.body.map(|b| b.to_value()) else {
        return Vec::new();
    };
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
        .filter_map(patient_choice)
        .collect()
}

/// A Patient as the picker shows it: (id, "<name>, born <birthDate>"); the name is the first
/// `name`'s `text`, else its given names and family.
fn patient_choice(patient: &Value) -> Option<(String, String)> {
    let id = patient.get("id")?.as_str()?.to_string();
    let name = patient.get("name").and_then(|n| n.get(0));
    let part = |key: &str| name.and_then(|n| n.get(key));
    let mut display = match part("text").and_then(Value::as_str) {
        Some(text) => text.to_string(),
        None => {
            let given: Vec<&str> = part("given")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let family = part("family").and_then(Value::as_str).unwrap_or("");
            format!("{} {family}", given.join(" ")).trim().to_string()
        }
    };
    if display.is_empty() {
        display = "(no name)".to_string();
    }
    if let Some(b) = patient.get("birthDate").and_then(Value::as_str) {
        display = format!("{display}, born {b}");
    }
    Some((id, display))
}

// ---------------------------------------------------------------------------------------
// pages (their HTML: api/pages.rs and src/api/templates/)

fn page_error(message: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        &MessagePage::cannot_continue(message),
    )
}

fn see_other(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(v) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            resp.headers_mut().insert(LOCATION, v);
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(_) => page_error("The application's redirect URI is not usable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picker_names_patients_as_before() {
        fn check(patient: Value, expected: Option<(&str, &str)>) {
            let got = patient_choice(&patient);
            let got = got.as_ref().map(|(i, d)| (i.as_str(), d.as_str()));
            assert_eq!(got, expected, "{patient}");
        }
        check(
            json!({"id": "a", "name": [{"text": "Ann Lee", "family": "X"}], "birthDate": "1990"}),
            Some(("a", "Ann Lee, born 1990")),
        );
        check(
            json!({"id": "b", "name": [{"given": ["Bo", "J"], "family": "Ng"}, {"text": "no"}]}),
            Some(("b", "Bo J Ng")),
        );
        check(
            json!({"id": "c", "name": [{"family": "Ng"}]}),
            Some(("c", "Ng")),
        );
        check(json!({"id": "d", "name": "odd"}), Some(("d", "(no name)")));
        check(
            json!({"id": "e", "birthDate": "2001-02"}),
            Some(("e", "(no name), born 2001-02")),
        );
        check(json!({"name": [{"text": "no id"}]}), None);
        check(json!({"id": 7}), None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let raw = base64::engine::general_purpose::STANDARD.encode("my%20app:s%3Acret");
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {raw}")).unwrap(),
        );
        let c = basic_credentials(&h).unwrap().unwrap();
        assert_eq!(
            (c.client_id.as_str(), c.secret.as_str()),
            ("my app", "s:cret")
        );
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(basic_credentials(&h).is_err());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(basic_credentials(&h).unwrap().is_none());
    }
}
