//! L4: the HTML pages of the browser sign-in flow — sign-in, consent with its patient picker,
//! and the pages that only say something — as askama templates (src/api/templates/, found
//! through src/api/templates/askama.toml) that share one layout, base.html, and the one way
//! they are sent: [`html`], with the headers every page needs.
//!
//! Escaping: askama HTML-escapes every `{{ value }}` of these `.html` templates (`&`, `<`,
//! `>`, `"`, `'`), and no template uses `|safe`, so each user-controlled value — app names,
//! request ids, user names, scopes, patient names and ids, the search text — reaches a page
//! as text, escaped exactly once. The tests below hold every slot to that.

use super::ApiError;
use crate::fhir::outcome::Outcome;
use crate::smart::accounts::User;
use crate::smart::authorize::Pending;
use askama::Template;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The sign-in page (login.html).
#[derive(Template)]
#[template(path = "login.html", config = "src/api/templates/askama.toml")]
pub struct LoginPage<'a> {
    title: &'static str,
    /// The client's name.
    app: &'a str,
    /// The pending request's id, posted back with the form.
    request: &'a str,
    error: Option<&'a str>,
}

impl<'a> LoginPage<'a> {
    pub fn new(request: &'a str, pending: &'a Pending, error: Option<&'a str>) -> Self {
        LoginPage {
            title: "Sign in",
            app: &pending.client_name,
            request,
            error,
        }
    }
}

/// The consent page (consent.html, with patient_picker.html when the user must pick).
#[derive(Template)]
#[template(path = "consent.html", config = "src/api/templates/askama.toml")]
pub struct ConsentPage<'a> {
    title: &'static str,
    username: &'a str,
    role: &'static str,
    fhir_user: Option<&'a str>,
    app: &'a str,
    /// Each scope in plain words, and the scope itself.
    scopes: Vec<(String, &'a str)>,
    ehr_launch: bool,
    launch_patient: Option<&'a str>,
    request: &'a str,
    picker: Option<Picker<'a>>,
}

/// The patient picker: the name searched for and the patients found, as (id, display name).
struct Picker<'a> {
    query: &'a str,
    patients: &'a [(String, String)],
}

impl<'a> ConsentPage<'a> {
    /// `patients` (and `query`) are shown only when `user` must pick the patient.
    pub fn new(
        request: &'a str,
        pending: &'a Pending,
        user: &'a User,
        patients: &'a [(String, String)],
        query: Option<&'a str>,
    ) -> Self {
        let picker = pending.needs_patient_pick(user).then(|| Picker {
            query: query.unwrap_or(""),
            patients,
        });
        ConsentPage {
            title: "Allow access?",
            username: &user.username,
            role: user.role.as_str(),
            fhir_user: user.fhir_user.as_deref(),
            app: &pending.client_name,
            scopes: pending
                .scopes
                .iter()
                .map(|s| (crate::auth::scopes::plain_words(s), s.as_str()))
                .collect(),
            ehr_launch: pending.ehr_launch,
            launch_patient: pending.launch_patient.as_deref(),
            request,
            picker,
        }
    }
}

/// A page with one message (message.html).
#[derive(Template)]
#[template(path = "message.html", config = "src/api/templates/askama.toml")]
pub struct MessagePage<'a> {
    title: &'static str,
    message: &'a str,
    /// Shown as an error (class `err`).
    error: bool,
}

impl<'a> MessagePage<'a> {
    /// Why the flow cannot go on (the request, the form or the app is wrong).
    pub fn cannot_continue(message: &'a str) -> Self {
        MessagePage {
            title: "Cannot continue",
            message,
            error: true,
        }
    }

    /// A sign-in request that too many failures ended.
    pub fn sign_in_ended() -> Self {
        MessagePage {
            title: "Sign-in",
            message: "Too many failed attempts for this sign-in. Start again from the app.",
            error: false,
        }
    }

    /// The server cannot answer now (a database or server fault).
    pub fn try_again_later(message: &'a str) -> Self {
        MessagePage {
            title: "Try again later",
            message,
            error: false,
        }
    }
}

/// A page as the response: never cached, never framed, no script, no referrer. A page that
/// cannot be rendered becomes an OperationOutcome through the one error table.
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    let text = match page.render() {
        Ok(text) => text,
        Err(e) => {
            return ApiError(Outcome::internal(format!("The page cannot be shown: {e}")))
                .into_response();
        }
    };
    let mut resp = (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        text,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Markup, quotes, an entity and template syntax: what a hostile app name, user name,
    /// scope, patient or search text could hold.
    const HOSTILE: &str = "<script>\"a'&b</script> &amp; {{ x }} {% y %}";
    const ESCAPED: &str =
        "&#60;script&#62;&#34;a&#39;&#38;b&#60;/script&#62; &#38;amp; {{ x }} {% y %}";

    fn pending(scopes: &[&str], ehr_launch: bool, launch_patient: Option<&str>) -> Pending {
        Pending {
            client_id: "app".into(),
            client_name: HOSTILE.into(),
            redirect_uri: "https://app.example/cb".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            state: None,
            code_challenge: String::new(),
            nonce: None,
            aud: String::new(),
            launch_patient: launch_patient.map(str::to_string),
            launch_encounter: None,
            ehr_launch,
            launch_user: None,
        }
    }

    fn user(role: &str) -> User {
        User::for_tests(
            HOSTILE,
            crate::auth::Role::parse(role).unwrap(),
            Some(HOSTILE),
        )
    }

    /// `html` holds `HOSTILE` only escaped, exactly `n` times, and never raw or escaped twice.
    fn check(html: &str, n: usize) {
        assert_eq!(html.matches(ESCAPED).count(), n, "{html}");
        assert!(!html.contains("<script"), "unescaped: {html}");
        assert!(!html.contains("&#38;#"), "escaped twice: {html}");
        assert!(!html.contains("\"a'"), "quotes unescaped: {html}");
    }

    #[test]
    fn pages_escape_everything() {
        // app name, request id, error message
        let p = pending(&[], false, None);
        check(
            &LoginPage::new(HOSTILE, &p, Some(HOSTILE)).render().unwrap(),
            3,
        );
        // user name, fhirUser, app name, a scope, request id, search text, patient id (value
        // and label), patient name
        let p = pending(&[HOSTILE, "launch/patient"], false, None);
        let u = user("practitioner");
        let patients = vec![(HOSTILE.to_string(), HOSTILE.to_string())];
        let html = ConsentPage::new(HOSTILE, &p, &u, &patients, Some(HOSTILE))
            .render()
            .unwrap();
        check(&html, 9);
        // the EHR launch's patient
        let p = pending(&["launch"], true, Some(HOSTILE));
        let html = ConsentPage::new(HOSTILE, &p, &u, &[], None)
            .render()
            .unwrap();
        check(&html, 5);
        check(&MessagePage::cannot_continue(HOSTILE).render().unwrap(), 1);
        check(&MessagePage::try_again_later(HOSTILE).render().unwrap(), 1);
    }

    #[test]
    fn the_consent_page_shows_the_picker_only_to_whoever_must_pick() {
        let patients = vec![("p1".to_string(), "Alice, born 1990".to_string())];
        let pick = pending(&["launch/patient", "patient/*.rs"], false, None);
        let html = ConsentPage::new("r", &pick, &user("practitioner"), &patients, None)
            .render()
            .unwrap();
        assert!(html.contains("name=\"request\" value=\"r\""), "{html}");
        assert!(
            html.contains("<input type=\"radio\" name=\"patient\" value=\"p1\"> Alice, born 1990"),
            "{html}"
        );
        assert!(
            !html.contains(" checked"),
            "nothing is pre-selected: {html}"
        );
        let none = ConsentPage::new("r", &pick, &user("practitioner"), &[], None)
            .render()
            .unwrap();
        assert!(none.contains("No patients you may see match."), "{none}");
        let own = ConsentPage::new("r", &pick, &user("patient"), &patients, None)
            .render()
            .unwrap();
        assert!(
            !own.contains("name=\"patient\"") && !own.contains("<fieldset>"),
            "{own}"
        );
    }

    /// What `check` shows for one value, every template keeps for all: nothing is marked safe
    /// or escaped differently, there is no script, and every page extends the one layout.
    #[test]
    fn templates_escape_every_value_and_share_the_layout() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/templates");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name == "askama.toml" {
                continue; // the templates' configuration
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                name.ends_with(".html"),
                "{name}: askama escapes .html templates"
            );
            assert!(
                text.starts_with("{#"),
                "{name} must start with a {{# … #}} comment"
            );
            let code = text.replace(' ', "");
            for banned in ["|safe", "filtersafe", "\"none\"", "<script"] {
                assert!(!code.contains(banned), "{name} has {banned}");
            }
            let page = !["base.html", "patient_picker.html"].contains(&name.as_str());
            if page {
                assert!(text.contains("{% extends \"base.html\" %}"), "{name}");
            }
            names.push(name);
        }
        assert!(
            names.len() > 1 && names.iter().any(|n| n == "base.html"),
            "{names:?}"
        );
    }

    #[test]
    fn pages_carry_their_headers_and_no_script() {
        let p = pending(&[], false, None);
        let resp = html(StatusCode::UNAUTHORIZED, &LoginPage::new("r", &p, None));
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let h = resp.headers();
        assert_eq!(h[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[CACHE_CONTROL], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(
            h["content-security-policy"],
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        );
        for text in [
            LoginPage::new("r", &p, Some("x")).render().unwrap(),
            MessagePage::sign_in_ended().render().unwrap(),
        ] {
            assert!(text.starts_with("<!doctype html>"), "{text}");
            assert!(!text.contains("<script"), "{text}");
        }
    }
}
