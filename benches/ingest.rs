//! Benchmark: Bundle ingest throughput. Loads the Synthea bundles of ../shared/fhir/synthea
//! (hospital and practitioner batches, then eight patient transactions with conditional
//! references) through the real server over HTTP, on SQLite and PostgreSQL, and next to it
//! a raw INSERT of the same resource JSON into the same database, one transaction per bundle
//! — the limit of the database.
//!
//! Run: `cargo bench --bench ingest`; PostgreSQL is included when HEALPORIUM_BENCH_DATABASE_URL
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
use serde_json::Value;
use std::path::PathBuf;
use std::time::Instant;

fn bundles() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fhir/synthea");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("../shared/fhir/synthea")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    files.sort_by_key(|f| {
        (
            !f.starts_with("hospital"),
            !f.starts_with("practitioner"),
            f.clone(),
        )
    });
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(&f)).expect("bundle");
            (f, text)
        })
        .collect()
}

fn entry_count(text: &str) -> usize {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["entry"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Through the server: (resources, seconds).
async fn through_server(url: &str, bundles: &[(String, String)]) -> (usize, f64) {
    let store = healporium::store::open(url).await.expect("store");
    let app = router(store, &AppOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let client = reqwest::Client::new();
    let mut resources = 0;
    let start = Instant::now();
    for (name, text) in bundles {
        let t0 = Instant::now();
        let r = client
            .post(format!("http://{addr}/fhir"))
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=minimal")
            .body(text.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{name}: {}", r.status());
        let body: Value = r.json().await.unwrap();
        let entries = body["entry"].as_array().map(Vec::len).unwrap_or(0);
        let failed = body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                !e["response"]["status"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with('2')
            })
            .count();
        assert_eq!(failed, 0, "{name}: {failed} entries failed");
        if std::env::var_os("INGEST_VERBOSE").is_some() {
            eprintln!(
                "{name}: {entries} entries in {:.2} s",
                t0.elapsed().as_secs_f64()
            );
        }
        resources += entries;
    }
    (resources, start.elapsed().as_secs_f64())
}

/// The limit: each resource's JSON text inserted as is, one transaction per bundle.
async fn raw_inserts<DB>(pool: &sqlx::Pool<DB>, bundles: &[(String, String)]) -> (usize, f64)
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
{
    sqlx::query::<DB>("CREATE TABLE raw_resource (id TEXT NOT NULL, body TEXT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    let mut n = 0;
    let start = Instant::now();
    for (_, text) in bundles {
        // parse once, serialize each entry's resource once — what the server also must do
        let bundle: Value = serde_json::from_str(text).unwrap();
        let mut tx = pool.begin().await.unwrap();
        for (i, e) in bundle["entry"].as_array().into_iter().flatten().enumerate() {
            let body = serde_json::to_string(&e["resource"]).unwrap();
            sqlx::query::<DB>("INSERT INTO raw_resource (id, body) VALUES ($1, $2)")
                .bind(format!("{n}-{i}"))
                .bind(body)
                .execute(&mut *tx)
                .await
                .unwrap();
            n += 1;
        }
        tx.commit().await.unwrap();
    }
    (n, start.elapsed().as_secs_f64())
}

fn row(name: &str, (n, secs): (usize, f64), limit: Option<f64>) {
    let rate = n as f64 / secs;
    let ratio = limit.map_or("—".to_string(), |l| format!("{:.0}%", 100.0 * rate / l));
    println!("| {name} | {n} | {secs:.2} s | {rate:.0} | {ratio} |");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bundles = bundles();
        let total: usize = bundles.iter().map(|(_, t)| entry_count(t)).sum();
        println!(
            "{} bundles, {total} entries; release build, cores: {}",
            bundles.len(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        println!("| run | resources | time | resources/s | of raw INSERT |");
        println!("|---|---|---|---|---|");

        let dir = tempfile::tempdir().unwrap();
        let raw_url = format!("sqlite:{}?mode=rwc", dir.path().join("raw.db").display());
        let raw_pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                raw_url
                    .parse::<sqlx::sqlite::SqliteConnectOptions>()
                    .unwrap()
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal),
            )
            .await
            .unwrap();
        let raw = raw_inserts(&raw_pool, &bundles).await;
        let server = through_server(
            &format!("sqlite:{}", dir.path().join("hp.db").display()),
            &bundles,
        )
        .await;
        row("SQLite: raw INSERT", raw, None);
        row(
            "SQLite: Healporium (validate, index, integrity)",
            server,
            Some(raw.0 as f64 / raw.1),
        );

        let pg = std::env::var("HEALPORIUM_BENCH_DATABASE_URL")
            .or_else(|_| std::env::var("HEALPORIUM_TEST_DATABASE_URL"))
            .ok();
        if let Some(admin) = pg {
            use sqlx::Connection;
            let schema = format!("hp_ingest_{}", std::process::id());
            let raw_schema = format!("{schema}_raw");
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            for s in [&schema, &raw_schema] {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {s}")))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            let sep = if admin.contains('?') { '&' } else { '?' };
            let url = |s: &str| format!("{admin}{sep}options=-c%20search_path%3D{s}");
            let raw_pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url(&raw_schema))
                .await
                .unwrap();
            let raw = raw_inserts(&raw_pool, &bundles).await;
            let server = through_server(&url(&schema), &bundles).await;
            row("PostgreSQL: raw INSERT", raw, None);
            row(
                "PostgreSQL: Healporium (validate, index, integrity)",
                server,
                Some(raw.0 as f64 / raw.1),
            );
            for s in [&schema, &raw_schema] {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {s} CASCADE"
                )))
                .execute(&mut c)
                .await;
            }
        }
    });
}
