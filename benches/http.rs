//! Benchmark: read-by-id and create throughput of the real server (router, validation, store)
//! on SQLite and PostgreSQL, next to a bare axum handler that answers with the same bytes — the
//! HTTP limit of this machine — all driven by wrk in a separate process.
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

fn wrk(url: &str, connections: u32, duration: u64, script: Option<&str>) -> WrkResult {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{duration}s"),
        "--latency",
    ]);
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

/// Seeds one Patient and returns (base URL, its id, the exact bytes a read returns).
async fn start_healporium(url: &str) -> (String, String, Bytes) {
    let store = healporium::store::open(url).await.expect("store");
    let app = router(store, &AppOptions::default());
    let base = format!("{}/fhir", serve(app).await);
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{base}/Patient"))
        .header("content-type", "application/fhir+json")
        .body(PATIENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let bytes = client
        .get(format!("{base}/Patient/{id}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    (base, id, bytes)
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
            "wrk -t2, {duration}s per run; reads with 32 connections, creates with 16; cores: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        println!("| run | requests/s | p50 | p99 | of HTTP limit | errors |");
        println!("|---|---|---|---|---|---|");
        let mut read_bytes = Bytes::new();
        let mut results = Vec::new();
        for (name, url, _) in &backends {
            let (base, id, bytes) = start_healporium(url).await;
            read_bytes = bytes;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let read_url = format!("{base}/Patient/{id}");
            let read = tokio::task::spawn_blocking(move || wrk(&read_url, 32, duration, None))
                .await
                .unwrap();
            let create_url = format!("{base}/Patient");
            let create =
                tokio::task::spawn_blocking(move || wrk(&create_url, 16, duration, Some(script)))
                    .await
                    .unwrap();
            results.push((name.clone(), read, create));
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
        let get_url = format!("{bare_base}/get");
        let bare_get = tokio::task::spawn_blocking(move || wrk(&get_url, 32, duration, None))
            .await
            .unwrap();
        let post_url = format!("{bare_base}/post");
        let bare_post =
            tokio::task::spawn_blocking(move || wrk(&post_url, 16, duration, Some(script)))
                .await
                .unwrap();
        row("bare axum: GET same bytes", &bare_get, None);
        row("bare axum: POST echo", &bare_post, None);
        for (name, read, create) in &results {
            row(&format!("{name}: read by id"), read, Some(bare_get.rps));
            row(&format!("{name}: create"), create, Some(bare_post.rps));
        }
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
