//! Benchmark: notification latency from commit to receiver, p50 and p99, with 1 and with 100
//! active rest-hook Subscriptions on Observation, through the real router, the dispatcher
//! and the job worker of a node (what `serve` runs: auditing on, 4 job workers, a dispatcher
//! pass every 50 ms), on SQLite and PostgreSQL, with a receiver on a local port. With one
//! Subscription, 200 Observations are created 20 ms apart; with 100, 50 Observations 200 ms
//! apart (each is 100 notifications: 500 notifications a second). The latency of a
//! notification is the time from the create's response (the commit) to the receiver's
//! handler.
//!
//! Run: `cargo bench --bench subscriptions`; PostgreSQL is included when
//! HEALPORIUM_BENCH_DATABASE_URL (or HEALPORIUM_TEST_DATABASE_URL) is set.

// a tool, not a request path: a failed step may stop it (see .clippy.toml)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use healporium::app::{AppOptions, router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let seen = s2.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_str::<Value>(&body)
                    && let Some(id) = v.get("id").and_then(Value::as_str)
                {
                    seen.lock().unwrap().push((id.to_string(), at));
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

async fn run(
    name: &str,
    url: &str,
    subscriptions: usize,
    writes: usize,
    gap: Duration,
) -> (f64, f64, usize) {
    let store = healporium::store::open(url).await.expect("store");
    let options = AppOptions {
        audit: true,
        ..AppOptions::default()
    };
    let app = router(store.clone(), &options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let ctx = healporium::interaction::Context::new(store.clone());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(healporium::interaction::notify::run_dispatcher(
        ctx.clone(),
        Duration::from_millis(50),
        stopped.clone(),
    ));
    let config = healporium::config::Config::from_args(
        match <healporium::config::Cli as clap::Parser>::parse_from(["healporium", "serve"]).command
        {
            healporium::config::Command::Serve(a) => *a,
            _ => unreachable!(),
        },
    )
    .unwrap();
    let worker = healporium::jobs::Worker::new(
        store.clone(),
        healporium::app::job_kinds(&ctx, &config.jobs).unwrap(),
        Arc::new(healporium::jobs::SystemClock),
        config.jobs.worker.clone(),
    );
    tokio::spawn(worker.run(stopped));
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: String, body: Value| {
        let http = http.clone();
        async move {
            let r = http
                .request(method, path)
                .header("content-type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Value>().await.unwrap()
        }
    };
    let tag = format!("{name}-{subscriptions}");
    send(
        reqwest::Method::PUT,
        format!("{base}/Patient/{tag}"),
        json!({"resourceType": "Patient", "id": tag}),
    )
    .await;
    let (hook, seen) = receiver().await;
    let mut ids = Vec::new();
    for _ in 0..subscriptions {
        let s = send(reqwest::Method::POST, format!("{base}/Subscription"), json!({
            "resourceType": "Subscription", "status": "requested", "reason": "bench",
            "criteria": format!("Observation?subject=Patient/{tag}"),
            "channel": {"type": "rest-hook", "endpoint": hook, "payload": "application/fhir+json"}})).await;
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    // every Subscription active (its handshake answered)
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let s = send(
                reqwest::Method::GET,
                format!("{base}/Subscription/{id}"),
                json!({}),
            )
            .await;
            if s["status"] == "active" {
                break;
            }
            assert!(Instant::now() < deadline, "handshakes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut committed: HashMap<String, Instant> = HashMap::new();
    for i in 0..writes {
        let o = send(
            reqwest::Method::POST,
            format!("{base}/Observation"),
            json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": format!("bench-{i}")}]},
            "subject": {"reference": format!("Patient/{tag}")}}),
        )
        .await;
        committed.insert(o["id"].as_str().unwrap().to_string(), Instant::now());
        tokio::time::sleep(gap).await;
    }
    let expected = writes * subscriptions;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen.lock().unwrap().len() < expected {
        assert!(Instant::now() < deadline, "notifications");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies: Vec<Duration> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(id, at)| committed.get(id).map(|c| at.saturating_duration_since(*c)))
        .collect();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    (pct(0.5), pct(0.99), latencies.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "1 Subscription: 200 Observations 20 ms apart; 100: 50 Observations 200 ms apart; cores: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        println!("| store | subscriptions | notifications | p50 | p99 |");
        println!("|---|---|---|---|---|");
        let pg = std::env::var("HEALPORIUM_BENCH_DATABASE_URL")
            .or_else(|_| std::env::var("HEALPORIUM_TEST_DATABASE_URL"))
            .ok();
        for (subs, writes, gap) in [(1, 200, 20), (100, 50, 200)] {
            let gap = Duration::from_millis(gap);
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite:{}", dir.path().join("bench.db").display());
            let (p50, p99, n) = run("SQLite", &url, subs, writes, gap).await;
            println!("| SQLite | {subs} | {n} | {p50:.0} ms | {p99:.0} ms |");
            if let Some(admin) = &pg {
                use sqlx::Connection;
                let schema = format!("hp_bench_{}_{subs}", std::process::id());
                let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut c)
                    .await
                    .unwrap();
                let sep = if admin.contains('?') { '&' } else { '?' };
                let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
                let (p50, p99, n) = run("PostgreSQL", &url, subs, writes, gap).await;
                println!("| PostgreSQL | {subs} | {n} | {p50:.0} ms | {p99:.0} ms |");
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    });
}
