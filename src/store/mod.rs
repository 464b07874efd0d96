//! L2: the only place with SQL. One [`Store`] trait, two implementations (SQLite, PostgreSQL),
//! chosen from the database URL at start; migrations live in migrations/sqlite and
//! migrations/postgres and are applied by [`open`].
//!
//! Every resource version is an immutable row (type, id, version, lastUpdated, method, deleted,
//! exact JSON text). Writes go through a [`Transaction`]: the interaction layer locks the
//! resource, reads the current version, decides, and writes — and the write itself re-checks
//! the expected previous version, so a concurrent writer can never be lost silently.

pub mod auth;
pub mod bulk;
pub mod feeds;
mod heavy;
pub mod jobs;
pub mod ledger;
mod operator;
mod postgres;
mod search;
mod sql;
mod sqlite;
pub mod subscriptions;
mod tx;

use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Instant, VersionId};
use crate::search::index::IndexRows;
use crate::search::query::Filter;
use async_trait::async_trait;
use std::sync::Arc;

pub use auth::AuthStore;
pub use bulk::{BulkFileRow, BulkJobRow, BulkStore, NewBulkJob};
pub use feeds::{Begun, DeadLetterRow, FeedMessageRow, FeedStore, Finish, NewFeedMessage};
pub use jobs::{AttemptRow, Claimed, JobRow, JobState, JobStore, JobTx, NewJob};
pub use postgres::PostgresStore;
pub use search::{
    Anchor, DRIVER_CAP, Form, Hit, KeyValue, ORDERED_MIN, SearchSpec, choose_forms, choose_plan,
};
pub use sqlite::SqliteStore;
pub use subscriptions::{SubscriptionEvent, SubscriptionStore};
pub use tx::{AuditTx, ParamTx};

/// The HTTP verb that produced a version, as history reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    fn parse(s: &str) -> Method {
        match s {
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Put,
        }
    }
}

/// One stored version of a resource.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version: VersionId,
    pub last_updated: Instant,
    pub method: Method,
    pub deleted: bool,
    /// The exact JSON text (None for a delete).
    pub body: Option<Arc<str>>,
}

/// A version to write.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub resource_type: String,
    pub id: String,
    pub version: VersionId,
    /// The version this one replaces; None when the resource must not exist yet.
    pub previous: Option<VersionId>,
    pub last_updated: Instant,
    pub method: Method,
    pub body: Option<String>,
    pub index: IndexRows,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

/// Keyset position in a history listing (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Entries older than this sequence number (the next page).
    Before(i64),
    /// Entries newer than this sequence number (the previous page).
    After(i64),
}

#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub since: Option<Instant>,
    pub cursor: Option<Cursor>,
    pub count: u32,
}

/// A page of history, newest first, with each entry's sequence number.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub entries: Vec<(i64, StoredVersion)>,
    /// All entries matching scope and `_since`, regardless of paging.
    pub total: u64,
    /// Whether entries newer than the first one of the page exist (for `previous`).
    pub has_newer: bool,
    /// Whether entries older than the last one of the page exist (for `next`).
    pub has_older: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A concurrent writer changed the resource (version check or unique key failed).
    #[error("concurrent modification")]
    Conflict,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A deadlock or serialization failure: the transaction may be retried as a whole.
    #[error("contention: {0}")]
    Contention(String),
    /// The statement ran past the statement timeout and was cancelled.
    #[error("statement timeout: {0}")]
    TooCostly(String),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<StoreError> for Outcome {
    fn from(e: StoreError) -> Outcome {
        match e {
            StoreError::Conflict => Outcome::new(
                ErrorKind::Conflict,
                "The resource was changed by a concurrent request; retry",
            ),
            StoreError::Unavailable(_) => Outcome::new(
                ErrorKind::Unavailable,
                "The database is unavailable; retry later",
            ),
            StoreError::Contention(_) => Outcome::new(
                ErrorKind::Contention,
                "Concurrent transactions collided; retry",
            ),
            StoreError::TooCostly(_) => Outcome::new(
                ErrorKind::TooCostly,
                "The search ran past the server's statement timeout and was cancelled \
                 (limit 'statement-timeout'); narrow it",
            ),
            StoreError::Internal(cause) => {
                // the database's message, never its detail (which can quote stored values)
                tracing::error!(%cause, "database error");
                Outcome::internal("Database error")
            }
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Reads outside a transaction and the way into one.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    /// The authorization server's tables in the same database.
    fn auth(&self) -> Arc<dyn AuthStore>;
    /// The job queue in the same database.
    fn jobs(&self) -> Arc<dyn JobStore>;
    /// The feeds' inbox and dead letters in the same database.
    fn feeds(&self) -> Arc<dyn FeedStore>;
    /// Bulk Data jobs and their files in the same database.
    fn bulk(&self) -> Arc<dyn BulkStore>;
    /// The subscriptions' outbox and delivery state in the same database.
    fn subscriptions(&self) -> Arc<dyn SubscriptionStore>;
    /// The ledger outside write transactions (verification, reading).
    fn ledger(&self) -> Arc<dyn ledger::LedgerStore>;
    /// Notified when a transaction that enqueued a job has committed on this node (workers
    /// wake at once instead of at their next poll).
    fn job_signal(&self) -> Arc<tokio::sync::Notify>;
    /// The change feed: committed resource versions after position `after`, in commit order,
    /// as (position, version). A reader that has seen position n never later finds a version
    /// at a lower position.
    async fn changes(&self, after: i64, limit: u32) -> StoreResult<Vec<(i64, StoredVersion)>>;
    /// Deletes paging cursors created before `before`.
    async fn purge_cursors(&self, before: i64) -> StoreResult<u64>;
    async fn begin(&self) -> StoreResult<Box<dyn Transaction>>;
    /// The current version (possibly a delete), or None if the resource never existed.
    async fn read(&self, resource_type: &str, id: &str) -> StoreResult<Option<StoredVersion>>;
    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: VersionId,
    ) -> StoreResult<Option<StoredVersion>>;
    async fn history(&self, scope: &HistoryScope, query: &HistoryQuery)
    -> StoreResult<HistoryPage>;
    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Reference-parameter rows pointing at `target_type` (one id, or any):
    /// (resource_type, id, param, target_id).
    async fn referencing(
        &self,
        target_type: &str,
        target_id: Option<&str>,
    ) -> StoreResult<Vec<(String, String, String, String)>>;
    /// The local resources that `sources` reference, distinct.
    async fn links_from(&self, sources: &[(String, String)]) -> StoreResult<Vec<(String, String)>>;
    /// The current, live versions of `keys` (missing and deleted ones are left out).
    async fn read_many(&self, keys: &[(String, String)]) -> StoreResult<Vec<StoredVersion>>;
    /// Ids of the live resources of a type.
    async fn live_ids(&self, resource_type: &str) -> StoreResult<Vec<String>>;
    /// The current live versions of `resource_type` last updated in `[since, until]` with
    /// ids after `after`, in id order, at most `limit`: one query per page of an unconfined
    /// Bulk Data export (no index tables, no second read for the bodies).
    async fn current_page(
        &self,
        resource_type: &str,
        since: i64,
        until: i64,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<StoredVersion>>;
    /// One page of a search, in sort order.
    async fn search(&self, spec: &SearchSpec<'_>) -> StoreResult<Vec<Hit>>;
    /// The database's plan for a search page (`EXPLAIN`), for benchmarks and diagnostics.
    async fn explain_search(&self, spec: &SearchSpec<'_>) -> StoreResult<String>;
    /// How many live resources a search matches.
    async fn count(&self, types: &[String], filters: &[Filter]) -> StoreResult<u64>;
    /// Targets of the reference rows of `sources` (`_include`), distinct, at most `limit`.
    async fn include_targets(
        &self,
        sources: &[(String, String)],
        param: Option<&str>,
        target_type: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, String)>>;
    /// Resources whose reference rows point at `targets` (`_revinclude`), distinct, at most
    /// `limit`.
    async fn revinclude_sources(
        &self,
        targets: &[(String, String)],
        source_type: Option<&str>,
        param: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, String)>>;
    /// Stores a page's paging cursors, (id, created, payload) each, in one statement (expired
    /// ones are purged by the clean-up job). A cursor is not worth an fsync of its own: on
    /// PostgreSQL the insert commits asynchronously (a crash may lose the newest cursors,
    /// whose links then answer "expired"), never anything else.
    async fn save_cursors(&self, rows: &[(String, i64, String)]) -> StoreResult<()>;
    /// The AuditEvent hash chain from `after_seq` on, in order: (seq, audit id, prev, hash).
    async fn audit_chain(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, String, String, String)>>;
    /// This node's connection pools: (pool name, open connections, idle ones, maximum).
    fn pool_stats(&self) -> Vec<(&'static str, u32, u32, u32)>;
    /// The newest position of the change feed (0 when empty).
    async fn change_head(&self) -> StoreResult<i64>;
    /// HL7 v2 messages received and not yet answered, and when the oldest was received.
    async fn feed_backlog(&self) -> StoreResult<(i64, Option<i64>)>;
    /// Notifications matched and not yet delivered.
    async fn subscription_owed(&self) -> StoreResult<i64>;
    /// Records the outcome of a verification (`audit`, `ledger`).
    async fn record_verification(
        &self,
        kind: &str,
        at: i64,
        ok: bool,
        detail: &str,
    ) -> StoreResult<()>;
    /// The last verification of each kind: (kind, when, passed).
    async fn verifications(&self) -> StoreResult<Vec<(String, i64, bool)>>;
    /// The oldest pending AuditEvents: (seq, id, recorded ms, body), in order.
    async fn pending_audits(&self, limit: u32) -> StoreResult<Vec<(i64, String, i64, String)>>;
    /// The bodies of pending AuditEvents among `ids`: (id, body).
    async fn pending_audit_bodies(&self, ids: &[String]) -> StoreResult<Vec<(String, String)>>;
    /// How many AuditEvents wait to be stored as resources.
    async fn audit_pending_count(&self) -> StoreResult<u64>;
    /// Index state of custom search parameters: (base, code, status).
    async fn param_states(&self) -> StoreResult<Vec<(String, String, String)>>;
    /// Sets a custom parameter's index state (`pending`, `reindexing`, `ready`).
    async fn set_param_state(&self, base: &str, code: &str, status: &str) -> StoreResult<()>;
    /// The search-parameter registry's generation: bumped by every change of a custom
    /// parameter or its index state, in the transaction that makes it.
    async fn registry_generation(&self) -> StoreResult<i64>;
    /// A paging cursor: (created, payload).
    async fn load_cursor(&self, id: &str) -> StoreResult<Option<(i64, String)>>;
    /// Live resources referencing `target_type/target_id` anywhere (at most `limit`).
    async fn referrers(
        &self,
        target_type: &str,
        target_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>>;
}

/// One database transaction. Dropping it without commit rolls back.
#[async_trait]
pub trait Transaction: Send {
    /// Serializes writers of one resource until the transaction ends.
    async fn lock_resource(&mut self, resource_type: &str, id: &str) -> StoreResult<()>;
    /// Serializes transactions that name the same key (e.g. identical conditional-create
    /// criteria) until the transaction ends.
    async fn lock_key(&mut self, key: &str) -> StoreResult<()>;
    async fn current(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> StoreResult<Option<StoredVersion>>;
    /// Ids of live resources of `resource_type` matching every filter (at most `limit`), as
    /// this transaction sees them.
    async fn find(
        &mut self,
        resource_type: &str,
        filters: &[Filter],
        limit: u32,
    ) -> StoreResult<Vec<String>>;
    /// A given version, as this transaction sees it.
    async fn version(
        &mut self,
        resource_type: &str,
        id: &str,
        version: VersionId,
    ) -> StoreResult<Option<StoredVersion>>;
    /// Live resources referencing `target_type/target_id` anywhere (at most `limit`).
    async fn referrers(
        &mut self,
        target_type: &str,
        target_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>>;
    /// Which of `keys` (type, id) are live resources, as this transaction sees them.
    async fn live_among(&mut self, keys: &[(String, String)])
    -> StoreResult<Vec<(String, String)>>;
    /// A named savepoint inside the transaction (batch entries).
    async fn savepoint(&mut self, name: &str) -> StoreResult<()>;
    async fn rollback_to_savepoint(&mut self, name: &str) -> StoreResult<()>;
    async fn release_savepoint(&mut self, name: &str) -> StoreResult<()>;
    /// Replaces a resource's rows of the parameters `params` (exact codes) with `rows`
    /// (reindexing).
    async fn replace_index_rows(
        &mut self,
        resource_type: &str,
        id: &str,
        params: &[String],
        rows: &IndexRows,
    ) -> StoreResult<()>;
    /// Writes a version; fails with Conflict when `previous` is no longer current.
    async fn write(&mut self, version: &NewVersion) -> StoreResult<()>;
    /// Writes the first versions of new resources (each with a body, none with a previous
    /// version) in multi-row statements shared by all of them.
    async fn write_new(&mut self, versions: &[NewVersion]) -> StoreResult<()>;
    /// The audit chain, in this transaction.
    fn audit(&mut self) -> &mut dyn AuditTx;
    /// Custom parameters' index state, in this transaction.
    fn params(&mut self) -> &mut dyn ParamTx;
    /// The job outbox: jobs enqueued here exist if and only if this transaction commits.
    fn jobs(&mut self) -> &mut dyn JobTx;
    /// The ledger, posted in this transaction.
    fn ledger(&mut self) -> &mut dyn ledger::LedgerTx;
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// Opens (creating and migrating if needed) the store a URL names:
/// `sqlite:path` / `sqlite://path` or `postgres://…` / `postgresql://…`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    open_with(url, &StoreOptions::default()).await
}

/// How a store runs its statements.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A statement (on SQLite: a search) running longer is cancelled, and the request gets a
    /// `too-costly` OperationOutcome.
    pub statement_timeout_ms: u64,
    /// PostgreSQL: a read replica that runs searches and their counts.
    pub search_replica_url: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            statement_timeout_ms: crate::fhir::limits::Limits::default().statement_timeout_ms,
            search_replica_url: None,
        }
    }
}

/// Opens the store at `url` with `options`.
pub async fn open_with(url: &str, options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url, options).await?))
    } else {
        anyhow::bail!("unsupported database URL scheme (use sqlite:PATH or postgres://…)")
    }
}

/// Maps sqlx errors: unique violations are conflicts, pool/IO trouble is unavailability.
fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::Database(db) => {
            let msg = db.message().to_string();
            if matches!(db.code().as_deref(), Some("40001") | Some("40P01")) {
                // PostgreSQL serialization failure / deadlock
                StoreError::Contention(msg)
            } else if matches!(db.code().as_deref(), Some("57014") | Some("9")) {
                // PostgreSQL query_canceled (statement timeout); SQLITE_INTERRUPT (our
                // progress handler: the timeout or an abandoned request)
                StoreError::TooCostly(msg)
            } else if msg.contains("database is locked") || msg.contains("busy") {
                StoreError::Unavailable(msg)
            } else {
                StoreError::Internal(msg)
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}
