//! Test harness: starts the real Healporium router on a real database (a fresh SQLite file,
//! or a fresh PostgreSQL schema when HEALPORIUM_TEST_DATABASE_URL is set) on a real port,
//! and talks HTTP to it.
//!
//! `backends!(name, …)` turns each `async fn name(s: Server)` into two tests, one per
//! database. Without HEALPORIUM_TEST_DATABASE_URL the PostgreSQL half is skipped — unless
//! CI=true, where a missing PostgreSQL is a failure.

#![allow(dead_code)]

pub mod browser;
pub mod fhir_xml;
pub mod secure;
pub mod web;

pub use secure::{SecureServer, TokenSet, start_secure, start_secure_with};

use healporium::app::AppOptions;
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use std::path::PathBuf;

pub const FHIR_JSON: &str = "application/fhir+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server. Clones share it (the last one dropped stops it); a clone made with
/// [`Server::with_token`] sends `Authorization: Bearer …` on every request.
#[derive(Clone)]
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub backend: Backend,
    /// Sent as `Authorization: Bearer <bearer>` unless a request names its own Authorization.
    pub bearer: Option<String>,
    _guard: std::sync::Arc<Guard>,
}

/// What a server owns: its task and its database.
struct Guard {
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
    /// The listeners: the server's, or its nodes' and the round-robin proxy's.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some((admin_url, schema)) = self.pg_schema.take() {
            // best effort: the CI database itself is dropped at the end of the run anyway
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        use sqlx::Connection;
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP SCHEMA IF EXISTS {schema} CASCADE"
                            )))
                            .execute(&mut c)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// ../shared/fhir next to the checkout: the specification material the tests compare with.
pub fn shared() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fhir");
    assert!(
        dir.join("definitions").is_dir(),
        "the tests need ../shared/fhir beside this checkout ({} is missing)",
        dir.display()
    );
    dir
}

/// The PostgreSQL URL to test against, None to skip (panics under CI=true).
pub fn postgres_url() -> Option<String> {
    match std::env::var("HEALPORIUM_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "CI=true but HEALPORIUM_TEST_DATABASE_URL is not set: PostgreSQL tests must run"
                );
            }
            None
        }
    }
}

/// A database URL for a fresh store of `backend` (and what to clean up).
pub async fn fresh_database(
    backend: Backend,
) -> Option<(String, Option<tempfile::TempDir>, Option<(String, String)>)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite:{}", dir.path().join("test.db").display());
            Some((url, Some(dir), None))
        }
        Backend::Postgres => {
            let admin = postgres_url()?;
            let schema = format!("hp_test_{}", uuid_simple());
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&admin)
                .await
                .expect("connect to HEALPORIUM_TEST_DATABASE_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut c)
                .await
                .expect("create test schema");
            let sep = if admin.contains('?') { '&' } else { '?' };
            let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
            Some((url, None, Some((admin, schema))))
        }
    }
}

fn uuid_simple() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        t % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The configuration `healporium serve` runs with by default (its job settings, for tests
/// that run a worker of their own).
pub fn serve_config() -> healporium::config::Config {
    let cli = <healporium::config::Cli as clap::Parser>::parse_from(["healporium", "serve"]);
    match cli.command {
        healporium::config::Command::Serve(a) => {
            healporium::config::Config::from_args(*a).expect("default config")
        }
        _ => unreachable!(),
    }
}

/// Starts a server on a fresh database; None when the backend is not available here.
pub async fn start(backend: Backend) -> Option<Server> {
    start_with(backend, AppOptions::default()).await
}

pub async fn start_with(backend: Backend, options: AppOptions) -> Option<Server> {
    start_store(backend, options).await.map(|(s, _)| s)
}

/// Starts a server and also returns its store (for registering accounts and clients).
pub async fn start_store(
    backend: Backend,
    options: AppOptions,
) -> Option<(Server, std::sync::Arc<dyn healporium::store::Store>)> {
    start_tuned(backend, options, healporium::store::StoreOptions::default()).await
}

/// [`start_store`] with a store opened with `store_options` (a short statement timeout).
pub async fn start_tuned(
    backend: Backend,
    options: AppOptions,
    store_options: healporium::store::StoreOptions,
) -> Option<(Server, std::sync::Arc<dyn healporium::store::Store>)> {
    start_at(backend, options, store_options)
        .await
        .map(|(server, store, _)| (server, store))
}

/// [`start_tuned`], also returning the database URL (for running `healporium` commands on
/// the server's database).
pub async fn start_at(
    backend: Backend,
    options: AppOptions,
    store_options: healporium::store::StoreOptions,
) -> Option<(Server, std::sync::Arc<dyn healporium::store::Store>, String)> {
    let (url, dir, pg_schema) = fresh_database(backend).await?;
    let store = healporium::store::open_with(&url, &store_options)
        .await
        .expect("open store");
    let apps = node_routers(backend, &url, &store_options, store.clone(), |s| {
        healporium::app::router(s, &options)
    })
    .await;
    Some((
        listen(backend, apps, &options.prefix, dir, pg_schema).await,
        store,
        url,
    ))
}

/// Two servers on one fresh database: the first with the default store options (to load
/// data), the second with `store_options`.
pub async fn start_pair(
    backend: Backend,
    options: AppOptions,
    store_options: healporium::store::StoreOptions,
) -> Option<(Server, Server)> {
    let (url, dir, pg_schema) = fresh_database(backend).await?;
    let plain = healporium::store::open(&url).await.expect("open store");
    let tuned = healporium::store::open_with(&url, &store_options)
        .await
        .expect("open store");
    let first = node_routers(
        backend,
        &url,
        &healporium::store::StoreOptions::default(),
        plain,
        |s| healporium::app::router(s, &options),
    )
    .await;
    let first = listen(backend, first, &options.prefix, None, None).await;
    let second = node_routers(backend, &url, &store_options, tuned, |s| {
        healporium::app::router(s, &options)
    })
    .await;
    let second = listen(backend, second, &options.prefix, dir, pg_schema).await;
    Some((first, second))
}

/// Serves `store` on a new port (`dir`/`pg_schema`: what to clean up with the server); one
/// node, whatever [`test_nodes`] says.
pub async fn serve(
    backend: Backend,
    store: std::sync::Arc<dyn healporium::store::Store>,
    options: &AppOptions,
    dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
) -> Server {
    let app = healporium::app::router(store, options);
    listen(backend, vec![app], &options.prefix, dir, pg_schema).await
}

/// How many nodes serve each PostgreSQL test server: `HEALPORIUM_TEST_NODES` (default 1).
/// With more, the suite runs in scale-out mode: that many independent nodes — each its own
/// router, store pool, caches, audit writer and authorization server state, as separate
/// `healporium serve` processes have — on one database, behind a round-robin proxy, so
/// consecutive requests of a test land on different nodes and anything a node kept only in
/// its own memory shows up as a failure. SQLite servers are always one node (one file, one
/// writer: SQLite is not the scale-out store).
pub fn test_nodes(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => std::env::var("HEALPORIUM_TEST_NODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n: &usize| *n >= 1)
            .unwrap_or(1),
    }
}

/// The routers of a server's nodes: the first on `store`, each other one on a store of its
/// own opened on `url`.
pub async fn node_routers(
    backend: Backend,
    url: &str,
    store_options: &healporium::store::StoreOptions,
    store: std::sync::Arc<dyn healporium::store::Store>,
    router: impl Fn(std::sync::Arc<dyn healporium::store::Store>) -> axum::Router,
) -> Vec<axum::Router> {
    let mut apps = vec![router(store)];
    for _ in 1..test_nodes(backend) {
        let own = healporium::store::open_with(url, store_options)
            .await
            .expect("open a node's store");
        apps.push(router(own));
    }
    apps
}

/// Listens with `apps` on new ports: one app is the server; several are nodes behind a
/// round-robin TCP proxy (each connection to the next node; the test client opens one
/// connection per request, so requests alternate).
pub async fn listen(
    backend: Backend,
    apps: Vec<axum::Router>,
    prefix: &str,
    dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
) -> Server {
    let mut tasks = Vec::new();
    let mut addrs = Vec::new();
    for app in apps {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        addrs.push(listener.local_addr().expect("addr"));
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }
    let mut client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    let addr = if addrs.len() == 1 {
        addrs[0]
    } else {
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = front.local_addr().expect("addr");
        tasks.push(tokio::spawn(round_robin(front, addrs)));
        client = client.pool_max_idle_per_host(0);
        addr
    };
    Server {
        base: format!("http://{addr}{prefix}"),
        client: client.build().expect("http client"),
        backend,
        bearer: None,
        _guard: std::sync::Arc::new(Guard {
            _dir: dir,
            pg_schema,
            tasks,
        }),
    }
}

/// The `/metrics` page of every node of `s` (metrics are per node, as with separate
/// processes): one scrape per node, in turn through the round-robin proxy.
pub async fn metrics_pages(s: &Server, token: &str) -> Vec<String> {
    let mut pages = Vec::new();
    for _ in 0..test_nodes(s.backend) {
        let r = s
            .client
            .get(format!("{}/metrics", s.origin()))
            .bearer_auth(token)
            .send()
            .await
            .expect("scrape");
        pages.push(r.text().await.expect("metrics page"));
    }
    pages
}

/// A layer-4 load balancer: each accepted connection is piped to the next node in turn.
async fn round_robin(front: tokio::net::TcpListener, nodes: Vec<std::net::SocketAddr>) {
    let mut next = 0usize;
    loop {
        let Ok((mut inbound, _)) = front.accept().await else {
            continue;
        };
        let node = nodes[next % nodes.len()];
        next += 1;
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(node).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// A server whose requests carry a principal described by test headers (`x-test-scope`,
/// `x-test-patient`), for exercising the enforcement point with many principals at once;
/// requests without `x-test-scope` run with authorization off (to set data up). The SMART
/// tests obtain real tokens instead.
pub async fn start_with_test_principals(backend: Backend) -> Option<Server> {
    start_with_test_principals_and(backend, AppOptions::default())
        .await
        .map(|(s, _)| s)
}

/// [`start_with_test_principals`] with options; also returns the database URL.
pub async fn start_with_test_principals_and(
    backend: Backend,
    options: AppOptions,
) -> Option<(Server, String)> {
    let (url, dir, pg_schema) = fresh_database(backend).await?;
    let store_options = healporium::store::StoreOptions::default();
    let store = healporium::store::open_with(&url, &store_options)
        .await
        .expect("open store");
    let apps = node_routers(backend, &url, &store_options, store, |s| {
        healporium::app::router(s, &options).layer(axum::middleware::from_fn(inject_test_principal))
    })
    .await;
    Some((listen(backend, apps, "/fhir", dir, pg_schema).await, url))
}

async fn inject_test_principal(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let get = |h: &axum::http::HeaderMap, name: &str| -> Option<String> {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let scope = get(req.headers(), "x-test-scope");
    let patient = get(req.headers(), "x-test-patient");
    let user = get(req.headers(), "x-test-user");
    let fhir_user = get(req.headers(), "x-test-fhir-user");
    let role =
        get(req.headers(), "x-test-role").and_then(|r| healporium::auth::Role::parse(&r).ok());
    if let Some(scope) = scope {
        let principal = healporium::auth::Principal {
            client_id: "test-client".to_string(),
            user,
            role,
            fhir_user,
            patient_context: patient,
            grants: healporium::auth::parse_scopes(&scope),
            scope,
            token_id: None,
        };
        req.extensions_mut().insert(principal);
    }
    next.run(req).await
}

/// A server without referential integrity, for loading resources whose references point at
/// resources that are not loaded (the official examples).
pub async fn start_lenient(backend: Backend) -> Option<Server> {
    start_with(
        backend,
        AppOptions {
            referential_integrity: false,
            ..AppOptions::default()
        },
    )
    .await
}

/// Like [`backends!`], on servers without referential integrity.
#[macro_export]
macro_rules! lenient_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::common::start_lenient($crate::common::Backend::Sqlite).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match $crate::common::start_lenient($crate::common::Backend::Postgres).await {
                        Some(s) => super::$name(s).await,
                        None => eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set"),
                    }
                }
            )*
        }
    };
}

/// Defines one test per backend for each `async fn name(s: Server)`.
#[macro_export]
macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::common::start($crate::common::Backend::Sqlite).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match $crate::common::start($crate::common::Backend::Postgres).await {
                        Some(s) => super::$name(s).await,
                        None => eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set"),
                    }
                }
            )*
        }
    };
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }

    /// Asserts the status and, for errors, that the body is an OperationOutcome.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        if status >= 400 {
            let v = self.json();
            assert_eq!(v["resourceType"], "OperationOutcome", "{}", self.text);
            assert!(v["issue"][0]["code"].is_string());
            assert_eq!(
                self.header("content-type"),
                Some("application/fhir+json; charset=utf-8")
            );
        }
        self
    }

    /// The expressions of every issue of an OperationOutcome body.
    pub fn expressions(&self) -> Vec<String> {
        self.json()["issue"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect()
    }
}

impl Server {
    /// The same server, sending `Authorization: Bearer <token>` on every request.
    /// A client of a server running elsewhere (a `healporium serve` process) at `base`.
    pub fn at(base: &str) -> Server {
        Server {
            base: base.to_string(),
            client: reqwest::Client::new(),
            backend: Backend::Sqlite,
            bearer: None,
            _guard: std::sync::Arc::new(Guard {
                _dir: None,
                pg_schema: None,
                tasks: Vec::new(),
            }),
        }
    }

    pub fn with_token(&self, token: &str) -> Server {
        Server {
            bearer: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The server's origin (`http://127.0.0.1:port`), where `/auth/…` lives.
    pub fn origin(&self) -> String {
        self.base
            .strip_suffix("/fhir")
            .unwrap_or(&self.base)
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let own_auth = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(token), false) = (&self.bearer, own_auth) {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp: Response = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut h = vec![("content-type", FHIR_JSON)];
        h.extend_from_slice(headers);
        self.send(Method::POST, path, &h, Some(body.to_string()))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.put_with(path, body, &[]).await
    }

    pub async fn put_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut h = vec![("content-type", FHIR_JSON)];
        h.extend_from_slice(headers);
        self.send(Method::PUT, path, &h, Some(body.to_string()))
            .await
    }

    pub async fn patch_with(
        &self,
        path: &str,
        content_type: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut h = vec![("content-type", content_type)];
        h.extend_from_slice(headers);
        self.send(Method::PATCH, path, &h, Some(body.to_string()))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, &[], None).await
    }

    pub async fn delete_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::DELETE, path, headers, None).await
    }

    /// Creates a resource and returns its id.
    pub async fn create(&self, body: &Value) -> String {
        let rt = body["resourceType"].as_str().expect("resourceType");
        let r = self.post(rt, body).await.expect(201);
        r.json()["id"].as_str().expect("id").to_string()
    }

    /// `POST /hl7v2` with an ER7 message (the ACK comes back as the body).
    pub async fn post_hl7(&self, message: &str) -> Reply {
        let mut req = self
            .client
            .post(format!("{}/hl7v2", self.origin()))
            .header("content-type", "x-application/hl7-v2+er7")
            .body(message.to_string());
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        let resp: Response = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            text,
        }
    }

    /// The total of the system history: how many versions the store holds.
    pub async fn version_count(&self) -> u64 {
        self.get("_history?_count=0").await.expect(200).json()["total"]
            .as_u64()
            .expect("total")
    }
}

/// Every official example as (file name, resource), in a stable order.
pub fn official_examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let dir = shared().join("examples");
    let mut types: Vec<_> = std::fs::read_dir(&dir)
        .expect("../shared/fhir/examples is readable")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    types.sort_by_key(|e| e.path());
    for t in types {
        let mut files: Vec<_> = std::fs::read_dir(t.path())
            .expect("readable")
            .filter_map(Result::ok)
            .collect();
        files.sort_by_key(|e| e.path());
        for f in files {
            let text = std::fs::read_to_string(f.path()).expect("readable");
            let v: Value = serde_json::from_str(&text).expect("example is JSON");
            out.push((f.file_name().to_string_lossy().to_string(), v));
        }
    }
    out
}

/// A resource without `meta` and `id`, for comparing what went in with what came out.
pub fn without_meta(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.shift_remove("meta");
        o.shift_remove("id");
    }
    v
}
