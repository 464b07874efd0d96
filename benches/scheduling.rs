//! Benchmark: `Appointment/$book` throughput through the real server over HTTP (16 concurrent
//! clients, each booking its own 40 slots of one shared Schedule: an Appointment, its Slot
//! made busy under the slot's lock, the AuditEvent), on SQLite and PostgreSQL with the
//! server's defaults (auditing on). Next to it, its limit in the same run: the same 16
//! clients creating the same Appointments plainly with status `proposed` (one write, no
//! slot). Then the contended case: 50 clients racing for each of 20 slots (one 201 and 49
//! 409s each), in bookings decided per second.
//!
//! Run: `cargo bench --bench scheduling`; PostgreSQL is included when
//! HEALPORIUM_BENCH_DATABASE_URL (or HEALPORIUM_TEST_DATABASE_URL) is set (a fresh schema,
//! dropped afterwards).

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
use std::time::Instant;

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 40;
const RACES: usize = 20;
const RACERS: usize = 50;

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

async fn send(client: &reqwest::Client, url: String, put: bool, body: &Value) -> u16 {
    let req = if put {
        client.put(url)
    } else {
        client.post(url)
    };
    let r = req
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!(status < 300 || status == 409, "{status} {text}");
    status
}

fn slot(id: &str, n: usize) -> Value {
    let minutes = n * 30;
    json!({"resourceType": "Slot", "id": id, "schedule": {"reference": "Schedule/bench"},
        "status": "free",
        "start": format!("2031-01-{:02}T{:02}:{:02}:00Z", 1 + minutes / 1440, (minutes / 60) % 24, minutes % 60),
        "end": format!("2031-01-{:02}T{:02}:{:02}:00Z", 1 + (minutes + 30) / 1440, ((minutes + 30) / 60) % 24, (minutes + 30) % 60)})
}

fn appointment(slot: &str, status: &str) -> Value {
    json!({"resourceType": "Appointment", "status": status,
        "slot": [{"reference": format!("Slot/{slot}")}],
        "participant": [{"actor": {"reference": "Patient/bench"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/bench"}, "status": "accepted"}]})
}

/// `CLIENTS` clients each sending `PER_CLIENT` requests built by `body(client, k)`.
async fn throughput(
    base: &str,
    client: &reqwest::Client,
    path: &str,
    body: impl Fn(usize, usize) -> Value + Send + Sync + Copy + 'static,
) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, url) = (client.clone(), format!("{base}/{path}"));
        tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT {
                assert!(send(&client, url.clone(), false, &body(c, k)).await < 300);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (CLIENTS * PER_CLIENT) as f64 / start.elapsed().as_secs_f64()
}

async fn run(name: &str, url: &str) {
    let (base, client) = serve(url).await;
    for (path, body) in [
        (
            "Practitioner/bench",
            json!({"resourceType": "Practitioner", "id": "bench"}),
        ),
        (
            "Patient/bench",
            json!({"resourceType": "Patient", "id": "bench"}),
        ),
        (
            "Schedule/bench",
            json!({"resourceType": "Schedule", "id": "bench",
            "actor": [{"reference": "Practitioner/bench"}]}),
        ),
    ] {
        send(&client, format!("{base}/{path}"), true, &body).await;
    }
    let total = CLIENTS * PER_CLIENT + RACES;
    for n in 0..total {
        let id = format!("s{n}");
        send(&client, format!("{base}/Slot/{id}"), true, &slot(&id, n)).await;
    }
    let book = throughput(&base, &client, "Appointment/$book", |c, k| {
        json!({"resourceType": "Parameters", "parameter": [{"name": "appt-resource",
            "resource": appointment(&format!("s{}", c * PER_CLIENT + k), "proposed")}]})
    })
    .await;
    let limit = throughput(&base, &client, "Appointment", |c, k| {
        appointment(&format!("s{}", c * PER_CLIENT + k), "proposed")
    })
    .await;
    let start = Instant::now();
    for r in 0..RACES {
        let id = format!("s{}", CLIENTS * PER_CLIENT + r);
        let mut tasks = Vec::new();
        for _ in 0..RACERS {
            let (client, url) = (client.clone(), format!("{base}/Appointment/$book"));
            let body = json!({"resourceType": "Parameters", "parameter": [{"name": "appt-resource",
                "resource": appointment(&id, "proposed")}]});
            tasks.push(tokio::spawn(async move {
                send(&client, url, false, &body).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            if t.await.unwrap() == 201 {
                won += 1;
            }
        }
        assert_eq!(won, 1, "exactly one booking of {id}");
    }
    let races = (RACES * RACERS) as f64 / start.elapsed().as_secs_f64();
    println!("| {name} | {book:.0}/s | {limit:.0}/s | {races:.0}/s |");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "{CLIENTS} clients × {PER_CLIENT} $book; {RACES} slots × {RACERS} racers; cores: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        println!(
            "| store | $book | limit: POST Appointment (proposed) | contended $book (decided) |"
        );
        println!("|---|---|---|---|");
        let dir = tempfile::tempdir().unwrap();
        run(
            "SQLite",
            &format!("sqlite:{}", dir.path().join("bench.db").display()),
        )
        .await;
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
