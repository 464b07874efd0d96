//! L4: the web app people use — patients, doctors, pharmacists, insurers and administrators —
//! served by the binary at `/app/`. It is a SMART app of its own server: a person signs in
//! through the authorization server (authorization code with PKCE, the first-party client
//! [`crate::smart::WEB_CLIENT_ID`]), and every page reads and writes through the interaction
//! layer as that person's token ([`fhir::Fhir`]), so scopes, compartments, the role's reach and
//! the audit trail apply exactly as for any other app. The app has no data access of its own.
//!
//! Pages are askama templates (src/web/templates/) that escape every value; the one script,
//! `static/app.js`, is a file (the CSP allows no inline script) that only enhances: every
//! journey works with JavaScript off. See docs/ARCHITECTURE.md, *The web app*.

mod admin;
mod clinician;
mod device;
mod fhir;
mod health;
mod insurer;
mod live;
mod patient;
mod pharmacy;
mod session;
mod view;

use crate::interaction::Context;
use crate::smart::Smart;
use askama::Template;
use axum::Router;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

pub use session::Session;

/// What the web app's handlers share.
#[derive(Clone)]
pub struct WebState {
    pub ctx: Context,
    pub smart: Arc<Smart>,
    /// The public FHIR base URL when configured (else derived from `Host`, as the API does).
    pub base_url: Option<Arc<str>>,
    pub prefix: Arc<str>,
    pub trusted_hosts: Arc<[String]>,
    /// Take card payments for installments through the built-in demo processor (`--demo`).
    pub demo_payments: bool,
    /// The node's open live-update streams.
    pub live: Arc<live::Streams>,
}

impl WebState {
    /// The FHIR base of a request.
    pub fn base(&self, headers: &HeaderMap) -> String {
        crate::auth::discovery::fhir_base(
            self.base_url.as_deref(),
            headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok()),
            &self.trusted_hosts,
            &self.prefix,
        )
    }
}

/// The web app's routes: `/` and `/app/…`.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(|| async { see_other("/app/") }))
        .route("/app", get(|| async { see_other("/app/") }))
        .route("/app/static/{file}", get(asset))
        .route("/app/signin", get(session::sign_in))
        .route(session::CALLBACK, get(session::callback))
        .route("/app/signout", post(session::sign_out))
        .route("/app/zone", post(session::set_zone))
        .route("/app/", get(home))
        .route("/app/events", get(live::events))
        .merge(patient::routes())
        .merge(health::routes())
        .merge(device::routes())
        .merge(clinician::routes())
        .merge(pharmacy::routes())
        .merge(insurer::routes())
        .merge(admin::routes())
        .route("/app/{*rest}", get(not_found))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::refresh,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// The home page of the signed-in person's role.
async fn home(
    session: Session,
    axum::extract::State(state): axum::extract::State<WebState>,
) -> Response {
    use crate::auth::Role;
    match session.role() {
        Some(Role::Patient) => patient::home(&state, &session).await,
        Some(Role::Practitioner) => clinician::home(&state, &session).await,
        Some(Role::Pharmacist) => pharmacy::home(&state, &session).await,
        Some(Role::Insurer) => insurer::home(&state, &session).await,
        Some(Role::Admin) => admin::home(&state, &session).await,
        _ => message(
            StatusCode::FORBIDDEN,
            &session,
            "Nothing to show",
            "This account has no role the web app knows.",
        ),
    }
}

/// Every web response: a CSP that allows the app's own script, style and images only, no
/// framing, no referrer, not cached.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let is_asset = req.uri().path().starts_with("/app/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !is_asset {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The app's own style, script and icon, compiled in.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "app.css" => (include_str!("static/app.css"), "text/css; charset=utf-8"),
        "app.js" => (
            include_str!("static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return not_found().await,
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

/// 303 to `to` (a path of this app).
pub(crate) fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// A page as the response; one that cannot be rendered is a plain 500 page.
pub(crate) fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(text) => (
            status,
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page cannot be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                "The page cannot be shown.",
            )
                .into_response()
        }
    }
}

/// A page that only says something.
#[derive(Template)]
#[template(path = "message.html", config = "src/web/templates/askama.toml")]
struct MessagePage<'a> {
    shell: view::Shell,
    text: &'a str,
}

pub(crate) fn message(status: StatusCode, session: &Session, title: &str, text: &str) -> Response {
    page(
        status,
        &MessagePage {
            shell: view::Shell::new(session, title, ""),
            text,
        },
    )
}

/// Not found — also what a page about something the person may not see answers, so editing
/// a URL tells nothing.
async fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, &session::PublicMessage::not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template of the app escapes every value (askama's HTML escaping; nothing marked
    /// safe), carries no inline script, inline style or event handler (the CSP would refuse
    /// them: script and style come only from /app/static/), names its one script as a file,
    /// and every page extends the one layout.
    #[test]
    fn templates_escape_everything_and_hold_no_inline_code() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/templates");
        let mut pages = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name == "askama.toml" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("{#"),
                "{name} must start with a {{# … #}} comment"
            );
            let code = text.replace(' ', "");
            for banned in [
                "|safe",
                "filtersafe",
                "escape=\"none\"",
                "<style",
                "style=",
                "onclick",
                "onload",
                "onsubmit",
                "javascript:",
            ] {
                assert!(!code.contains(banned), "{name} has {banned}");
            }
            for (i, _) in text.match_indices("<script") {
                let tag = &text[i..i + text[i..].find("</script>").unwrap()];
                assert_eq!(
                    tag, "<script src=\"/app/static/app.js\" defer>",
                    "{name}: inline script"
                );
            }
            if name.ends_with(".html") && !["layout.html", "public.html"].contains(&name.as_str()) {
                assert!(text.contains("{% extends \"layout.html\" %}"), "{name}");
                pages += 1;
            }
        }
        assert!(pages > 15, "{pages}");
    }

    /// A hostile value reaches a page as text, escaped once: in the title, the heading, the
    /// watched types, the user name, the form token (of the sign-out and zone forms) and the
    /// text.
    #[test]
    fn values_are_escaped() {
        const HOSTILE: &str = "<script>\"a'&b</script>";
        let session = session::Session::for_tests(HOSTILE);
        let html = MessagePage {
            shell: view::Shell::new(&session, HOSTILE, HOSTILE),
            text: HOSTILE,
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>\""), "{html}");
        assert_eq!(
            html.matches("&#60;script&#62;&#34;a&#39;&#38;b&#60;/script&#62;")
                .count(),
            7,
            "{html}"
        );
    }
}
