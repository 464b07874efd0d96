//! The Bulk Data tables (migrations `*_bulk.sql`): asynchronous export and import jobs, their
//! files and the files' text in chunks. One SQL text serves both databases. Times are
//! milliseconds since the Unix epoch, passed in.

use super::{StoreResult, map_err};
use async_trait::async_trait;
use sqlx::{Pool, Postgres, Sqlite};

/// A job as kicked off.
#[derive(Debug, Clone)]
pub struct NewBulkJob {
    pub id: String,
    /// `export` or `import`.
    pub kind: String,
    /// Who may poll, download and cancel.
    pub owner: String,
    /// What the job runs as (JSON), None: unconfined.
    pub principal: Option<String>,
    /// The kick-off URL.
    pub request: String,
    pub base: String,
    /// The parsed parameters (JSON).
    pub params: String,
    pub transaction_time: i64,
    pub created: i64,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkJobRow {
    pub id: String,
    pub kind: String,
    pub owner: String,
    pub principal: Option<String>,
    pub request: String,
    pub base: String,
    pub params: String,
    pub state: String,
    pub progress: Option<String>,
    pub transaction_time: i64,
    pub created: i64,
    pub finished: Option<i64>,
    pub expires: Option<i64>,
    pub error: Option<String>,
}

/// An output or error file of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkFileRow {
    pub file_no: i64,
    /// `output` or `error`.
    pub kind: String,
    pub resource_type: String,
    pub count: i64,
    pub bytes: i64,
}

#[async_trait]
pub trait BulkStore: Send + Sync {
    async fn create(&self, job: &NewBulkJob) -> StoreResult<()>;
    async fn job(&self, id: &str) -> StoreResult<Option<BulkJobRow>>;
    /// Jobs of `owner` accepted or running.
    async fn active(&self, owner: &str) -> StoreResult<u64>;
    /// Moves the job from one of `from` to `to` (with its progress, error, end and expiry);
    /// false when it was in none of them.
    async fn transition(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        error: Option<&str>,
        finished: Option<i64>,
        expires: Option<i64>,
    ) -> StoreResult<bool>;
    /// Records how far a running job got.
    async fn progress(&self, id: &str, progress: &str) -> StoreResult<()>;
    /// Removes the job's files and chunks (a restarted attempt, a cancel, an expiry).
    async fn clear_files(&self, id: &str) -> StoreResult<()>;
    /// Appends a chunk of a file's text.
    async fn add_chunk(&self, id: &str, file_no: i64, chunk_no: i64, data: &str)
    -> StoreResult<()>;
    /// Records a finished file.
    async fn add_file(&self, id: &str, file: &BulkFileRow) -> StoreResult<()>;
    async fn files(&self, id: &str) -> StoreResult<Vec<BulkFileRow>>;
    /// The text of one chunk (None past the last).
    async fn chunk(&self, id: &str, file_no: i64, chunk_no: i64) -> StoreResult<Option<String>>;
    /// Deletes the jobs that expired before `now` (or were cancelled) with their files;
    /// returns how many.
    async fn purge(&self, now: i64) -> StoreResult<u64>;
}

pub(super) struct BulkSql<DB: sqlx::Database> {
    pub write: Pool<DB>,
    pub read: Pool<DB>,
}

type JobTuple = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

macro_rules! bulk_store_impl {
    ($db:ty) => {
        #[async_trait]
        impl BulkStore for BulkSql<$db> {
            async fn create(&self, j: &NewBulkJob) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO bulk_job (id, kind, owner, principal, request, base, params, \
                     state, transaction_time, created) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                     'accepted', $8, $9)",
                )
                .bind(&j.id)
                .bind(&j.kind)
                .bind(&j.owner)
                .bind(&j.principal)
                .bind(&j.request)
                .bind(&j.base)
                .bind(&j.params)
                .bind(j.transaction_time)
                .bind(j.created)
                .execute(&self.write)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn job(&self, id: &str) -> StoreResult<Option<BulkJobRow>> {
                let row: Option<JobTuple> = sqlx::query_as::<$db, _>(
                    "SELECT id, kind, owner, principal, request, base, params, state, \
                     progress, transaction_time, created, finished, expires, error \
                     FROM bulk_job WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?;
                Ok(row.map(|r| BulkJobRow {
                    id: r.0,
                    kind: r.1,
                    owner: r.2,
                    principal: r.3,
                    request: r.4,
                    base: r.5,
                    params: r.6,
                    state: r.7,
                    progress: r.8,
                    transaction_time: r.9,
                    created: r.10,
                    finished: r.11,
                    expires: r.12,
                    error: r.13,
                }))
            }

            async fn active(&self, owner: &str) -> StoreResult<u64> {
                let (n,): (i64,) = sqlx::query_as::<$db, _>(
                    "SELECT COUNT(*) FROM bulk_job WHERE owner = $1 \
                     AND state IN ('accepted', 'running')",
                )
                .bind(owner)
                .fetch_one(&self.write)
                .await
                .map_err(map_err)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn transition(
                &self,
                id: &str,
                from: &[&str],
                to: &str,
                error: Option<&str>,
                finished: Option<i64>,
                expires: Option<i64>,
            ) -> StoreResult<bool> {
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE bulk_job SET state = ");
                q.push_bind(to.to_string())
                    .push(", error = ")
                    .push_bind(error.map(str::to_string))
                    .push(", finished = ")
                    .push_bind(finished)
                    .push(", expires = ")
                    .push_bind(expires)
                    .push(" WHERE id = ")
                    .push_bind(id.to_string())
                    .push(" AND state IN (");
                let mut sep = q.separated(", ");
                for f in from {
                    sep.push_bind(f.to_string());
                }
                q.push(")");
                let n = q
                    .build()
                    .execute(&self.write)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                Ok(n > 0)
            }

            async fn progress(&self, id: &str, progress: &str) -> StoreResult<()> {
                sqlx::query::<$db>("UPDATE bulk_job SET progress = $1 WHERE id = $2")
                    .bind(progress)
                    .bind(id)
                    .execute(&self.write)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn clear_files(&self, id: &str) -> StoreResult<()> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                sqlx::query::<$db>("DELETE FROM bulk_chunk WHERE job_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query::<$db>("DELETE FROM bulk_file WHERE job_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn add_chunk(
                &self,
                id: &str,
                file_no: i64,
                chunk_no: i64,
                data: &str,
            ) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO bulk_chunk (job_id, file_no, chunk_no, data) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(file_no)
                .bind(chunk_no)
                .bind(data)
                .execute(&self.write)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn add_file(&self, id: &str, f: &BulkFileRow) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO bulk_file (job_id, file_no, kind, resource_type, count, bytes) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(f.file_no)
                .bind(&f.kind)
                .bind(&f.resource_type)
                .bind(f.count)
                .bind(f.bytes)
                .execute(&self.write)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn files(&self, id: &str) -> StoreResult<Vec<BulkFileRow>> {
                let rows: Vec<(i64, String, String, i64, i64)> = sqlx::query_as::<$db, _>(
                    "SELECT file_no, kind, resource_type, count, bytes FROM bulk_file \
                     WHERE job_id = $1 ORDER BY file_no",
                )
                .bind(id)
                .fetch_all(&self.write)
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| BulkFileRow {
                        file_no: r.0,
                        kind: r.1,
                        resource_type: r.2,
                        count: r.3,
                        bytes: r.4,
                    })
                    .collect())
            }

            async fn chunk(
                &self,
                id: &str,
                file_no: i64,
                chunk_no: i64,
            ) -> StoreResult<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as::<$db, _>(
                    "SELECT data FROM bulk_chunk WHERE job_id = $1 AND file_no = $2 \
                     AND chunk_no = $3",
                )
                .bind(id)
                .bind(file_no)
                .bind(chunk_no)
                .fetch_optional(&self.read)
                .await
                .map_err(map_err)?;
                Ok(row.map(|r| r.0))
            }

            async fn purge(&self, now: i64) -> StoreResult<u64> {
                let ids: Vec<(String,)> = sqlx::query_as::<$db, _>(
                    "SELECT id FROM bulk_job WHERE expires < $1 OR state = 'cancelled'",
                )
                .bind(now)
                .fetch_all(&self.write)
                .await
                .map_err(map_err)?;
                for (id,) in &ids {
                    self.clear_files(id).await?;
                    sqlx::query::<$db>("DELETE FROM bulk_job WHERE id = $1")
                        .bind(id)
                        .execute(&self.write)
                        .await
                        .map_err(map_err)?;
                }
                Ok(ids.len() as u64)
            }
        }
    };
}

bulk_store_impl!(Sqlite);
bulk_store_impl!(Postgres);
