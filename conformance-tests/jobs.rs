//! Background work on both databases: the outbox (a job exists if and only if its write
//! committed), retries with backoff and periodic schedules against a manual clock, lease
//! take-over, several server processes sharing one queue (each job exactly once, a node
//! killed with SIGKILL mid-job), the supervisor's SIGTERM drain and bind errors, and the
//! change feed in commit order under concurrent writers.

use crate::cli::{bin, free_port};
use crate::common::{Backend, fresh_database, serve};
use healporium::app::AppOptions;
use healporium::fhir::types::Instant;
use healporium::jobs::{
    Clock, FnHandler, JobError, ManualClock, Registry, Schedule, Worker, WorkerOptions,
};
use healporium::store::{JobState, Method, NewJob, NewVersion, Store};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const T0: i64 = 1_800_000_000_000;

type Fresh = (
    String,
    Arc<dyn Store>,
    Option<tempfile::TempDir>,
    Option<(String, String)>,
);

async fn fresh_store(backend: Backend) -> Option<Fresh> {
    let (url, dir, schema) = fresh_database(backend).await?;
    let store = healporium::store::open(&url).await.expect("open store");
    Some((url, store, dir, schema))
}

fn probe(payload: serde_json::Value, max_attempts: u32, now: i64) -> NewJob {
    NewJob {
        kind: "probe".into(),
        key: None,
        payload: payload.to_string(),
        run_at: now,
        max_attempts,
    }
}

fn worker(store: &Arc<dyn Store>, registry: Registry, clock: Arc<dyn Clock>, node: &str) -> Worker {
    Worker::new(
        store.clone(),
        registry,
        clock,
        WorkerOptions {
            node: node.into(),
            lease_ms: 10_000,
            backoff_base_ms: 1000,
            backoff_cap_ms: 60_000,
            ..Default::default()
        },
    )
}

async fn state_of(store: &Arc<dyn Store>, id: &str) -> (String, i64, Vec<String>) {
    let (job, attempts) = store.jobs().get(id).await.unwrap().expect("job exists");
    (
        job.state,
        job.attempts,
        attempts
            .into_iter()
            .map(|a| format!("{}:{}", a.node, a.outcome.unwrap_or_default()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_in_a_rolled_back_transaction_never_runs() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((_url, store, _d, _s)) = fresh_store(backend).await else {
            continue;
        };
        let mut tx = store.begin().await.unwrap();
        let gone = tx
            .jobs()
            .enqueue(&probe(json!({"n": "rolled back"}), 1, T0), T0)
            .await
            .unwrap()
            .expect("enqueued in the transaction");
        drop(tx); // rolled back
        let mut tx = store.begin().await.unwrap();
        let kept = tx
            .jobs()
            .enqueue(&probe(json!({"n": "committed"}), 1, T0), T0)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        assert!(
            store.jobs().get(&gone).await.unwrap().is_none(),
            "{backend:?}"
        );
        let clock = Arc::new(ManualClock::at(T0));
        let w = worker(&store, Registry::new(), clock, "n1");
        assert_eq!(
            w.tick().await,
            1,
            "{backend:?}: only the committed job runs"
        );
        assert_eq!(state_of(&store, &kept).await.0, "done");
        let all = store.jobs().list(None, None, 100).await.unwrap();
        assert_eq!(all.len(), 1, "{backend:?}: {all:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_enqueue_a_kind_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((_url, store, _d, _s)) = fresh_store(backend).await else {
            continue;
        };
        let mut job = probe(json!({}), 1, T0);
        job.key = Some("claim-42".into());
        assert!(store.jobs().enqueue(&job, T0).await.unwrap().is_some());
        let mut tx = store.begin().await.unwrap();
        assert!(
            tx.jobs().enqueue(&job, T0).await.unwrap().is_none(),
            "{backend:?}"
        );
        tx.commit().await.unwrap();
        job.kind = "other".into();
        assert!(
            store.jobs().enqueue(&job, T0).await.unwrap().is_some(),
            "keys are per kind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_back_off_then_die_with_their_last_error() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((_url, store, _d, _s)) = fresh_store(backend).await else {
            continue;
        };
        let clock = Arc::new(ManualClock::at(T0));
        let w = worker(&store, Registry::new(), clock.clone(), "n1");
        let flaky = store
            .jobs()
            .enqueue(&probe(json!({"fail_attempts": 2}), 3, T0), T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.tick().await, 1);
        let (job, _) = store.jobs().get(&flaky).await.unwrap().unwrap();
        assert_eq!(job.state, "queued");
        // first retry: half to all of the base delay (jitter in the upper half)
        assert!(
            (T0 + 500..=T0 + 1000).contains(&job.run_at),
            "{backend:?}: {}",
            job.run_at - T0
        );
        assert!(job.last_error.unwrap().contains("attempt 1"));
        clock.set(job.run_at - 1);
        assert_eq!(w.tick().await, 0, "not before its time");
        clock.set(job.run_at);
        assert_eq!(w.tick().await, 1);
        let (job, _) = store.jobs().get(&flaky).await.unwrap().unwrap();
        // second retry: the delay doubled
        let delay = job.run_at - clock.now_ms();
        assert!((1000..=2000).contains(&delay), "{backend:?}: {delay}");
        clock.set(job.run_at);
        assert_eq!(w.tick().await, 1);
        let (state, attempts, log) = state_of(&store, &flaky).await;
        assert_eq!((state.as_str(), attempts), ("done", 3), "{backend:?}");
        assert_eq!(log, ["n1:failed", "n1:failed", "n1:done"]);

        // out of attempts: dead, with the last error kept, until an operator retries it
        let doomed = store
            .jobs()
            .enqueue(
                &probe(json!({"fail_attempts": 9}), 2, clock.now_ms()),
                clock.now_ms(),
            )
            .await
            .unwrap()
            .unwrap();
        w.tick().await;
        clock.advance(60_000);
        w.tick().await;
        let (job, _) = store.jobs().get(&doomed).await.unwrap().unwrap();
        assert_eq!(job.state, "dead", "{backend:?}");
        assert!(job.last_error.unwrap().contains("attempt 2"));
        clock.advance(3_600_000);
        assert_eq!(w.tick().await, 0, "dead jobs are not retried");
        assert!(store.jobs().retry(&doomed, clock.now_ms()).await.unwrap());
        assert_eq!(state_of(&store, &doomed).await.0, "queued");
        let counts = store.jobs().counts().await.unwrap();
        assert!(
            counts.contains(&("probe".into(), "queued".into(), 1)),
            "{counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_jobs_run_once_per_period_across_nodes() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((_url, store, _d, _s)) = fresh_store(backend).await else {
            continue;
        };
        let runs = Arc::new(AtomicUsize::new(0));
        let registry = || {
            let mut r = Registry::new();
            let runs = runs.clone();
            r.register(
                "tick",
                3,
                FnHandler(move |_| {
                    let runs = runs.clone();
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok::<(), JobError>(())
                    }
                }),
            );
            r.every("tick", Schedule::every(60), json!({}));
            r
        };
        let clock = Arc::new(ManualClock::at(T0 - T0 % 60_000 + 10_000));
        let a = worker(&store, registry(), clock.clone(), "a");
        let b = worker(&store, registry(), clock.clone(), "b");
        a.tick().await;
        b.tick().await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "{backend:?}: once in the first period"
        );
        clock.advance(30_000);
        a.tick().await;
        b.tick().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "same period");
        clock.advance(30_000);
        b.tick().await;
        a.tick().await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "{backend:?}: the next period"
        );
        let jobs = store.jobs().list(None, Some("tick"), 10).await.unwrap();
        assert_eq!(jobs.len(), 2);
        assert!(
            jobs.iter()
                .all(|j| j.key.as_deref().unwrap().starts_with("period:"))
        );

        // daily jobs: once per local day in their zone
        let daily_runs = Arc::new(AtomicUsize::new(0));
        let mut r = Registry::new();
        let counter = daily_runs.clone();
        r.register(
            "nightly",
            1,
            FnHandler(move |_| {
                let c = counter.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), JobError>(())
                }
            }),
        );
        r.every(
            "nightly",
            Schedule::daily("02:30", "Europe/Berlin").unwrap(),
            json!({}),
        );
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let clock = Arc::new(ManualClock::at(at("2026-12-02T12:00:00Z")));
        let n = worker(&store, r, clock.clone(), "n");
        n.tick().await; // today's 02:30 has passed: its run is due
        clock.set(at("2026-12-03T01:29:00Z")); // 02:29 in Berlin
        n.tick().await;
        assert_eq!(daily_runs.load(Ordering::SeqCst), 1, "{backend:?}");
        clock.set(at("2026-12-03T01:30:00Z")); // 02:30 in Berlin
        n.tick().await;
        assert_eq!(daily_runs.load(Ordering::SeqCst), 2, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lease_expired_is_taken_over_and_the_first_node_is_fenced_off() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((_url, store, _d, _s)) = fresh_store(backend).await else {
            continue;
        };
        let id = store
            .jobs()
            .enqueue(&probe(json!({}), 3, T0), T0)
            .await
            .unwrap()
            .unwrap();
        // node a claims it and goes silent
        let claimed = store
            .jobs()
            .claim("a", &["probe".into()], T0, 10_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let clock = Arc::new(ManualClock::at(T0 + 5_000));
        let b = worker(&store, Registry::new(), clock.clone(), "b");
        assert_eq!(b.tick().await, 0, "{backend:?}: the lease still holds");
        clock.set(T0 + 10_001);
        assert_eq!(b.tick().await, 1, "{backend:?}: taken over after the lease");
        let (state, attempts, log) = state_of(&store, &id).await;
        assert_eq!((state.as_str(), attempts), ("done", 2));
        assert_eq!(log, ["a:lease expired", "b:done"], "{backend:?}");
        // node a wakes up: it can no longer finish or fail the job
        let first = claimed.into_iter().next().unwrap();
        assert!(!store.jobs().finish(&first, "a", T0 + 11_000).await.unwrap());
        assert!(
            !store
                .jobs()
                .fail(&first, "a", T0 + 11_000, "late", None)
                .await
                .unwrap()
        );
        assert_eq!(state_of(&store, &id).await.0, "done");
    }
}

/// A `healporium serve` process running jobs on `url` (without authorization).
pub(crate) struct Node {
    child: Child,
    pub(crate) port: u16,
}

impl Node {
    pub(crate) fn start(url: &str, node: &str, extra: &[&str]) -> Node {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = bin()
            .current_dir(dir.path())
            .args([
                "serve",
                "--insecure-no-auth",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                url,
                "--node-id",
                node,
                "--job-poll-ms",
                "50",
            ])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env("HEALPORIUM_AUDIT_KEY_FILE", dir.path().join("audit.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::mem::forget(dir); // the process owns it until the test ends
        let node = Node { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "node did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_for(mut done: impl AsyncFnMut() -> bool, secs: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_run_a_thousand_jobs_each_exactly_once() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let Some((url, store, _d, _s)) = fresh_store(backend).await else {
            continue;
        };
        let _a = Node::start(&url, "a", &["--job-workers", "4"]);
        let _b = Node::start(&url, "b", &["--job-workers", "4"]);
        let now = Instant::now().millis();
        let mut tx = store.begin().await.unwrap();
        for i in 0..1000 {
            tx.jobs()
                .enqueue(&probe(json!({ "i": i }), 3, now), now)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        wait_for(
            async || {
                let c = store.jobs().counts().await.unwrap();
                c.contains(&("probe".into(), "done".into(), 1000))
            },
            180,
            "1,000 jobs done",
        )
        .await;
        let mut per_node = BTreeMap::new();
        for job in store
            .jobs()
            .list(Some(JobState::Done), Some("probe"), 2000)
            .await
            .unwrap()
        {
            let (_, attempts) = store.jobs().get(&job.id).await.unwrap().unwrap();
            assert_eq!(
                attempts.len(),
                1,
                "{backend:?}: {} ran {attempts:?}",
                job.id
            );
            assert_eq!(job.attempts, 1);
            *per_node.entry(attempts[0].node.clone()).or_insert(0) += 1;
        }
        assert_eq!(per_node.values().sum::<i32>(), 1000);
        assert_eq!(
            per_node.len(),
            2,
            "{backend:?}: both nodes worked: {per_node:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_job_has_its_job_finished_by_the_other_after_the_lease() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((url, store, _d, _s)) = fresh_store(backend).await else {
            continue;
        };
        let mut a = Node::start(&url, "a", &["--job-lease", "2"]);
        let now = Instant::now().millis();
        let id = store
            .jobs()
            .enqueue(&probe(json!({"sleep_ms": 4000}), 3, now), now)
            .await
            .unwrap()
            .unwrap();
        wait_for(
            async || {
                let (job, _) = store.jobs().get(&id).await.unwrap().unwrap();
                job.state == "running"
            },
            30,
            "node a claims the job",
        )
        .await;
        a.kill();
        let _b = Node::start(&url, "b", &["--job-lease", "2"]);
        wait_for(
            async || store.jobs().get(&id).await.unwrap().unwrap().0.state == "done",
            60,
            "node b finishes the job",
        )
        .await;
        let (_, attempts, log) = state_of(&store, &id).await;
        assert_eq!(attempts, 2);
        assert_eq!(log, ["a:lease expired", "b:done"], "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_gives_unfinished_jobs_back() {
    let Some((url, store, _d, _s)) = fresh_store(Backend::Sqlite).await else {
        return;
    };
    let mut node = Node::start(&url, "a", &["--drain-timeout", "1"]);
    let now = Instant::now().millis();
    let id = store
        .jobs()
        .enqueue(&probe(json!({"sleep_ms": 60000}), 3, now), now)
        .await
        .unwrap()
        .unwrap();
    wait_for(
        async || store.jobs().get(&id).await.unwrap().unwrap().0.state == "running",
        30,
        "the node claims the job",
    )
    .await;
    let started = std::time::Instant::now();
    node.signal("-TERM");
    let status = node.child.wait().unwrap();
    assert!(status.success(), "a clean stop: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopped within the drain timeout"
    );
    let (state, attempts, log) = state_of(&store, &id).await;
    assert_eq!(
        (state.as_str(), attempts),
        ("queued", 0),
        "given back, not counted"
    );
    assert_eq!(log, ["a:released"]);
}

#[test]
fn a_listener_that_cannot_bind_is_one_line_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["serve", "--insecure-no-auth", "--listen", &addr])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("error: cannot listen on ") && last.contains(&addr),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_cli_lists_shows_cancels_and_retries() {
    let Some((url, store, _d, _s)) = fresh_store(Backend::Sqlite).await else {
        return;
    };
    let now = Instant::now().millis();
    let id = store
        .jobs()
        .enqueue(&probe(json!({"x": 1}), 3, now + 3_600_000), now)
        .await
        .unwrap()
        .unwrap();
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .args(["--database-url", &url])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = run(&["jobs", "list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&id) && out.contains("queued"), "{out}");
    let (_, out, _) = run(&["jobs", "show", &id]);
    assert!(out.contains("payload: {\"x\":1}"), "{out}");
    let (code, _, err) = run(&["jobs", "retry", &id]);
    assert_eq!(code, Some(1), "a queued job cannot be retried: {err}");
    let (code, out, _) = run(&["jobs", "cancel", &id]);
    assert_eq!(code, Some(0), "{out}");
    let (_, out, _) = run(&["jobs", "list", "--state", "cancelled"]);
    assert!(out.contains(&id), "{out}");
    let (code, _, _) = run(&["jobs", "retry", &id]);
    assert_eq!(code, Some(0));
    let (_, out, _) = run(&["jobs", "stats"]);
    assert!(out.contains("probe") && out.contains("queued"), "{out}");
    let (code, _, err) = run(&["jobs", "list", "--state", "bogus"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleanup_job_purges_what_expired() {
    let Some((_url, store, _d, _s)) = fresh_store(Backend::Sqlite).await else {
        return;
    };
    let old = Instant::now().millis() - 3 * 24 * 3_600_000;
    store
        .save_cursors(&[
            ("old".into(), old, "{}".into()),
            ("new".into(), Instant::now().millis(), "{}".into()),
        ])
        .await
        .unwrap();
    let ctx = healporium::interaction::Context::new(store.clone());
    let config = crate::common::serve_config();
    let registry = healporium::app::job_kinds(&ctx, &config.jobs).unwrap();
    let w = Worker::new(
        store.clone(),
        registry,
        Arc::new(healporium::jobs::SystemClock),
        WorkerOptions::default(),
    );
    assert!(w.tick().await >= 1);
    assert!(store.load_cursor("old").await.unwrap().is_none());
    assert!(store.load_cursor("new").await.unwrap().is_some());
}

fn version(id: &str) -> NewVersion {
    NewVersion {
        resource_type: "Basic".into(),
        id: id.into(),
        version: 1,
        previous: None,
        last_updated: Instant::now(),
        method: Method::Put,
        body: Some(json!({"resourceType": "Basic", "id": id}).to_string()),
        index: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_does_not_skip_a_version_committed_late() {
    // Two transactions cross: A writes first (smaller sequence number) but commits after B.
    // A reader that saw B must still find A afterwards. (SQLite's single writer cannot
    // cross transactions; its feed is covered by the concurrent-writers test.)
    let Some((_url, store, _d, _s)) = fresh_store(Backend::Postgres).await else {
        return;
    };
    let mut a = store.begin().await.unwrap();
    a.write(&version("a")).await.unwrap();
    let mut b = store.begin().await.unwrap();
    b.write(&version("b")).await.unwrap();
    b.commit().await.unwrap();
    let seen = store.changes(0, 100).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1.id, "b");
    let cursor = seen[0].0;
    a.commit().await.unwrap();
    let later = store.changes(cursor, 100).await.unwrap();
    assert_eq!(
        later.iter().map(|(_, v)| v.id.as_str()).collect::<Vec<_>>(),
        ["a"],
        "the late commit is after the cursor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_change_feed_loses_nothing_under_eight_concurrent_writers() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((_url, store, dir, schema)) = fresh_store(backend).await else {
            continue;
        };
        let server = serve(backend, store.clone(), &AppOptions::default(), dir, schema).await;
        let writers = 8;
        let each = 40;
        let done = Arc::new(AtomicUsize::new(0));
        // the reader follows the feed while the writers write
        let reader = {
            let store = store.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut cursor = 0;
                let mut seen = Vec::new();
                loop {
                    let finished = done.load(Ordering::SeqCst) == writers;
                    let page = store.changes(cursor, 50).await.unwrap();
                    for (pos, v) in &page {
                        assert!(*pos > cursor, "positions only grow");
                        cursor = *pos;
                        seen.push((v.resource_type.clone(), v.id.clone(), v.version));
                    }
                    if page.is_empty() {
                        if finished {
                            return seen;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        };
        let mut tasks = Vec::new();
        for w in 0..writers {
            let server = server.clone();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..each {
                    let id = format!("w{w}-{i}");
                    server
                        .put(
                            &format!("Patient/{id}"),
                            &json!({"resourceType": "Patient", "id": id}),
                        )
                        .await
                        .expect(201);
                    ids.push(id);
                }
                done.fetch_add(1, Ordering::SeqCst);
                ids
            }));
        }
        let mut written = BTreeSet::new();
        for t in tasks {
            for id in t.await.unwrap() {
                written.insert(("Patient".to_string(), id, 1_i64));
            }
        }
        let seen = reader.await.unwrap();
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{backend:?}: no version twice");
        assert_eq!(
            unique, written,
            "{backend:?}: every committed version, none other"
        );
    }
}
