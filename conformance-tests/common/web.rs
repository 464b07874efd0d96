//! Test harness for the web app (`/app/`) over plain HTTP: the demo world on a secure
//! server, and a person signed in through the real pages (authorization code with PKCE
//! against the server's own authorization server) whose cookies are kept by a small jar.

use super::secure::{PASSWORD, SecureServer};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The demo world (`healporium::demo::resources()`) PUT as the server, and one account per
/// demo role with [`PASSWORD`]; the claims adjudicated as `serve --demo` does.
pub async fn demo_world(s: &SecureServer) {
    let admin = s.admin().await;
    let entries: Vec<Value> = healporium::demo::resources()
        .into_iter()
        .map(|r| {
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            json!({"resource": r, "request": {"method": "PUT", "url": url}})
        })
        .collect();
    admin
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await
        .expect(200);
    for claim in healporium::demo::claims() {
        admin.post("Claim/$submit", &claim).await.expect(200);
    }
    for (username, _, role, fhir_user) in healporium::demo::USERS {
        s.add_user(username, role.as_str(), *fhir_user).await;
    }
}

/// A browser's worth of HTTP: cookies kept per name, redirects not followed.
pub struct Web {
    pub origin: String,
    client: reqwest::Client,
    jar: Mutex<BTreeMap<String, String>>,
}

/// A response: status, headers and body text.
pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of hidden input `name` in the page.
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\"");
        let at = self
            .text
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.text));
        let tag_start = self.text[..at].rfind('<').unwrap();
        let tag_end = at + self.text[at..].find('>').unwrap();
        let tag = &self.text[tag_start..tag_end];
        let value = tag
            .split("value=\"")
            .nth(1)
            .unwrap_or_else(|| panic!("field {name} has no value: {tag}"));
        value.split('"').next().unwrap().to_string()
    }
}

impl Web {
    pub fn new(origin: &str) -> Web {
        Web {
            origin: origin.to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Mutex::new(BTreeMap::new()),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.origin)
        }
    }

    fn cookies(&self) -> String {
        self.jar
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&self, headers: &reqwest::header::HeaderMap) {
        let mut jar = self.jar.lock().unwrap();
        for v in headers.get_all(SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (kv, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if val.is_empty() || attrs.contains("Max-Age=0") {
                jar.remove(k);
            } else {
                jar.insert(k.to_string(), val.to_string());
            }
        }
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar
            .lock()
            .unwrap()
            .insert(name.to_string(), value.to_string());
    }

    pub async fn get(&self, path: &str) -> Page {
        let resp = self
            .client
            .get(self.url(path))
            .header(COOKIE, self.cookies())
            .send()
            .await
            .unwrap();
        self.page(resp).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let resp = self
            .client
            .post(self.url(path))
            .header(COOKIE, self.cookies())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
        self.page(resp).await
    }

    /// A multipart form post with one file (`file`).
    pub async fn post_file(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        file_name: &str,
        content: &str,
    ) -> Page {
        let boundary = "----healporium-test-boundary";
        let mut body = String::new();
        for (k, v) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
            ));
        }
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n{content}\r\n--{boundary}--\r\n"
        ));
        let resp = self
            .client
            .post(self.url(path))
            .header(COOKIE, self.cookies())
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        self.page(resp).await
    }

    async fn page(&self, resp: reqwest::Response) -> Page {
        self.keep(resp.headers());
        Page {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap_or_default(),
        }
    }

    /// Follows 303s from `path` to the page they end on.
    pub async fn visit(&self, path: &str) -> Page {
        let mut page = self.get(path).await;
        for _ in 0..8 {
            if !page.status.is_redirection() {
                break;
            }
            let next = page.location().to_string();
            page = self.get(&next).await;
        }
        page
    }

    /// Signs `username` in through the real pages; returns the home page.
    pub async fn sign_in(origin: &str, username: &str) -> Web {
        let web = Web::new(origin);
        let login = web.visit("/app/").await;
        assert_eq!(login.status, 200, "sign-in page: {}", login.text);
        let request = login.field("request");
        let back = web
            .post(
                "/auth/login",
                &[
                    ("request", &request),
                    ("username", username),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(back.status, 303, "login: {}", back.text);
        assert!(
            back.location().contains("/app/callback?code="),
            "{}",
            back.location()
        );
        let home = web.visit(back.location()).await;
        assert_eq!(home.status, 200, "home: {}", home.text);
        web
    }

    /// A form post as the signed-in person (the CSRF token read from `from`).
    pub async fn submit(&self, from: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.field("csrf");
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }
}
