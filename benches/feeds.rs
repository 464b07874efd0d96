//! Benchmark: HL7 v2 feed throughput. Distinct ADT^A01 and ORU^R01 messages (alternating, a
//! new patient each) over real MLLP connections — 1 and 8 at once, each waiting for its ACK,
//! which comes after the durable commit — and through the file-import path (the pipeline
//! without a socket), with auditing on as `serve` runs; next to them the pure parse + map rate
//! (no database), the ceiling the mapping itself sets. SQLite, and PostgreSQL when
//! HEALPORIUM_BENCH_DATABASE_URL (or HEALPORIUM_TEST_DATABASE_URL) is set.
//!
//! Run: `cargo bench --bench feeds` (`FEEDS_BENCH_MESSAGES=2000` for longer runs).

// a tool, not a request path: a failed step may stop it (see .clippy.toml)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use healporium::app::{AppOptions, router_and_feeds};
use healporium::feeds::mllp;
use healporium::feeds::runtime::{Channel, Pipeline};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn message(n: usize, run: &str) -> String {
    if n.is_multiple_of(2) {
        format!(
            "MSH|^~\\&|EPIC|HOSP|HP|HP|20240105083000+0100||ADT^A01^ADT_A01|{run}-{n}|P|2.5.1\r\
             EVN|A01|20240105083000+0100\r\
             PID|1||{run}{n}^^^HEALPORIUM^MR||Doe{n}^Jane^Q||19800214|F|||1 Main St^^Town^ST^12345^^H||^PRN^PH^^^^^^^^^555-1234\r\
             PV1|1|I|W1^101^A||||1234^Smith^John||||||||||||V{n}^^^HEALPORIUM^VN|||||||||||||||||||||||||20240105080000+0100\r"
        )
    } else {
        format!(
            "MSH|^~\\&|LAB|HOSP|HP|HP|20240105083000+0100||ORU^R01^ORU_R01|{run}-{n}|P|2.5.1\r\
             PID|1||{run}{n}^^^HEALPORIUM^MR||Doe{n}^John\r\
             OBR|1|ORD{n}|FIL{n}|24323-8^Metabolic panel^LN|||20240105070000+0000\r\
             OBX|1|NM|2345-7^Glucose^LN||95|mg/dL^^UCUM|70-99|N|||F|||20240105070000+0000\r\
             OBX|2|NM|2160-0^Creatinine^LN||0.9|mg/dL^^UCUM|||||F|||20240105070000+0000\r"
        )
    }
}

/// Sends `messages` over one MLLP connection, each after the previous one's ACK.
async fn send_all(addr: std::net::SocketAddr, messages: Vec<String>) -> usize {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut accepted = 0;
    let mut buf = Vec::new();
    for m in messages {
        c.write_all(&mllp::frame(m.as_bytes())).await.unwrap();
        loop {
            if let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
                let frame: Vec<u8> = buf.drain(..end + 2).collect();
                if String::from_utf8_lossy(&frame).contains("MSA|AA|") {
                    accepted += 1;
                }
                break;
            }
            let mut chunk = [0u8; 4096];
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    accepted
}

async fn over_mllp(
    pipeline: Arc<Pipeline>,
    connections: usize,
    total: usize,
    run: &str,
) -> (usize, f64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let channel = Arc::new(Channel::default_channel(None));
    let server = tokio::spawn(mllp::serve(
        listener,
        pipeline,
        channel,
        mllp::Limits::default(),
        shutdown,
    ));
    let per = total / connections;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let msgs: Vec<String> = (0..per)
            .map(|i| message(c * per + i, &format!("{run}c{c}")))
            .collect();
        tasks.push(tokio::spawn(send_all(addr, msgs)));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    let _ = server.await;
    (accepted, secs)
}

async fn file_import(pipeline: &Pipeline, total: usize, run: &str) -> (usize, f64) {
    let channel = Channel::default_channel(None);
    let started = Instant::now();
    let mut accepted = 0;
    for i in 0..total {
        let r = pipeline
            .receive(&channel, None, None, message(i, run).as_bytes())
            .await;
        if r.code == healporium::hl7v2::ack::AckCode::Accept {
            accepted += 1;
        }
    }
    (accepted, started.elapsed().as_secs_f64())
}

fn pure_mapping(total: usize) -> f64 {
    let set = healporium::feeds::mapping_set::MappingSet::embedded().unwrap();
    let started = Instant::now();
    for i in 0..total {
        let text = message(i, "pure");
        let m = healporium::hl7v2::er7::parse(&text).unwrap();
        let mapped = set.map_message(&m, None).unwrap();
        std::hint::black_box(mapped);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn bench(label: &str, url: &str, total: usize) {
    let store = healporium::store::open(url).await.expect("store");
    let options = AppOptions {
        audit: true,
        ..AppOptions::default()
    };
    let (_, pipeline, _) = router_and_feeds(store, &options, None);
    let pipeline = pipeline.expect("the mapping set loads");
    for connections in [1, 8] {
        let (ok, secs) = over_mllp(
            pipeline.clone(),
            connections,
            total,
            &format!("m{connections}"),
        )
        .await;
        println!(
            "{label:<10} MLLP, {connections} connection(s): {ok} messages in {secs:.2} s = {:.0} messages/s",
            ok as f64 / secs
        );
        assert_eq!(ok, total, "every message accepted");
    }
    let (ok, secs) = file_import(&pipeline, total, "file").await;
    println!(
        "{label:<10} file import:         {ok} messages in {secs:.2} s = {:.0} messages/s",
        ok as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("FEEDS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    println!(
        "parse + map, no database: {:.0} messages/s",
        pure_mapping(total * 5)
    );
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("bench.db").display());
    bench("SQLite", &sqlite, total).await;
    let pg = std::env::var("HEALPORIUM_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("HEALPORIUM_TEST_DATABASE_URL"))
        .ok();
    if let Some(admin) = pg {
        use sqlx::Connection;
        let schema = format!("hp_bench_feeds_{}", std::process::id());
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut c)
            .await
            .unwrap();
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
        bench("PostgreSQL", &url, total).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        println!("PostgreSQL skipped: HEALPORIUM_BENCH_DATABASE_URL not set");
    }
}
