//! Test harness for servers with SMART authorization on: start one, register users and
//! clients (through the same library calls as `healporium user add` / `client add`), and get
//! real access tokens through the real endpoints — client_credentials with a client secret
//! (client_secret_basic), or the authorization-code flow with PKCE through the sign-in and
//! consent pages.
//!
//! ```ignore
//! secure_backends!(my_test);
//! async fn my_test(s: SecureServer) {
//!     let a = s.create_as_admin(&json!({"resourceType": "Patient"})).await;
//!     let alice = s.with_token(&s.patient_token(&a, "patient/*.rs").await);
//!     alice.get(&format!("Patient/{a}")).await.expect(200);
//! }
//! ```

use super::{Backend, Server, start_at};
use healporium::app::{AppOptions, AuthMode};
use healporium::smart::PasswordCost;
use healporium::smart::accounts::{self, ClientKind, NewClient, NewUser, Role};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A server with auth On. Derefs to a [`Server`] without a token (its requests get 401).
pub struct SecureServer {
    pub server: Server,
    pub store: Arc<dyn healporium::store::Store>,
    /// The server's database, for `healporium` commands run beside it.
    pub database_url: String,
}

impl std::ops::Deref for SecureServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

/// A token response.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub scope: String,
    /// The whole JSON response.
    pub raw: Value,
}

impl TokenSet {
    pub fn from_json(v: &Value) -> TokenSet {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        TokenSet {
            access_token: s("access_token").unwrap_or_else(|| panic!("no access_token in {v}")),
            refresh_token: s("refresh_token"),
            id_token: s("id_token"),
            patient: s("patient"),
            encounter: s("encounter"),
            scope: s("scope").unwrap_or_default(),
            raw: v.clone(),
        }
    }
}

/// Starts a server with auth On (light password hashing, default token lifetimes).
pub async fn start_secure(backend: Backend) -> Option<SecureServer> {
    start_secure_with(backend, AppOptions::default()).await
}

/// Starts a server with auth On and these options (e.g. `smart.access_token_ttl_secs: 1`).
pub async fn start_secure_with(backend: Backend, mut options: AppOptions) -> Option<SecureServer> {
    options.auth = AuthMode::On;
    if options.metrics_token.is_none() {
        options.metrics_token = Some(METRICS_TOKEN.to_string());
    }
    options.smart.password_cost = PasswordCost::Light;
    let (server, store, database_url) =
        start_at(backend, options, healporium::store::StoreOptions::default()).await?;
    Some(SecureServer {
        server,
        store,
        database_url,
    })
}

/// The operator's token for `GET /metrics` on secure test servers.
pub const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";

/// Defines one test per backend for each `async fn name(s: SecureServer)`.
#[macro_export]
macro_rules! secure_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::common::start_secure($crate::common::Backend::Sqlite).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match $crate::common::start_secure($crate::common::Backend::Postgres).await {
                        Some(s) => super::$name(s).await,
                        None => eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set"),
                    }
                }
            )*
        }
    };
}

/// A name no other call of this test process used.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The password every helper-made user gets.
pub const PASSWORD: &str = "test-password-1";
/// The redirect URI of helper-made clients.
pub const REDIRECT_URI: &str = "http://localhost:9999/callback";
/// What helper-made public clients may be granted.
pub const APP_SCOPES: &str = "openid fhirUser profile launch launch/patient launch/encounter \
    offline_access online_access patient/*.cruds user/*.cruds";

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = healporium::smart::crypto::random_token(48);
    let challenge = healporium::smart::crypto::digest(&verifier);
    (verifier, challenge)
}

/// The value of the hidden `request` field of a sign-in page.
pub fn request_field(html: &str) -> String {
    let marker = "name=\"request\" value=\"";
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no request field in {html}"))
        + marker.len();
    let end = html[start..].find('"').expect("end of value") + start;
    html[start..end].to_string()
}

/// The query parameters of a redirect `Location`.
pub fn redirect_params(location: &str) -> Vec<(String, String)> {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    serde_urlencoded::from_str(query).expect("redirect query")
}

impl SecureServer {
    /// Registers a user (`role`: patient, practitioner, pharmacist, insurer, admin) with the
    /// password [`PASSWORD`].
    pub async fn add_user(&self, username: &str, role: &str, fhir_user: Option<&str>) {
        let user = NewUser {
            username: username.to_string(),
            password: PASSWORD.to_string(),
            role: Role::parse(role).expect("role"),
            fhir_user: fhir_user.map(str::to_string),
        };
        accounts::add_user(self.store.auth().as_ref(), user, PasswordCost::Light)
            .await
            .expect("add user");
    }

    /// Registers a client; returns the secret of a confidential one.
    pub async fn add_client(
        &self,
        client_id: &str,
        kind: ClientKind,
        redirect_uris: &[&str],
        scopes: &str,
        jwks: Option<&Value>,
        jwks_url: Option<&str>,
    ) -> Option<String> {
        let client = NewClient {
            client_id: Some(client_id.to_string()),
            name: format!("Test app {client_id}"),
            kind,
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.to_string(),
            jwks: jwks.map(|j| j.to_string()),
            jwks_url: jwks_url.map(str::to_string),
        };
        accounts::add_client(self.store.auth().as_ref(), client, PasswordCost::Light)
            .await
            .expect("add client")
            .secret
    }

    /// A public app allowed [`APP_SCOPES`]; returns its client id.
    pub async fn add_public_app(&self) -> String {
        let id = unique("app");
        self.add_client(
            &id,
            ClientKind::Public,
            &[REDIRECT_URI],
            APP_SCOPES,
            None,
            None,
        )
        .await;
        id
    }

    /// POSTs a form to `/auth/{endpoint}` (with Basic credentials when given).
    pub async fn auth_post(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/auth/{endpoint}", self.origin()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).expect("form"));
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.expect("auth request")
    }

    /// client_credentials with client_secret_basic.
    pub async fn client_credentials(&self, client_id: &str, secret: &str, scope: &str) -> Value {
        let resp = self
            .auth_post(
                "token",
                &[("grant_type", "client_credentials"), ("scope", scope)],
                Some((client_id, secret)),
            )
            .await;
        let status = resp.status();
        let v: Value = resp.json().await.expect("token JSON");
        assert_eq!(status, 200, "client_credentials failed: {v}");
        v
    }

    /// A backend-service token with these system scopes (a confidential client allowed
    /// exactly `scope` is registered for it).
    pub async fn system_token(&self, scope: &str) -> String {
        let id = unique("backend");
        let secret = self
            .add_client(&id, ClientKind::Confidential, &[], scope, None, None)
            .await
            .expect("secret");
        self.client_credentials(&id, &secret, scope).await["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// A server that acts with every right (`system/*.cruds`), to set up data.
    pub async fn admin(&self) -> Server {
        self.with_token(&self.system_token("system/*.cruds").await)
    }

    /// Creates a resource with an all-powerful token; returns its id.
    pub async fn create_as_admin(&self, body: &Value) -> String {
        self.admin().await.create(body).await
    }

    /// The authorization-code flow with PKCE through the real pages: `username` signs in to
    /// app `client_id`, consents (picking `pick` as the patient when asked), and the code is
    /// exchanged. `launch`: an EHR launch id.
    pub async fn authorize(
        &self,
        client_id: &str,
        username: &str,
        scope: &str,
        pick: Option<&str>,
        launch: Option<&str>,
    ) -> TokenSet {
        let (code, verifier) = self.code(client_id, username, scope, pick, launch).await;
        let (status, v) = self.exchange(client_id, None, &code, &verifier).await;
        assert_eq!(status, 200, "token exchange: {v}");
        TokenSet::from_json(&v)
    }

    /// The browser half of the flow: an authorization code and its PKCE verifier.
    pub async fn code(
        &self,
        client_id: &str,
        username: &str,
        scope: &str,
        pick: Option<&str>,
        launch: Option<&str>,
    ) -> (String, String) {
        let (verifier, challenge) = pkce();
        let mut query = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT_URI),
            ("scope", scope),
            ("state", "st4te"),
            ("aud", self.base.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if let Some(l) = launch {
            query.push(("launch", l));
        }
        let url = format!(
            "{}/auth/authorize?{}",
            self.origin(),
            serde_urlencoded::to_string(&query).expect("query")
        );
        let page = self.client.get(url).send().await.expect("authorize");
        assert_eq!(page.status(), 200, "authorize page");
        let request = request_field(&page.text().await.expect("page"));
        let consent = self
            .auth_post(
                "login",
                &[
                    ("request", &request),
                    ("username", username),
                    ("password", PASSWORD),
                ],
                None,
            )
            .await;
        assert_eq!(consent.status(), 200, "sign-in");
        let mut form = vec![("request", request.as_str()), ("decision", "allow")];
        if let Some(p) = pick {
            form.push(("patient", p));
        }
        let done = self.auth_post("consent", &form, None).await;
        assert_eq!(done.status(), 303, "consent: {:?}", done.text().await);
        let location = done.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let code = redirect_params(&location)
            .into_iter()
            .find(|(k, _)| k == "code")
            .unwrap_or_else(|| panic!("no code in {location}"))
            .1;
        (code, verifier)
    }

    /// The token exchange of a code: (status, JSON). `basic`: confidential client credentials
    /// (else `client_id` goes in the form, as for public clients).
    pub async fn exchange(
        &self,
        client_id: &str,
        basic: Option<(&str, &str)>,
        code: &str,
        verifier: &str,
    ) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ];
        if basic.is_none() {
            form.push(("client_id", client_id));
        }
        let resp = self.auth_post("token", &form, basic).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("token JSON"))
    }

    /// A new user of `role` (linked to `fhir_user`) signs in to a new public app and grants
    /// `scope`; `patient` is the patient picked when the app asks for `launch/patient`.
    pub async fn user_tokens(
        &self,
        role: &str,
        fhir_user: Option<&str>,
        patient: Option<&str>,
        scope: &str,
    ) -> TokenSet {
        let username = unique(role);
        self.add_user(&username, role, fhir_user).await;
        let app = self.add_public_app().await;
        self.authorize(&app, &username, scope, patient, None).await
    }

    /// An access token of the patient user of `Patient/<patient_id>` (patient context =
    /// that patient), e.g. `patient_token(&id, "patient/*.rs")`.
    pub async fn patient_token(&self, patient_id: &str, scope: &str) -> String {
        let scope = format!("launch/patient {scope}");
        self.user_tokens(
            "patient",
            Some(&format!("Patient/{patient_id}")),
            None,
            &scope,
        )
        .await
        .access_token
    }

    /// An access token of a practitioner (`fhir_user` like `Practitioner/7`); with
    /// `patient`, a standalone launch with that patient picked (the Patient must exist).
    pub async fn practitioner_token(
        &self,
        fhir_user: Option<&str>,
        patient: Option<&str>,
        scope: &str,
    ) -> String {
        let scope = match patient {
            Some(_) => format!("launch/patient {scope}"),
            None => scope.to_string(),
        };
        self.user_tokens("practitioner", fhir_user, patient, &scope)
            .await
            .access_token
    }
}
