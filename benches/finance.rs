//! Benchmark: `Claim/$submit` latency (p50/p99, sequential, one coverage so every claim
//! accumulates on the last) and `$credit-payment` throughput (16 concurrent clients, each on
//! its own credit line, so lines do not wait on each other's lock) through the real server
//! over HTTP, on SQLite and PostgreSQL, with the server's defaults (auditing on). Next to each,
//! its limit in the same run: a plain create of the same Claim (one write instead of three
//! and the adjudication), and plain PaymentReconciliation creates by the same 16 clients.
//!
//! Run: `cargo bench --bench finance`; PostgreSQL is included when HEALPORIUM_BENCH_DATABASE_URL
//! (or HEALPORIUM_TEST_DATABASE_URL) is set (a fresh schema, dropped afterwards).

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
use std::time::{Duration, Instant};

const CLAIMS: usize = 300;
const LINES: usize = 16;
const PAYMENTS_PER_LINE: usize = 40;

async fn serve(url: &str) -> (String, reqwest::Client) {
    let store = healporium::store::open(url).await.expect("store");
    // what `serve` runs with: every interaction audited
    let options = AppOptions {
        audit: true,
        ..AppOptions::default()
    };
    let app = router(store, &options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/fhir"), reqwest::Client::new())
}

async fn post(client: &reqwest::Client, url: String, body: &Value) -> Value {
    let r = client
        .post(url)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status} {v}");
    v
}

async fn put(client: &reqwest::Client, url: String, body: &Value) {
    let r = client
        .put(url)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn submit_latency(base: &str, client: &reqwest::Client) -> (f64, f64) {
    let usd = |v: f64| json!({"value": v, "unit": "USD", "system": "urn:iso:std:iso:4217", "code": "USD"});
    put(
        client,
        format!("{base}/Organization/bench-insurer"),
        &json!({"resourceType": "Organization", "id": "bench-insurer", "name": "Bench"}),
    )
    .await;
    put(client, format!("{base}/InsurancePlan/bench"), &json!({
        "resourceType": "InsurancePlan", "id": "bench", "status": "active",
        "identifier": [{"value": "bench"}], "ownedBy": {"reference": "Organization/bench-insurer"},
        "plan": [{"generalCost": [
            {"type": {"coding": [{"code": "deductible"}]}, "cost": {"value": 500, "currency": "USD"}},
            {"type": {"coding": [{"code": "out-of-pocket-max"}]}, "cost": {"value": 100000, "currency": "USD"}}],
          "specificCost": [{"category": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]},
            "benefit": [{"type": {"text": "in network"}, "cost": [
              {"type": {"coding": [{"code": "allowed"}]}, "value": usd(150.0)},
              {"type": {"coding": [{"code": "copay"}]}, "value": usd(25.0)},
              {"type": {"coding": [{"code": "coinsurance"}]}, "value": {"value": 20, "unit": "%"}}]}]}]}]})).await;
    put(
        client,
        format!("{base}/Patient/bench"),
        &json!({"resourceType": "Patient", "id": "bench"}),
    )
    .await;
    put(
        client,
        format!("{base}/Coverage/bench"),
        &json!({"resourceType": "Coverage", "id": "bench",
        "status": "active", "beneficiary": {"reference": "Patient/bench"},
        "payor": [{"reference": "Organization/bench-insurer"}],
        "class": [{"type": {"coding": [{"code": "plan"}]}, "value": "bench"}]}),
    )
    .await;
    let mut times = Vec::with_capacity(CLAIMS);
    for i in 0..CLAIMS {
        let claim = json!({"resourceType": "Claim", "status": "active",
            "identifier": [{"system": "https://bench.example", "value": format!("c{i}")}],
            "type": {"coding": [{"code": "professional"}]}, "use": "claim",
            "patient": {"reference": "Patient/bench"}, "created": "2026-06-01",
            "provider": {"display": "Bench clinic"}, "priority": {"coding": [{"code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/bench"}}],
            "item": [{"sequence": 1, "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]},
                "net": {"value": 200, "currency": "USD"}}]});
        let t = Instant::now();
        let r = post(client, format!("{base}/Claim/$submit"), &claim).await;
        times.push(t.elapsed());
        assert_eq!(r["outcome"], "complete", "{r}");
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// The limit of `$submit`: the same Claim created plainly (`POST Claim`), p50 and p99.
async fn create_latency(base: &str, client: &reqwest::Client) -> (f64, f64) {
    let mut times = Vec::with_capacity(CLAIMS);
    for i in 0..CLAIMS {
        let claim = json!({"resourceType": "Claim", "status": "active",
            "identifier": [{"system": "https://bench.example/plain", "value": format!("c{i}")}],
            "type": {"coding": [{"code": "professional"}]}, "use": "claim",
            "patient": {"reference": "Patient/bench"}, "created": "2026-06-01",
            "provider": {"display": "Bench clinic"}, "priority": {"coding": [{"code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/bench"}}],
            "item": [{"sequence": 1, "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]},
                "net": {"value": 200, "currency": "USD"}}]});
        let t = Instant::now();
        post(client, format!("{base}/Claim"), &claim).await;
        times.push(t.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// The limit of `$credit-payment`: 16 clients creating PaymentReconciliations plainly.
async fn create_throughput(base: &str, client: &reqwest::Client) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..LINES {
        let client = client.clone();
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            for _ in 0..PAYMENTS_PER_LINE {
                post(
                    &client,
                    format!("{base}/PaymentReconciliation"),
                    &json!({
                    "resourceType": "PaymentReconciliation", "status": "active",
                    "created": "2026-06-01T00:00:00Z", "paymentDate": "2026-06-01",
                    "paymentAmount": {"value": 10, "currency": "USD"}}),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (LINES * PAYMENTS_PER_LINE) as f64 / start.elapsed().as_secs_f64()
}

async fn payment_throughput(base: &str, client: &reqwest::Client) -> (usize, f64) {
    // one patient, line and draw per client
    let mut lines = Vec::new();
    for n in 0..LINES {
        let pid = format!("payer-{n}");
        put(
            client,
            format!("{base}/Patient/{pid}"),
            &json!({"resourceType": "Patient", "id": pid}),
        )
        .await;
        let p = post(
            client,
            format!("{base}/Account/$credit-apply"),
            &json!({"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": format!("Patient/{pid}")}},
            {"name": "product", "valueCode": "standard"},
            {"name": "requestedLimit", "valueMoney": {"value": 5000, "currency": "USD"}},
            {"name": "requestId", "valueString": format!("open-{n}")}]}),
        )
        .await;
        let line = p["parameter"][2]["resource"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let inv = post(client, format!("{base}/Invoice"), &json!({"resourceType": "Invoice", "status": "issued",
            "subject": {"reference": format!("Patient/{pid}")}, "totalGross": {"value": 4000, "currency": "USD"}})).await;
        post(client, format!("{base}/Account/{line}/$credit-draw"), &json!({"resourceType": "Parameters", "parameter": [
            {"name": "source", "valueReference": {"reference": format!("Invoice/{}", inv["id"].as_str().unwrap())}},
            {"name": "termMonths", "valueInteger": 24},
            {"name": "requestId", "valueString": format!("draw-{n}")}]})).await;
        lines.push(line);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (n, line) in lines.into_iter().enumerate() {
        let client = client.clone();
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            for k in 0..PAYMENTS_PER_LINE {
                post(
                    &client,
                    format!("{base}/Account/{line}/$credit-payment"),
                    &json!({"resourceType": "Parameters", "parameter": [
                    {"name": "amount", "valueMoney": {"value": 10, "currency": "USD"}},
                    {"name": "requestId", "valueString": format!("pay-{n}-{k}")}]}),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = LINES * PAYMENTS_PER_LINE;
    (n, n as f64 / start.elapsed().as_secs_f64())
}

async fn run(name: &str, url: &str) {
    let (base, client) = serve(url).await;
    let (p50, p99) = submit_latency(&base, &client).await;
    let (c50, c99) = create_latency(&base, &client).await;
    let (_, rate) = payment_throughput(&base, &client).await;
    let limit = create_throughput(&base, &client).await;
    println!(
        "| {name} | {p50:.1} / {p99:.1} ms | {c50:.1} / {c99:.1} ms | {rate:.0}/s | {limit:.0}/s |"
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "{CLAIMS} sequential $submit; {LINES} clients × {PAYMENTS_PER_LINE} $credit-payment; cores: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        println!(
            "| store | $submit p50 / p99 | limit: POST Claim p50 / p99 | $credit-payment | limit: POST PaymentReconciliation |"
        );
        println!("|---|---|---|---|---|");
        let dir = tempfile::tempdir().unwrap();
        run("SQLite", &format!("sqlite:{}", dir.path().join("bench.db").display())).await;
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
            run(
                "PostgreSQL",
                &format!("{admin}{sep}options=-c%20search_path%3D{schema}"),
            )
            .await;
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut c)
                .await
                .unwrap();
        }
    });
}
