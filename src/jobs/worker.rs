//! A node's job worker: enqueues the periodic jobs whose period has begun, claims due jobs of
//! the kinds it knows (up to its concurrency), runs each with a lease it keeps extending, and
//! records the outcome — done, queued again after a backoff, or dead. It wakes when a local
//! transaction enqueued a job, and polls otherwise (jobs of other nodes, retries, leases).
//!
//! Stopping: when the shutdown signal fires it claims nothing more, lets running attempts
//! finish for up to the drain time, and gives the rest back to the queue (`release`), so
//! another node can take them at once instead of waiting for a lease to expire.

use super::{Clock, JobError, JobInput, Registry, backoff_ms};
use crate::store::{Claimed, JobStore, NewJob, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This node's name in leases and attempts (unique per process).
    pub node: String,
    /// Attempts running at once.
    pub concurrency: usize,
    /// How often to look for due jobs without a local wake-up.
    pub poll_ms: u64,
    /// How long a claim lasts without a heartbeat; a dead node's job is taken over after it.
    pub lease_ms: i64,
    /// First retry delay; it doubles per attempt up to `backoff_cap_ms`.
    pub backoff_base_ms: i64,
    pub backoff_cap_ms: i64,
    /// How long running attempts may take to finish once the node stops.
    pub drain_ms: u64,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            node: format!("node-{}", uuid::Uuid::new_v4().simple()),
            concurrency: 4,
            poll_ms: 1000,
            lease_ms: 60_000,
            backoff_base_ms: 1000,
            backoff_cap_ms: 3_600_000,
            drain_ms: 10_000,
        }
    }
}

/// A node's worker (see the module comment).
pub struct Worker {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    options: WorkerOptions,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        clock: Arc<dyn Clock>,
        options: WorkerOptions,
    ) -> Worker {
        Worker {
            store,
            registry: Arc::new(registry),
            clock,
            options,
        }
    }

    /// Enqueues the periodic jobs whose current period has no job yet; `seen` remembers the
    /// periods this node enqueued (or found enqueued) so it asks the database once per period.
    pub async fn schedule_periodic(&self, seen: &mut HashMap<String, i64>) {
        let jobs = self.store.jobs();
        let now = self.clock.now_ms();
        for p in self.registry.periodic() {
            let start = p.schedule.period_start(now);
            if seen.get(&p.kind) == Some(&start) {
                continue;
            }
            let max_attempts = self
                .registry
                .kind(&p.kind)
                .map_or(super::DEFAULT_ATTEMPTS, |k| k.max_attempts);
            let job = NewJob {
                kind: p.kind.clone(),
                key: Some(format!("period:{start}")),
                payload: p.payload.to_string(),
                run_at: start,
                max_attempts,
            };
            match jobs.enqueue(&job, now).await {
                Ok(_) => {
                    seen.insert(p.kind.clone(), start);
                }
                Err(e) => {
                    tracing::warn!(kind = %p.kind, error = %e, "cannot enqueue a periodic job")
                }
            }
        }
    }

    /// One round: periodic jobs, then claim and run due jobs until none is due or `free`
    /// slots are taken; returns the attempts it started.
    async fn claim(&self, running: &mut JoinSet<()>) -> usize {
        let free = self.options.concurrency.saturating_sub(running.len());
        if free == 0 {
            return 0;
        }
        let jobs = self.store.jobs();
        let now = self.clock.now_ms();
        let claimed = match jobs
            .claim(
                &self.options.node,
                &self.registry.kinds(),
                now,
                self.options.lease_ms,
                u32::try_from(free).unwrap_or(u32::MAX),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim jobs");
                return 0;
            }
        };
        let n = claimed.len();
        for job in claimed {
            let attempt = Attempt {
                jobs: jobs.clone(),
                registry: self.registry.clone(),
                clock: self.clock.clone(),
                options: self.options.clone(),
            };
            running.spawn(attempt.run(job));
        }
        n
    }

    /// One round driven by the caller instead of the loop (tests on a manual clock): the
    /// periodic jobs, then every due job, each run to its end; returns the attempts run.
    pub async fn tick(&self) -> usize {
        self.schedule_periodic(&mut HashMap::new()).await;
        let mut running = JoinSet::new();
        let mut n = 0;
        loop {
            let claimed = self.claim(&mut running).await;
            n += claimed;
            while running.join_next().await.is_some() {}
            if claimed == 0 {
                return n;
            }
        }
    }

    /// Runs until `shutdown` turns true, then drains (see the module comment).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let wake = self.store.job_signal();
        let mut running = JoinSet::new();
        let mut seen = HashMap::new();
        let poll = Duration::from_millis(self.options.poll_ms.max(10));
        tracing::info!(node = %self.options.node, kinds = ?self.registry.kinds(), "job worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.schedule_periodic(&mut seen).await;
            // claim while jobs keep coming, up to the free slots
            while self.claim(&mut running).await > 0 {}
            let notified = wake.notified();
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = notified => {}
                _ = tokio::time::sleep(poll) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        self.drain(running).await;
        tracing::info!(node = %self.options.node, "job worker stopped");
    }

    async fn drain(&self, mut running: JoinSet<()>) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.options.drain_ms);
        while !running.is_empty() {
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if running.is_empty() {
            return;
        }
        running.abort_all();
        // attempts cut short go back to the queue now, not after their lease
        let jobs = self.store.jobs();
        let now = self.clock.now_ms();
        if let Ok(list) = jobs
            .list(Some(crate::store::JobState::Running), None, 10_000)
            .await
        {
            for row in list
                .into_iter()
                .filter(|r| r.leased_by.as_deref() == Some(self.options.node.as_str()))
            {
                let claimed = Claimed {
                    id: row.id,
                    kind: row.kind,
                    payload: row.payload,
                    attempt: row.attempts,
                    max_attempts: row.max_attempts,
                };
                let _ = jobs.release(&claimed, &self.options.node, now).await;
            }
        }
    }
}

/// One attempt of one job, with its heartbeat.
struct Attempt {
    jobs: Arc<dyn JobStore>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    options: WorkerOptions,
}

impl Attempt {
    async fn run(self, job: Claimed) {
        let node = self.options.node.as_str();
        let Some(kind) = self.registry.kind(&job.kind) else {
            return; // claimed by kind, so registered
        };
        let input = match serde_json::from_str(&job.payload) {
            Ok(payload) => Ok(JobInput {
                id: job.id.clone(),
                kind: job.kind.clone(),
                payload,
                attempt: job.attempt,
            }),
            Err(_) => Err(JobError::Fatal("the payload is not JSON".into())),
        };
        let result = match input {
            Ok(input) => {
                let run = kind.handler.run(input);
                tokio::pin!(run);
                let beat = Duration::from_millis(
                    u64::try_from(self.options.lease_ms / 3)
                        .unwrap_or(1000)
                        .max(10),
                );
                loop {
                    tokio::select! {
                        r = &mut run => break r,
                        _ = tokio::time::sleep(beat) => {
                            let until = self.clock.now_ms() + self.options.lease_ms;
                            match self.jobs.heartbeat(&job, node, until).await {
                                Ok(true) => {}
                                // taken over or cancelled: stop working on it
                                Ok(false) => return,
                                Err(e) => tracing::warn!(job = %job.id, error = %e, "heartbeat failed"),
                            }
                        }
                    }
                }
            }
            Err(e) => Err(e),
        };
        let now = self.clock.now_ms();
        let outcome = match &result {
            Ok(()) => self.jobs.finish(&job, node, now).await,
            Err(JobError::Retry(e)) if job.attempt < job.max_attempts => {
                let jitter = rand::random::<f64>();
                let delay = backoff_ms(
                    job.attempt,
                    self.options.backoff_base_ms,
                    self.options.backoff_cap_ms,
                    jitter,
                );
                self.jobs.fail(&job, node, now, e, Some(now + delay)).await
            }
            Err(JobError::Retry(e) | JobError::Fatal(e)) => {
                tracing::warn!(job = %job.id, kind = %job.kind, error = %e, "job is dead");
                self.jobs.fail(&job, node, now, e, None).await
            }
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => tracing::info!(job = %job.id, "job was taken over or cancelled meanwhile"),
            Err(e) => tracing::warn!(job = %job.id, error = %e, "cannot record a job's outcome"),
        }
    }
}
