//! The job queue's tables (migrations `*_jobs.sql`): jobs and their attempts. Enqueueing
//! happens inside a write's transaction ([`JobTx`], the outbox); claiming, heartbeats,
//! finishing and the operator's listing go through [`JobStore`] on the pool. The SQL is written
//! once for both dialects and implemented for SQLite and PostgreSQL by a macro; PostgreSQL
//! claims with `FOR UPDATE SKIP LOCKED`, SQLite's single writer serializes claims by itself.
//!
//! Every update of a running job is fenced by (`leased_by`, `attempts`): once another node has
//! taken a job over after its lease expired, the first node can neither finish nor fail it.
//! Times are milliseconds since the Unix epoch, always passed in (the queue has no clock).

use super::{StoreResult, map_err};
use async_trait::async_trait;
use sqlx::{Pool, Postgres, QueryBuilder, Sqlite};

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for `run_at`.
    Queued,
    /// Claimed by a node under a lease.
    Running,
    Done,
    /// Failed its last attempt; `last_error` says why. `jobs retry` queues it again.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    /// Idempotency key, unique per kind: a second job with the same key is not enqueued.
    pub key: Option<String>,
    /// JSON text.
    pub payload: String,
    /// Not before this time.
    pub run_at: i64,
    pub max_attempts: u32,
}

/// A job as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub key: Option<String>,
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub lease_until: Option<i64>,
    pub leased_by: Option<String>,
    pub last_error: Option<String>,
    pub created: i64,
    pub updated: i64,
}

/// One attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub attempt: i64,
    pub node: String,
    pub started: i64,
    /// None while running, or when the node died during it.
    pub finished: Option<i64>,
    /// `done`, `failed`, `released`, `lease expired`; None while running.
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// A job a node has claimed: `attempt` fences its later updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub attempt: i64,
    pub max_attempts: i64,
}

/// Enqueueing inside a write transaction: the job commits with the write or not at all.
#[async_trait]
pub trait JobTx: Send {
    /// The new job's id, or None when a job of this kind with this key exists already.
    async fn enqueue(&mut self, job: &NewJob, now: i64) -> StoreResult<Option<String>>;
}

/// The queue outside write transactions: workers and the operator.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Enqueues in a transaction of its own (periodic jobs, the operator).
    async fn enqueue(&self, job: &NewJob, now: i64) -> StoreResult<Option<String>>;
    /// Claims up to `limit` due jobs of `kinds` for `node` until `now + lease_ms`: queued jobs
    /// whose time has come and running jobs whose lease expired (their node died). A running
    /// job whose lease expired on its last attempt becomes dead instead.
    async fn claim(
        &self,
        node: &str,
        kinds: &[String],
        now: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Claimed>>;
    /// Extends the lease; false when the job is no longer this node's.
    async fn heartbeat(&self, job: &Claimed, node: &str, until: i64) -> StoreResult<bool>;
    /// Marks the job done; false when it is no longer this node's (taken over or cancelled).
    async fn finish(&self, job: &Claimed, node: &str, now: i64) -> StoreResult<bool>;
    /// Records a failed attempt: queued again at `retry_at`, or dead when None.
    async fn fail(
        &self,
        job: &Claimed,
        node: &str,
        now: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> StoreResult<bool>;
    /// Gives a claimed job back unfinished (the node is stopping): queued at once, and the
    /// attempt does not count.
    async fn release(&self, job: &Claimed, node: &str, now: i64) -> StoreResult<bool>;
    /// Jobs, newest first.
    async fn list(
        &self,
        state: Option<JobState>,
        kind: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<JobRow>>;
    /// A job and its attempts.
    async fn get(&self, id: &str) -> StoreResult<Option<(JobRow, Vec<AttemptRow>)>>;
    /// Queues a dead or cancelled job again with fresh attempts; false for other states.
    async fn retry(&self, id: &str, now: i64) -> StoreResult<bool>;
    /// Cancels a queued or running job (a running one finishes its current attempt, whose
    /// result is then dropped); false for other states.
    async fn cancel(&self, id: &str, now: i64) -> StoreResult<bool>;
    /// Jobs per (kind, state).
    async fn counts(&self) -> StoreResult<Vec<(String, String, i64)>>;
    /// Deletes done and cancelled jobs last updated before `before`.
    async fn purge(&self, before: i64) -> StoreResult<u64>;
}

/// Both pools of a store (SQLite writes through its single-connection pool).
pub(super) struct JobSql<DB: sqlx::Database> {
    pub read: Pool<DB>,
    pub write: Pool<DB>,
    /// Appended to the claim's inner SELECT (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
    pub claim_lock: &'static str,
}

const JOB_COLUMNS: &str = "id, kind, idem_key, payload, state, attempts, max_attempts, run_at, \
     lease_until, leased_by, last_error, created, updated";

type JobTuple = (
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn job_row(t: JobTuple) -> JobRow {
    JobRow {
        id: t.0,
        kind: t.1,
        key: t.2,
        payload: t.3,
        state: t.4,
        attempts: t.5,
        max_attempts: t.6,
        run_at: t.7,
        lease_until: t.8,
        leased_by: t.9,
        last_error: t.10,
        created: t.11,
        updated: t.12,
    }
}

/// The INSERT of a job (both dialects); binds id, kind, key, payload, max_attempts, run_at,
/// now.
pub(super) const INSERT_JOB: &str = "INSERT INTO job (id, kind, idem_key, payload, state, \
     attempts, max_attempts, run_at, created, updated) VALUES ($1, $2, $3, $4, 'queued', 0, $5, \
     $6, $7, $7) ON CONFLICT (kind, idem_key) DO NOTHING";

/// Enqueues `job` on `conn` (a transaction's connection or a pool connection).
macro_rules! insert_job {
    ($db:ty, $conn:expr, $job:expr, $now:expr) => {{
        let job: &NewJob = $job;
        let id = uuid::Uuid::now_v7().to_string();
        let inserted = sqlx::query::<$db>($crate::store::jobs::INSERT_JOB)
            .bind(&id)
            .bind(&job.kind)
            .bind(job.key.as_deref())
            .bind(&job.payload)
            .bind(i64::from(job.max_attempts))
            .bind(job.run_at)
            .bind($now)
            .execute($conn)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok::<Option<String>, super::StoreError>((inserted > 0).then_some(id))
    }};
}
pub(super) use insert_job;

macro_rules! job_store_impl {
    ($db:ty) => {
        #[async_trait]
        impl JobStore for JobSql<$db> {
            async fn enqueue(&self, job: &NewJob, now: i64) -> StoreResult<Option<String>> {
                insert_job!($db, &self.write, job, now)
            }

            async fn claim(
                &self,
                node: &str,
                kinds: &[String],
                now: i64,
                lease_ms: i64,
                limit: u32,
            ) -> StoreResult<Vec<Claimed>> {
                if kinds.is_empty() || limit == 0 {
                    return Ok(Vec::new());
                }
                let mut tx = self.write.begin().await.map_err(map_err)?;
                // a job whose node died during its last attempt is dead, not retried
                let mut reap = QueryBuilder::<$db>::new(
                    "UPDATE job SET state = 'dead', lease_until = NULL, last_error = \
                     'the node running its last attempt stopped (lease expired)', updated = ",
                );
                reap.push_bind(now);
                reap.push(" WHERE state = 'running' AND lease_until < ");
                reap.push_bind(now);
                reap.push(" AND attempts >= max_attempts");
                reap.build().execute(&mut *tx).await.map_err(map_err)?;
                let mut qb = QueryBuilder::<$db>::new(
                    "UPDATE job SET state = 'running', attempts = attempts + 1, lease_until = ",
                );
                qb.push_bind(now + lease_ms);
                qb.push(", leased_by = ");
                qb.push_bind(node.to_string());
                qb.push(", updated = ");
                qb.push_bind(now);
                qb.push(" WHERE id IN (SELECT id FROM job WHERE kind IN (");
                let mut kinds_list = qb.separated(", ");
                for k in kinds {
                    kinds_list.push_bind(k.clone());
                }
                qb.push(") AND ((state = 'queued' AND run_at <= ");
                qb.push_bind(now);
                qb.push(") OR (state = 'running' AND lease_until < ");
                qb.push_bind(now);
                qb.push(")) ORDER BY run_at LIMIT ");
                qb.push_bind(i64::from(limit));
                qb.push(" ");
                qb.push(self.claim_lock);
                qb.push(") RETURNING id, kind, payload, attempts, max_attempts");
                let rows: Vec<(String, String, String, i64, i64)> = qb
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_err)?;
                for (id, _, _, attempt, _) in &rows {
                    if *attempt > 1 {
                        sqlx::query::<$db>(
                            "UPDATE job_attempt SET outcome = 'lease expired' WHERE job_id = $1 \
                             AND attempt = $2 AND outcome IS NULL",
                        )
                        .bind(id)
                        .bind(attempt - 1)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    }
                    // a released attempt left its row behind: the number is used again
                    sqlx::query::<$db>("DELETE FROM job_attempt WHERE job_id = $1 AND attempt = $2")
                        .bind(id)
                        .bind(*attempt)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    sqlx::query::<$db>(
                        "INSERT INTO job_attempt (job_id, attempt, node, started) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(id)
                    .bind(*attempt)
                    .bind(node)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, kind, payload, attempt, max_attempts)| Claimed {
                        id,
                        kind,
                        payload,
                        attempt,
                        max_attempts,
                    })
                    .collect())
            }

            async fn heartbeat(&self, job: &Claimed, node: &str, until: i64) -> StoreResult<bool> {
                let n = sqlx::query::<$db>(
                    "UPDATE job SET lease_until = $1 WHERE id = $2 AND state = 'running' \
                     AND leased_by = $3 AND attempts = $4",
                )
                .bind(until)
                .bind(&job.id)
                .bind(node)
                .bind(job.attempt)
                .execute(&self.write)
                .await
                .map_err(map_err)?
                .rows_affected();
                Ok(n > 0)
            }

            async fn finish(&self, job: &Claimed, node: &str, now: i64) -> StoreResult<bool> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                let n = sqlx::query::<$db>(
                    "UPDATE job SET state = 'done', lease_until = NULL, last_error = NULL, \
                     updated = $1 WHERE id = $2 AND state = 'running' AND leased_by = $3 \
                     AND attempts = $4",
                )
                .bind(now)
                .bind(&job.id)
                .bind(node)
                .bind(job.attempt)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
                sqlx::query::<$db>(
                    "UPDATE job_attempt SET finished = $1, outcome = $2 WHERE job_id = $3 \
                     AND attempt = $4 AND node = $5",
                )
                .bind(now)
                .bind(if n > 0 { "done" } else { "done, dropped" })
                .bind(&job.id)
                .bind(job.attempt)
                .bind(node)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(n > 0)
            }

            async fn fail(
                &self,
                job: &Claimed,
                node: &str,
                now: i64,
                error: &str,
                retry_at: Option<i64>,
            ) -> StoreResult<bool> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                let (state, run_at) = match retry_at {
                    Some(t) => ("queued", t),
                    None => ("dead", now),
                };
                let n = sqlx::query::<$db>(
                    "UPDATE job SET state = $1, run_at = $2, last_error = $3, lease_until = NULL, \
                     updated = $4 WHERE id = $5 AND state = 'running' AND leased_by = $6 \
                     AND attempts = $7",
                )
                .bind(state)
                .bind(run_at)
                .bind(error)
                .bind(now)
                .bind(&job.id)
                .bind(node)
                .bind(job.attempt)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
                sqlx::query::<$db>(
                    "UPDATE job_attempt SET finished = $1, outcome = 'failed', error = $2 \
                     WHERE job_id = $3 AND attempt = $4 AND node = $5",
                )
                .bind(now)
                .bind(error)
                .bind(&job.id)
                .bind(job.attempt)
                .bind(node)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(n > 0)
            }

            async fn release(&self, job: &Claimed, node: &str, now: i64) -> StoreResult<bool> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                let n = sqlx::query::<$db>(
                    "UPDATE job SET state = 'queued', attempts = attempts - 1, run_at = $1, \
                     lease_until = NULL, updated = $1 WHERE id = $2 AND state = 'running' \
                     AND leased_by = $3 AND attempts = $4",
                )
                .bind(now)
                .bind(&job.id)
                .bind(node)
                .bind(job.attempt)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
                sqlx::query::<$db>(
                    "UPDATE job_attempt SET finished = $1, outcome = 'released' WHERE job_id = $2 \
                     AND attempt = $3 AND node = $4",
                )
                .bind(now)
                .bind(&job.id)
                .bind(job.attempt)
                .bind(node)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(n > 0)
            }

            async fn list(
                &self,
                state: Option<JobState>,
                kind: Option<&str>,
                limit: u32,
            ) -> StoreResult<Vec<JobRow>> {
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "SELECT {JOB_COLUMNS} FROM job WHERE 1 = 1"
                ));
                if let Some(s) = state {
                    qb.push(" AND state = ");
                    qb.push_bind(s.as_str());
                }
                if let Some(k) = kind {
                    qb.push(" AND kind = ");
                    qb.push_bind(k.to_string());
                }
                qb.push(" ORDER BY created DESC, id DESC LIMIT ");
                qb.push_bind(i64::from(limit));
                let rows: Vec<JobTuple> = qb
                    .build_query_as()
                    .fetch_all(&self.read)
                    .await
                    .map_err(map_err)?;
                Ok(rows.into_iter().map(job_row).collect())
            }

            async fn get(&self, id: &str) -> StoreResult<Option<(JobRow, Vec<AttemptRow>)>> {
                let row: Option<JobTuple> =
                    sqlx::query_as(
                        "SELECT id, kind, idem_key, payload, state, attempts, max_attempts, \
                         run_at, lease_until, leased_by, last_error, created, updated \
                         FROM job WHERE id = $1",
                    )
                        .bind(id)
                        .fetch_optional(&self.read)
                        .await
                        .map_err(map_err)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let attempts: Vec<(i64, String, i64, Option<i64>, Option<String>, Option<String>)> =
                    sqlx::query_as(
                        "SELECT attempt, node, started, finished, outcome, error FROM job_attempt \
                         WHERE job_id = $1 ORDER BY attempt",
                    )
                    .bind(id)
                    .fetch_all(&self.read)
                    .await
                    .map_err(map_err)?;
                Ok(Some((
                    job_row(row),
                    attempts
                        .into_iter()
                        .map(|a| AttemptRow {
                            attempt: a.0,
                            node: a.1,
                            started: a.2,
                            finished: a.3,
                            outcome: a.4,
                            error: a.5,
                        })
                        .collect(),
                )))
            }

            async fn retry(&self, id: &str, now: i64) -> StoreResult<bool> {
                let n = sqlx::query::<$db>(
                    "UPDATE job SET state = 'queued', attempts = 0, run_at = $1, updated = $1, \
                     lease_until = NULL WHERE id = $2 AND state IN ('dead', 'cancelled')",
                )
                .bind(now)
                .bind(id)
                .execute(&self.write)
                .await
                .map_err(map_err)?
                .rows_affected();
                if n > 0 {
                    sqlx::query::<$db>("DELETE FROM job_attempt WHERE job_id = $1")
                        .bind(id)
                        .execute(&self.write)
                        .await
                        .map_err(map_err)?;
                }
                Ok(n > 0)
            }

            async fn cancel(&self, id: &str, now: i64) -> StoreResult<bool> {
                let n = sqlx::query::<$db>(
                    "UPDATE job SET state = 'cancelled', lease_until = NULL, updated = $1 \
                     WHERE id = $2 AND state IN ('queued', 'running')",
                )
                .bind(now)
                .bind(id)
                .execute(&self.write)
                .await
                .map_err(map_err)?
                .rows_affected();
                Ok(n > 0)
            }

            async fn counts(&self) -> StoreResult<Vec<(String, String, i64)>> {
                sqlx::query_as(
                    "SELECT kind, state, COUNT(*) FROM job GROUP BY kind, state \
                     ORDER BY kind, state",
                )
                .fetch_all(&self.read)
                .await
                .map_err(map_err)
            }

            async fn purge(&self, before: i64) -> StoreResult<u64> {
                sqlx::query::<$db>(
                    "DELETE FROM job WHERE state IN ('done', 'cancelled') AND updated < $1",
                )
                .bind(before)
                .execute(&self.write)
                .await
                .map(|r| r.rows_affected())
                .map_err(map_err)
            }
        }
    };
}

job_store_impl!(Sqlite);
job_store_impl!(Postgres);
