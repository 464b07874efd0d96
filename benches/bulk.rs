//! Benchmark: Bulk Data export and import throughput, next to the limits of the same
//! database — a raw SELECT of the same rows' JSON, and a raw INSERT of the same lines into a
//! two-column table (as many per transaction as the import commits) — and the peak memory above
//! idle while exporting and downloading.
//!
//! It loads N Patients (default 100,000; `-- --patients N`) through the server, then times:
//! the raw SELECT of their current bodies; an export (`$export?_type=Patient`, kick-off to
//! manifest, the job run by a worker in the process) and the download of its files; an
//! import of those files into a fresh database (`$import` of files under the import
//! directory); and the raw INSERT of the same lines. RSS is sampled every 5 ms.
//!
//! Run: `cargo bench --bench bulk`; PostgreSQL is included when HEALPORIUM_BENCH_DATABASE_URL
//! (or HEALPORIUM_TEST_DATABASE_URL) is set (fresh schemas, dropped afterwards).

// a tool, not a request path: a failed step may stop it (see .clippy.toml)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use healporium::app::{AppOptions, router};
use healporium::interaction::bulk::Settings;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples RSS every 5 ms until dropped; `peak` is the largest seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kb()));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kb(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        Sampler {
            stop,
            peak,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn patient(i: usize) -> Value {
    json!({"resourceType": "Patient", "id": format!("p{i}"), "active": true,
        "identifier": [{"system": "http://bench/mrn", "value": format!("{i}")}],
        "name": [{"family": format!("Family{}", i % 500), "given": [format!("Given{}", i % 97)]}],
        "gender": if i.is_multiple_of(2) { "female" } else { "male" },
        "birthDate": format!("{}-{:02}-{:02}", 1930 + i % 90, 1 + i % 12, 1 + i % 28),
        "telecom": [{"system": "phone", "value": format!("555-{i:07}")}],
        "address": [{"line": [format!("{i} Main Street")], "city": "Springfield", "postalCode": format!("{:05}", i % 99999)}]})
}

struct Node {
    base: String,
    worker: Arc<healporium::jobs::Worker>,
}

async fn node(url: &str, settings: Settings) -> Node {
    let store = healporium::store::open(url).await.expect("store");
    let options = AppOptions {
        referential_integrity: false,
        bulk: settings.clone(),
        ..AppOptions::default()
    };
    let app = router(store.clone(), &options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let ctx = healporium::interaction::Context {
        bulk: settings,
        ..healporium::interaction::Context::new(store.clone())
    };
    let config = healporium::config::JobConfig {
        worker: Default::default(),
        cleanup_every_secs: 300,
        time_zone: "UTC".into(),
        drain_ms: 1000,
    };
    let worker = healporium::jobs::Worker::new(
        store.clone(),
        healporium::app::job_kinds(&ctx, &config).unwrap(),
        Arc::new(healporium::jobs::SystemClock),
        healporium::jobs::WorkerOptions::default(),
    );
    Node {
        base: format!("http://{addr}/fhir"),
        worker: Arc::new(worker),
    }
}

async fn load(n: &Node, count: usize) -> f64 {
    let client = reqwest::Client::new();
    let start = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"resource": patient(*i), "request": {"method": "PUT", "url": format!("Patient/p{i}")}}))
            .collect();
        let r = client
            .post(&n.base)
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=minimal")
            .body(json!({"resourceType": "Bundle", "type": "batch", "entry": entries}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    start.elapsed().as_secs_f64()
}

/// Kicks off, runs the job, returns the manifest.
async fn run_bulk(n: &Node, kick: reqwest::RequestBuilder) -> Value {
    let r = kick
        .header("accept", "application/fhir+json")
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    let status = r.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_string();
    let client = reqwest::Client::new();
    loop {
        n.worker.tick().await;
        let r = client.get(&status).send().await.unwrap();
        match r.status().as_u16() {
            200 => return r.json().await.unwrap(),
            202 => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            s => panic!("status {s}: {}", r.text().await.unwrap()),
        }
    }
}

/// Downloads every output file chunk by chunk (to `dir` when given); returns lines read.
async fn download(manifest: &Value, dir: Option<&Path>) -> usize {
    let client = reqwest::Client::new();
    let mut lines = 0;
    for (k, o) in manifest["output"].as_array().unwrap().iter().enumerate() {
        let mut r = client
            .get(o["url"].as_str().unwrap())
            .header("accept", "application/fhir+ndjson")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let mut file = dir.map(|d| {
            std::io::BufWriter::new(
                std::fs::File::create(d.join(format!("{k:04}.ndjson"))).unwrap(),
            )
        });
        while let Some(chunk) = r.chunk().await.unwrap() {
            lines += chunk.iter().filter(|b| **b == b'\n').count();
            if let Some(f) = file.as_mut() {
                std::io::Write::write_all(f, &chunk).unwrap();
            }
        }
    }
    lines
}

/// The limit of export: the current bodies of every Patient, read and counted.
async fn raw_select<DB>(pool: &sqlx::Pool<DB>) -> (usize, f64)
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use futures_util::TryStreamExt;
    use sqlx::Row;
    let start = Instant::now();
    let mut rows = sqlx::query::<DB>(
        "SELECT v.body FROM resource r JOIN resource_version v ON v.resource_type = \
         r.resource_type AND v.id = r.id AND v.version = r.version \
         WHERE r.resource_type = 'Patient' AND NOT r.deleted",
    )
    .fetch(pool);
    let mut n = 0;
    let mut bytes = 0;
    while let Some(row) = rows.try_next().await.unwrap() {
        let body: String = row.get(0);
        bytes += body.len();
        n += 1;
    }
    assert!(bytes > 0);
    (n, start.elapsed().as_secs_f64())
}

/// The limit of import: the same lines inserted as they are, as many per transaction as the
/// import commits together.
async fn raw_insert<DB>(pool: &sqlx::Pool<DB>, dir: &Path) -> (usize, f64)
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
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let start = Instant::now();
    let mut n = 0;
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for chunk in lines.chunks(healporium::interaction::bulk::import::BATCH) {
            let mut tx = pool.begin().await.unwrap();
            for line in chunk {
                // parsed, as the import must, to find the id
                let v: Value = serde_json::from_str(line).unwrap();
                sqlx::query::<DB>("INSERT INTO raw_resource (id, body) VALUES ($1, $2)")
                    .bind(v["id"].as_str().unwrap().to_string())
                    .bind(line.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                n += 1;
            }
            tx.commit().await.unwrap();
        }
    }
    (n, start.elapsed().as_secs_f64())
}

fn row(name: &str, n: usize, secs: f64, limit: Option<f64>) -> f64 {
    let rate = n as f64 / secs;
    let ratio = limit.map_or("—".to_string(), |l| format!("{:.0} %", 100.0 * rate / l));
    println!("| {name} | {n} | {secs:.2} s | {rate:.0} | {ratio} |");
    rate
}

struct Urls {
    label: &'static str,
    /// The database exported (loaded first).
    source: String,
    /// The fresh database imported into.
    target: String,
    /// The database of the raw INSERT.
    raw: String,
}

/// The raw limits need a pool of their own on the same database.
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

async fn pool(url: &str) -> Pool {
    if url.starts_with("sqlite:") {
        let options = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        Pool::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap(),
        )
    } else {
        Pool::Postgres(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .unwrap(),
        )
    }
}

async fn run(urls: Urls, count: usize) {
    let import_dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        import_dir: Some(import_dir.path().to_path_buf()),
        ..Settings::default()
    };
    let label = urls.label;
    let a = node(&urls.source, settings.clone()).await;
    let secs = load(&a, count).await;
    row(
        &format!("{label}: load through the server (batch PUT)"),
        count,
        secs,
        None,
    );
    let (n, secs) = match pool(&urls.source).await {
        Pool::Sqlite(p) => raw_select(&p).await,
        Pool::Postgres(p) => raw_select(&p).await,
    };
    let select_rate = row(&format!("{label}: raw SELECT of the bodies"), n, secs, None);
    let client = reqwest::Client::new();
    let idle = rss_kb();
    let sampler = Sampler::start();
    let start = Instant::now();
    let manifest = run_bulk(&a, client.get(format!("{}/$export?_type=Patient", a.base))).await;
    let job_secs = start.elapsed().as_secs_f64();
    let lines = download(&manifest, None).await;
    let total_secs = start.elapsed().as_secs_f64();
    let peak = sampler.finish();
    assert_eq!(lines, count);
    row(
        &format!("{label}: export job (kick-off → manifest)"),
        count,
        job_secs,
        Some(select_rate),
    );
    row(
        &format!("{label}: export and download"),
        count,
        total_secs,
        Some(select_rate),
    );
    println!(
        "| {label}: RSS idle → peak while exporting and downloading | {} MB → {} MB | +{} MB | | |",
        idle / 1024,
        peak / 1024,
        peak.saturating_sub(idle) / 1024
    );
    download(&manifest, Some(import_dir.path())).await;
    let (n, secs) = match pool(&urls.raw).await {
        Pool::Sqlite(p) => raw_insert(&p, import_dir.path()).await,
        Pool::Postgres(p) => raw_insert(&p, import_dir.path()).await,
    };
    let insert_rate = row(&format!("{label}: raw INSERT of the lines"), n, secs, None);
    let b = node(&urls.target, settings).await;
    let inputs: Vec<Value> = std::fs::read_dir(import_dir.path())
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            json!({"name": "input", "part": [{"name": "type", "valueCode": "Patient"},
                                             {"name": "url", "valueUri": name}]})
        })
        .collect();
    let body = json!({"resourceType": "Parameters", "parameter": inputs});
    let start = Instant::now();
    let m = run_bulk(
        &b,
        client
            .post(format!("{}/$import", b.base))
            .header("content-type", "application/fhir+json")
            .body(body.to_string()),
    )
    .await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(m["error"], json!([]), "{m}");
    row(
        &format!("{label}: import (validate, index, integrity)"),
        count,
        secs,
        Some(insert_rate),
    );
}

fn main() {
    let count: usize = std::env::args()
        .skip_while(|a| a != "--patients")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "{count} Patients; release build, cores: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        println!("| run | resources | time | resources/s | of the raw limit |");
        println!("|---|---|---|---|---|");
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| format!("sqlite:{}", dir.path().join(name).display());
        run(
            Urls {
                label: "SQLite",
                source: file("a.db"),
                target: file("b.db"),
                raw: file("raw.db"),
            },
            count,
        )
        .await;

        let pg = std::env::var("HEALPORIUM_BENCH_DATABASE_URL")
            .or_else(|_| std::env::var("HEALPORIUM_TEST_DATABASE_URL"))
            .ok();
        if let Some(admin) = pg {
            use sqlx::Connection;
            let base = format!("hp_bulk_{}", std::process::id());
            let schemas = [
                format!("{base}_a"),
                format!("{base}_b"),
                format!("{base}_raw"),
            ];
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            for s in &schemas {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {s}")))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            let sep = if admin.contains('?') { '&' } else { '?' };
            let url = |s: &str| format!("{admin}{sep}options=-c%20search_path%3D{s}");
            run(
                Urls {
                    label: "PostgreSQL",
                    source: url(&schemas[0]),
                    target: url(&schemas[1]),
                    raw: url(&schemas[2]),
                },
                count,
            )
            .await;
            for s in &schemas {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {s} CASCADE")))
                    .execute(&mut c)
                    .await;
            }
        }
    });
}
