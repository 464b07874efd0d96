//! Benchmark: read-by-id, search and create throughput of the real server (router, validation,
//! store) on SQLite and PostgreSQL with the defaults `healporium serve` runs with — every
//! request carries a bearer token that is verified, every interaction is audited (reads
//! durably before their response) in a keyed chain — next to a bare axum handler that answers
//! with the same bytes (the HTTP limit of this machine), all driven by wrk in a separate
//! process. One row per database also reads with auditing and authorization off (the library
//! defaults), to show what the audit costs.
//!
//! Run: `cargo bench --bench http` (needs `wrk`). PostgreSQL is included when
//! HEALPORIUM_BENCH_DATABASE_URL (or HEALPORIUM_TEST_DATABASE_URL) is set; it runs in a fresh
//! schema that is dropped afterwards. `--duration SECS` (default 10).

// a tool, not a request path: a failed step may stop it (see .clippy.toml)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use healporium::app::{AppOptions, router};
use std::process::Command;
use std::time::Duration;

const PATIENT: &str = r#"{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.36.146.595.217.0.1","value":"12345"}],"active":true,"name":[{"use":"official","family":"Chalmers","given":["Peter","James"]}],"telecom":[{"system":"phone","value":"(03) 5555 6473","use":"work"}],"gender":"male","birthDate":"1974-12-25","address":[{"use":"home","line":["534 Erewhon St"],"city":"PleasantVille","state":"Vic","postalCode":"3999"}]}"#;

struct WrkResult {
    rps: f64,
    p50: String,
    p99: String,
    errors: String,
}

fn wrk(
    url: &str,
    connections: u32,
    duration: u64,
    script: Option<&str>,
    token: Option<&str>,
) -> WrkResult {
    let mut cmd = Command::new("wrk");
    let threads = connections.min(2);
    cmd.args([
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        &format!("-d{duration}s"),
        "--latency",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(s) = script {
        cmd.args(["-s", s]);
    }
    cmd.arg(url);
    let out = cmd.output().expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    let rps = field("Requests/sec:").parse().unwrap_or(0.0);
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    WrkResult {
        rps,
        p50: field("50%"),
        p99: field("99%"),
        errors,
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// A started server: its FHIR base, the token its requests carry, the seeded Patient's id and
/// the exact bytes a read of it returns.
struct Started {
    base: String,
    token: Option<String>,
    id: String,
    bytes: Bytes,
    _dir: tempfile::TempDir,
}

/// Starts the server on `url` — with `serve`'s defaults (auditing on in a keyed chain,
/// SMART authorization on, a backend token with `system/*.cruds`) when `defaults` — and seeds
/// one Patient to read plus 1,000 Patients over 100 family names (`F0`…`F99`) to search.
async fn start_healporium(url: &str, defaults: bool) -> Started {
    use healporium::app::AuthMode;
    use healporium::smart::PasswordCost;
    use healporium::smart::accounts::{self, ClientKind, NewClient};
    let store = healporium::store::open(url).await.expect("store");
    let dir = tempfile::tempdir().unwrap();
    let options = if defaults {
        AppOptions {
            audit: true,
            auth: AuthMode::On,
            seal: Some(std::sync::Arc::new(
                healporium::interaction::seal::Seal::open(&dir.path().join("audit-key")).unwrap(),
            )),
            ..AppOptions::default()
        }
    } else {
        AppOptions::default()
    };
    let app = router(store.clone(), &options);
    let origin = serve(app).await;
    let base = format!("{origin}/fhir");
    let client = reqwest::Client::new();
    let token = if defaults {
        let id = format!("bench-{}", std::process::id());
        let scope = "system/*.cruds";
        let secret = accounts::add_client(
            store.auth().as_ref(),
            NewClient {
                client_id: Some(id.clone()),
                name: "bench".into(),
                kind: ClientKind::Confidential,
                redirect_uris: Vec::new(),
                scopes: scope.into(),
                jwks: None,
                jwks_url: None,
            },
            PasswordCost::Light,
        )
        .await
        .unwrap()
        .secret
        .unwrap();
        let v: serde_json::Value = client
            .post(format!("{origin}/auth/token"))
            .basic_auth(&id, Some(&secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&scope={}",
                scope.replace('/', "%2F").replace('*', "%2A")
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Some(v["access_token"].as_str().unwrap().to_string())
    } else {
        None
    };
    let auth = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let created: serde_json::Value = auth(client.post(format!("{base}/Patient")))
        .header("content-type", "application/fhir+json")
        .body(PATIENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let entries: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({"request": {"method": "POST", "url": "Patient"},
                "resource": {"resourceType": "Patient", "name": [{"family": format!("F{}", i % 100), "given": [format!("G{i}")]}],
                             "gender": if i % 2 == 0 { "female" } else { "male" }, "birthDate": "1970-01-01"}})
        })
        .collect();
    let status = auth(client.post(&base))
        .header("content-type", "application/fhir+json")
        .body(
            serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "seeding: {status}");
    let bytes = auth(client.get(format!("{base}/Patient/{id}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    Started {
        base,
        token,
        id,
        bytes,
        _dir: dir,
    }
}

fn row(name: &str, r: &WrkResult, limit: Option<f64>) {
    let ratio = limit.map_or("—".to_string(), |l| format!("{:.0}%", 100.0 * r.rps / l));
    println!(
        "| {name} | {:.0} | {} | {} | {ratio} | {} |",
        r.rps,
        r.p50,
        r.p99,
        if r.errors.is_empty() {
            "none"
        } else {
            &r.errors
        }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let duration = args
        .iter()
        .position(|a| a == "--duration")
        .and_then(|i| args.get(i + 1))
        .and_then(|d| d.parse().ok())
        .unwrap_or(10u64);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/create.lua");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite:{}", dir.path().join("bench.db").display());
        let mut backends = vec![("SQLite".to_string(), sqlite, None)];
        let pg = std::env::var("HEALPORIUM_BENCH_DATABASE_URL")
            .or_else(|_| std::env::var("HEALPORIUM_TEST_DATABASE_URL"))
            .ok();
        if let Some(admin) = pg {
            use sqlx::Connection;
            let schema = format!("hp_bench_{}", std::process::id());
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut c)
                .await
                .unwrap();
            let sep = if admin.contains('?') { '&' } else { '?' };
            let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
            backends.push(("PostgreSQL".to_string(), url, Some((admin, schema))));
        }
        println!(
            "wrk, {duration}s per run; creates with 16 connections; cores: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        let mut read_bytes = Bytes::new();
        let mut results: Vec<(String, WrkResult, Option<&str>)> = Vec::new();
        let run = |url: String, c: u32, script: Option<&'static str>, token: Option<String>| {
            tokio::task::spawn_blocking(move || wrk(&url, c, duration, script, token.as_deref()))
        };
        for (name, url, _) in &backends {
            // the library defaults: no audit, no authorization (what the audit costs)
            let off = start_healporium(url, false).await;
            let read_url = format!("{}/Patient/{}", off.base, off.id);
            let r = run(read_url, 16, None, None).await.unwrap();
            results.push((
                format!("{name}, audit and auth off: read by id, 16 conn"),
                r,
                Some("get"),
            ));
            // what `serve` runs with
            let s = start_healporium(url, true).await;
            read_bytes = s.bytes.clone();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let read_url = format!("{}/Patient/{}", s.base, s.id);
            for c in [1, 16, 64] {
                let r = run(read_url.clone(), c, None, s.token.clone())
                    .await
                    .unwrap();
                results.push((
                    format!("{name}: read by id, {c} conn"),
                    r,
                    Some(if c == 64 { "get64" } else { "get" }),
                ));
            }
            let search_url = format!("{}/Patient?family=F7&_count=10", s.base);
            let r = run(search_url, 1, None, s.token.clone()).await.unwrap();
            results.push((
                format!("{name}: search family=X&_count=10, 1 conn"),
                r,
                None,
            ));
            let r = run(
                format!("{}/Patient", s.base),
                16,
                Some(script),
                s.token.clone(),
            )
            .await
            .unwrap();
            results.push((format!("{name}: create, 16 conn"), r, Some("post")));
        }
        // the same bytes from a bare handler: what HTTP alone costs on this machine
        let body = read_bytes.clone();
        let bare = Router::new()
            .route(
                "/get",
                get(move || {
                    let b = body.clone();
                    async move { ([(CONTENT_TYPE, "application/fhir+json; charset=utf-8")], b) }
                }),
            )
            .route(
                "/post",
                axum::routing::post(move |b: Bytes| async move {
                    (
                        axum::http::StatusCode::CREATED,
                        [(CONTENT_TYPE, "application/fhir+json; charset=utf-8")],
                        b,
                    )
                }),
            );
        let bare_base = serve(bare).await;
        let bare_get = run(format!("{bare_base}/get"), 16, None, None)
            .await
            .unwrap();
        let bare_get64 = run(format!("{bare_base}/get"), 64, None, None)
            .await
            .unwrap();
        let bare_post = run(format!("{bare_base}/post"), 16, Some(script), None)
            .await
            .unwrap();
        println!("| run | requests/s | p50 | p99 | of HTTP limit | errors |");
        println!("|---|---|---|---|---|---|");
        row("bare axum: GET same bytes, 16 conn", &bare_get, None);
        row("bare axum: GET same bytes, 64 conn", &bare_get64, None);
        row("bare axum: POST echo, 16 conn", &bare_post, None);
        for (name, r, limit) in &results {
            let limit = match limit {
                Some("get") => Some(bare_get.rps),
                Some("get64") => Some(bare_get64.rps),
                Some(_) => Some(bare_post.rps),
                None => None,
            };
            row(name, r, limit);
        }
        // every server of the run lives in this process: its memory after the whole run
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        println!(
            "\nmemory after the whole run (every server above, one process): RSS {} MB, peak {} MB",
            kb("VmRSS:") / 1024,
            kb("VmHWM:") / 1024
        );
        for (_, _, pg) in backends {
            if let Some((admin, schema)) = pg {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&mut c)
                    .await;
                }
            }
        }
    });
}
