//! Signing in to the web app and the session a page runs under. Sign-in is the SMART
//! authorization-code flow with PKCE against this server's own authorization server; the
//! code is exchanged in process through the same function `/auth/token` runs. The session is
//! the access token itself in an HttpOnly cookie (and the refresh token beside it), so any
//! node of a cluster serves any page: each request verifies the token (signature, expiry,
//! revocation, the account still enabled) exactly as the FHIR API does.
//!
//! - Idle sessions end: a token lives `--access-token-ttl` (1 h by default); a page loaded in
//!   the second half of its life swaps it for a fresh one (refresh token, rotated), so only a
//!   session left alone for a whole lifetime expires.
//! - Forms carry a CSRF token derived from the session's access token (which a page of
//!   another site can neither read nor guess); a POST without it is refused.
//! - Signing out revokes both tokens.

use super::{WebState, page, see_other};
use crate::auth::{Principal, Role};
use crate::smart::crypto;
use crate::smart::grants::TokenForm;
use crate::smart::{WEB_CALLBACK, WEB_CLIENT_ID, web_redirect};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

const ACCESS: &str = "hp_at";
const REFRESH: &str = "hp_rt";
const FLOW: &str = "hp_flow";
const ZONE: &str = "hp_tz";

/// A page for someone who is not signed in (sign-in problems, signed out, not found).
#[derive(Template)]
#[template(path = "public.html", config = "src/web/templates/askama.toml")]
pub struct PublicMessage<'a> {
    title: &'a str,
    text: &'a str,
    sign_in: bool,
}

impl PublicMessage<'static> {
    pub fn not_found() -> Self {
        PublicMessage {
            title: "Not found",
            text: "There is nothing here, or nothing you may see.",
            sign_in: false,
        }
    }
}

/// The signed-in person, for one request.
#[derive(Clone)]
pub struct Session {
    pub principal: Principal,
    pub username: String,
    /// The token forms must carry.
    pub csrf: String,
    /// The FHIR base of this request.
    pub base: String,
    /// The zone the person's browser is in (UTC until the script has told).
    pub zone: jiff::tz::TimeZone,
    /// The access token (re-verified by long-lived streams; never shown or logged).
    token: String,
}

impl Session {
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn role(&self) -> Option<Role> {
        self.principal.role
    }

    /// A caregiver acting for the patient of their RelatedPerson.
    pub fn caregiver(&self) -> bool {
        self.role() == Some(Role::Patient)
            && self
                .principal
                .fhir_user
                .as_deref()
                .is_some_and(|f| f.starts_with("RelatedPerson/"))
    }

    /// Who writes as this session: their `fhirUser` (a Patient, a caregiver's RelatedPerson,
    /// a Practitioner).
    pub fn author(&self) -> Option<String> {
        self.principal.fhir_user.clone()
    }

    /// The patient this session acts for (a patient's own record, or a caregiver's person).
    pub fn patient(&self) -> Option<&str> {
        self.principal.patient_context.as_deref()
    }

    /// The id of the person's own resource of `resource_type` (`Practitioner/7` → `7`).
    pub fn own(&self, resource_type: &str) -> Option<&str> {
        self.principal
            .fhir_user
            .as_deref()?
            .strip_prefix(resource_type)?
            .strip_prefix('/')
    }
}

#[cfg(test)]
impl Session {
    /// A patient's session named `username`, for tests of what pages show.
    pub fn for_tests(username: &str) -> Session {
        Session {
            principal: Principal {
                role: Some(Role::Patient),
                user: Some(username.to_string()),
                ..Principal::system()
            },
            username: username.to_string(),
            csrf: username.to_string(),
            base: "http://localhost/fhir".into(),
            zone: jiff::tz::TimeZone::UTC,
            token: String::new(),
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, on `/app` only, Secure behind https.
fn set_cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/app; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("hp_invalid=1"))
}

fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", Some(0), secure)
}

fn csrf_of(token: &str) -> String {
    crypto::digest(&format!("healporium-web-csrf:{token}"))
}

impl FromRequestParts<WebState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        let base = state.base(&parts.headers);
        let Some(token) = cookie(&parts.headers, ACCESS) else {
            return Err(signed_out(parts));
        };
        let claims = match state.smart.verify(token, &base).await {
            Ok(c) => c,
            Err(_) => return Err(signed_out(parts)),
        };
        if claims.client_id != WEB_CLIENT_ID {
            return Err(signed_out(parts));
        }
        let zone = cookie(&parts.headers, ZONE)
            .filter(|z| z.len() <= 64)
            .map(|z| z.replace("%2F", "/"))
            .and_then(|z| jiff::tz::TimeZone::get(&z).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC);
        Ok(Session {
            username: claims.username.clone().unwrap_or_default(),
            principal: claims.principal(),
            csrf: csrf_of(token),
            base,
            zone,
            token: token.to_string(),
        })
    }
}

/// Not signed in (or the session ended): pages go to the sign-in; anything else is told.
fn signed_out(parts: &Parts) -> Response {
    if parts.method == axum::http::Method::GET && parts.uri.path() != "/app/events" {
        see_other("/app/signin")
    } else {
        page(
            StatusCode::UNAUTHORIZED,
            &PublicMessage {
                title: "Your session has ended",
                text: "Sign in again to go on. Nothing was changed.",
                sign_in: true,
            },
        )
    }
}

/// A submitted form of a signed-in person, its CSRF token checked.
pub struct Form {
    pub session: Session,
    fields: Vec<(String, String)>,
}

impl Form {
    /// A field, trimmed; None when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

impl FromRequest<WebState> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| bad_form())?;
        if bytes.len() > 64 * 1024 {
            return Err(bad_form());
        }
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| bad_form())?;
        let sent = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !crypto::constant_time_eq(sent, &session.csrf) {
            tracing::warn!("web form refused: CSRF token missing or wrong");
            return Err(page(
                StatusCode::FORBIDDEN,
                &PublicMessage {
                    title: "This form has expired",
                    text: "Go back, reload the page and send it again. Nothing was changed.",
                    sign_in: false,
                },
            ));
        }
        Ok(Form { session, fields })
    }
}

fn bad_form() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        &PublicMessage {
            title: "The form cannot be read",
            text: "Go back and send it again. Nothing was changed.",
            sign_in: false,
        },
    )
}

fn secure(base: &str) -> bool {
    base.starts_with("https://")
}

/// `GET /app/signin`: starts the authorization-code flow (PKCE S256, a fresh state), the
/// verifier kept in a short-lived cookie until the callback.
pub async fn sign_in(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let base = state.base(&headers);
    if let Err(e) = state.smart.ensure_web_client(&base).await {
        tracing::error!(error = %e.message(), "the web app's client cannot be registered");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            &PublicMessage {
                title: "Signing in is not possible right now",
                text: "Try again in a minute.",
                sign_in: false,
            },
        );
    }
    let verifier = crypto::random_token(48);
    let flow_state = crypto::random_token(16);
    let challenge = crypto::digest(&verifier);
    let origin = crate::smart::origin_of(&base).to_string();
    let url = crate::smart::authorize::redirect_with(
        &format!("{origin}/auth/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", WEB_CLIENT_ID),
            ("redirect_uri", &web_redirect(&base)),
            ("scope", crate::smart::WEB_SCOPES),
            ("state", &flow_state),
            ("aud", &base),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let mut resp = see_other(&url);
    resp.headers_mut().append(
        SET_COOKIE,
        set_cookie(
            FLOW,
            &format!("{flow_state}.{verifier}"),
            Some(900),
            secure(&base),
        ),
    );
    resp
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /app/callback`: the state checked against the flow cookie, the code exchanged (with
/// the verifier) in process, the tokens set as the session's cookies.
pub async fn callback(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let base = state.base(&headers);
    let failed = |text: &'static str| {
        page(
            StatusCode::BAD_REQUEST,
            &PublicMessage {
                title: "Signing in did not finish",
                text,
                sign_in: true,
            },
        )
    };
    if q.error.is_some() {
        return failed("Signing in was cancelled.");
    }
    let Some((flow_state, verifier)) = cookie(&headers, FLOW).and_then(|c| c.split_once('.'))
    else {
        return failed("The sign-in took too long or was started in another browser.");
    };
    let (Some(code), Some(sent_state)) = (q.code, q.state) else {
        return failed("The sign-in answer is incomplete.");
    };
    if !crypto::constant_time_eq(flow_state, &sent_state) {
        return failed("The sign-in answer does not belong to this browser.");
    }
    let form = TokenForm {
        grant_type: Some("authorization_code".into()),
        code: Some(code),
        redirect_uri: Some(web_redirect(&base)),
        code_verifier: Some(verifier.to_string()),
        client_id: Some(WEB_CLIENT_ID.into()),
        ..TokenForm::default()
    };
    let endpoint = format!("{}/auth/token", crate::smart::origin_of(&base));
    let tokens = match state.smart.token(&form, None, &base, &endpoint).await {
        Ok(t) => t,
        Err(_) => return failed("The sign-in could not be completed; start again."),
    };
    let mut resp = see_other("/app/");
    set_tokens(&mut resp, &tokens, secure(&base));
    resp.headers_mut()
        .append(SET_COOKIE, clear_cookie(FLOW, secure(&base)));
    resp
}

fn set_tokens(resp: &mut Response, tokens: &Value, secure: bool) {
    let h = resp.headers_mut();
    if let Some(at) = tokens.get("access_token").and_then(Value::as_str) {
        h.append(SET_COOKIE, set_cookie(ACCESS, at, None, secure));
    }
    if let Some(rt) = tokens.get("refresh_token").and_then(Value::as_str) {
        h.append(SET_COOKIE, set_cookie(REFRESH, rt, None, secure));
    }
}

/// `POST /app/signout`: both tokens revoked, the cookies cleared.
pub async fn sign_out(State(state): State<WebState>, headers: HeaderMap, form: Form) -> Response {
    for name in [ACCESS, REFRESH] {
        if let Some(t) = cookie(&headers, name)
            && let Err(e) = state.smart.revoke(t, WEB_CLIENT_ID).await
        {
            tracing::error!(error = %e.message(), "a web token cannot be revoked");
        }
    }
    let s = secure(&form.session.base);
    let mut resp = page(
        StatusCode::OK,
        &PublicMessage {
            title: "You are signed out",
            text: "Your session has ended on this device.",
            sign_in: true,
        },
    );
    for name in [ACCESS, REFRESH] {
        resp.headers_mut().append(SET_COOKIE, clear_cookie(name, s));
    }
    resp
}

/// Middleware on page loads: a token in the second half of its life is swapped for a fresh
/// one through the refresh token (so an active session stays, an idle one ends), the new
/// cookies set on the response.
pub async fn refresh(State(state): State<WebState>, mut req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::GET || req.uri().path() == "/app/events" {
        return next.run(req).await;
    }
    let headers = req.headers();
    let base = state.base(headers);
    let (Some(at), Some(rt)) = (cookie(headers, ACCESS), cookie(headers, REFRESH)) else {
        return next.run(req).await;
    };
    let Ok(claims) = state.smart.verify(at, &base).await else {
        return next.run(req).await;
    };
    let now = crate::smart::now_ms() / 1000;
    if now - claims.iat < (claims.exp - claims.iat) / 2 {
        return next.run(req).await;
    }
    let form = TokenForm {
        grant_type: Some("refresh_token".into()),
        refresh_token: Some(rt.to_string()),
        client_id: Some(WEB_CLIENT_ID.into()),
        ..TokenForm::default()
    };
    let endpoint = format!("{}/auth/token", crate::smart::origin_of(&base));
    let Ok(tokens) = state.smart.token(&form, None, &base, &endpoint).await else {
        return next.run(req).await;
    };
    let Some(fresh) = tokens.get("access_token").and_then(Value::as_str) else {
        return next.run(req).await;
    };
    // the rest of this request already runs on the fresh token
    let others: Vec<String> = req
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.starts_with("hp_at=") && !kv.starts_with("hp_rt="))
        .map(str::to_string)
        .collect();
    let mut cookies = others;
    cookies.push(format!("{ACCESS}={fresh}"));
    if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
        req.headers_mut().remove(COOKIE);
        req.headers_mut().insert(COOKIE, v);
    }
    let mut resp = next.run(req).await;
    set_tokens(&mut resp, &tokens, secure(&base));
    resp
}

/// The callback path, for the router.
pub const CALLBACK: &str = WEB_CALLBACK;

impl IntoResponse for PublicMessage<'_> {
    fn into_response(self) -> Response {
        page(StatusCode::OK, &self)
    }
}

/// `POST /app/zone`: the time zone dates are shown in (an IANA name), kept in a cookie — the
/// way to set it without JavaScript (with it, the browser's zone is set by itself).
pub async fn set_zone(form: Form) -> Response {
    let zone = form.get("zone").unwrap_or("");
    if zone.len() > 64 || jiff::tz::TimeZone::get(zone).is_err() {
        return super::message(
            StatusCode::UNPROCESSABLE_ENTITY,
            &form.session,
            "Time zone not changed",
            "Give a time zone such as Europe/Berlin or America/New_York.",
        );
    }
    let mut resp = see_other("/app/?done=zone");
    let value = zone.replace('/', "%2F");
    let mut c = format!("{ZONE}={value}; Path=/app; SameSite=Lax; Max-Age=31536000");
    if secure(&form.session.base) {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}
