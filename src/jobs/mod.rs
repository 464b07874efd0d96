//! L3: durable background jobs. A job is enqueued inside the database transaction of the
//! write that causes it (`tx.jobs().enqueue`, the outbox: it exists if and only if that write
//! committed), claimed by a worker of any node under a lease, retried with exponential
//! backoff and jitter, and dead after its last attempt with its last error kept. Periodic jobs
//! run once per period across all nodes ([`schedule`]).
//!
//! This module knows no job kinds but the `probe`: handlers are registered by the wiring
//! (`app`), so the rooms that need background work (clean-up, finance, feeds, subscriptions,
//! bulk data) plug in without this module depending on them.

pub mod schedule;
pub mod worker;

use crate::store::NewJob;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use schedule::Schedule;
pub use worker::{Worker, WorkerOptions};

/// Where the queue reads the time (tests drive a manual clock).
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::fhir::types::Instant::now().millis()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A job as its handler sees it.
#[derive(Debug, Clone)]
pub struct JobInput {
    pub id: String,
    pub kind: String,
    pub payload: Value,
    /// 1 for the first attempt.
    pub attempt: i64,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Try again later (backoff), unless this was the last attempt.
    Retry(String),
    /// Trying again cannot help (a bad payload): dead at once.
    Fatal(String),
}

/// What runs a kind of job. Handlers should be idempotent: a job whose node dies mid-attempt
/// is run again by another node after its lease expires.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn run(&self, job: JobInput) -> Result<(), JobError>;
}

/// A handler from an async closure.
pub struct FnHandler<F>(pub F);

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(JobInput) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<(), JobError>> + Send,
{
    async fn run(&self, job: JobInput) -> Result<(), JobError> {
        (self.0)(job).await
    }
}

/// A job kind's handler and retry policy.
#[derive(Clone)]
pub struct Kind {
    pub handler: Arc<dyn Handler>,
    pub max_attempts: u32,
}

/// A periodic job: enqueued once per period of `schedule`.
#[derive(Clone)]
pub struct Periodic {
    pub kind: String,
    pub schedule: Schedule,
    pub payload: Value,
}

/// The job kinds a node runs, and its periodic jobs.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Kind>,
    periodic: Vec<Periodic>,
}

impl Registry {
    /// A registry with the built-in `probe` kind.
    pub fn new() -> Registry {
        let mut r = Registry::default();
        r.register(PROBE, 5, FnHandler(probe));
        r
    }

    pub fn register(&mut self, kind: &str, max_attempts: u32, handler: impl Handler + 'static) {
        self.kinds.insert(
            kind.to_string(),
            Kind {
                handler: Arc::new(handler),
                max_attempts: max_attempts.max(1),
            },
        );
    }

    /// Runs `kind` (registered already) on `schedule`.
    pub fn every(&mut self, kind: &str, schedule: Schedule, payload: Value) {
        self.periodic.push(Periodic {
            kind: kind.to_string(),
            schedule,
            payload,
        });
    }

    pub fn kind(&self, name: &str) -> Option<&Kind> {
        self.kinds.get(name)
    }

    pub fn kinds(&self) -> Vec<String> {
        self.kinds.keys().cloned().collect()
    }

    pub fn periodic(&self) -> &[Periodic] {
        &self.periodic
    }
}

/// A job of `kind` with `payload`, due now, with the default number of attempts.
pub fn job(kind: &str, payload: &Value, now: i64) -> NewJob {
    NewJob {
        kind: kind.to_string(),
        key: None,
        payload: payload.to_string(),
        run_at: now,
        max_attempts: DEFAULT_ATTEMPTS,
    }
}

/// Attempts of a job before it is dead, unless its kind says otherwise.
pub const DEFAULT_ATTEMPTS: u32 = 5;

/// The delay before attempt `attempt + 1` after `attempt` failed: `base · 2^(attempt-1)`,
/// capped at `cap`, of which a random part (`jitter` in [0, 1)) of the upper half is taken —
/// so retries of many jobs that failed together spread out instead of colliding again.
pub fn backoff_ms(attempt: i64, base_ms: i64, cap_ms: i64, jitter: f64) -> i64 {
    let exp = u32::try_from((attempt - 1).clamp(0, 40)).unwrap_or(40);
    let full = base_ms
        .saturating_mul(2_i64.saturating_pow(exp))
        .min(cap_ms);
    let half = full / 2;
    // the jitter is a fraction of a delay in ms, not money: float arithmetic is fine here
    half + ((half as f64) * jitter.clamp(0.0, 1.0)) as i64
}

/// The built-in diagnostic kind: an operator (or a test) enqueues probes to see that workers
/// run. Payload: `sleep_ms` (hold the attempt that long), `fail_attempts` (fail the first n
/// attempts).
pub const PROBE: &str = "probe";

async fn probe(job: JobInput) -> Result<(), JobError> {
    let sleep = job
        .payload
        .get("sleep_ms")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if sleep > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(sleep.min(600_000))).await;
    }
    let fail = job
        .payload
        .get("fail_attempts")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if job.attempt <= fail {
        return Err(JobError::Retry(format!(
            "probe failing attempt {} of the first {fail}",
            job.attempt
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        assert_eq!(backoff_ms(1, 1000, 60_000, 0.0), 500);
        assert_eq!(backoff_ms(1, 1000, 60_000, 1.0), 1000);
        assert_eq!(backoff_ms(2, 1000, 60_000, 0.0), 1000);
        assert_eq!(backoff_ms(3, 1000, 60_000, 0.5), 3000);
        assert_eq!(backoff_ms(10, 1000, 60_000, 1.0), 60_000);
        assert_eq!(backoff_ms(1_000, 1000, 60_000, 0.0), 30_000);
    }
}
