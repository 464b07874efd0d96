//! One write transaction, implemented once for both dialects by a macro: resource versions,
//! and the typed sub-stores that commit with them — the audit chain ([`AuditTx`]), custom
//! parameter state ([`ParamTx`]), the job outbox ([`JobTx`]) and the ledger ([`LedgerTx`]). A
//! claim, its ledger postings, its jobs and its audit record commit together or not at all.
//!
//! What differs between the dialects is passed to the macro: PostgreSQL serializes writers of
//! one resource on advisory locks (SQLite's `BEGIN IMMEDIATE` already holds the database write
//! lock) and numbers its versions in the change feed at commit, in commit order (see
//! [`super::Store::changes`]).

use super::jobs::{JobTx, NewJob, insert_job};
use super::ledger::{LedgerTx, ledger_tx_impl};
use super::search::Compiler;
use super::sql::{self, SELECT_CURRENT, SELECT_VERSION, fetch_version, write_version};
use super::{NewVersion, StoreResult, StoredVersion, Transaction, map_err};
use crate::fhir::types::VersionId;
use crate::search::query::Filter;
use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder, Sqlite};
use std::sync::Arc;
use tokio::sync::Notify;

/// The audit chain inside a write transaction.
#[async_trait]
pub trait AuditTx: Send {
    /// The hash of the last AuditEvent in the chain (callers lock the key `audit-chain` first).
    async fn last_audit_hash(&mut self) -> StoreResult<Option<String>>;
    /// Appends an AuditEvent to the hash chain.
    async fn append_audit(
        &mut self,
        audit_id: &str,
        prev_hash: &str,
        hash: &str,
    ) -> StoreResult<()>;
    /// Appends AuditEvents to the hash chain in their order: (id, prev hash, hash).
    async fn append_audits(&mut self, links: &[(String, String, String)]) -> StoreResult<()>;
    /// Records AuditEvents to be stored as resources by the indexer: (id, recorded ms, body).
    async fn append_pending(&mut self, rows: &[(String, i64, String)]) -> StoreResult<()>;
    /// Removes the pending AuditEvents `first..=last` (they are being stored as resources);
    /// returns how many were there.
    async fn remove_pending(&mut self, first: i64, last: i64) -> StoreResult<u64>;
}

/// Custom search parameters' index state inside a write transaction.
#[async_trait]
pub trait ParamTx: Send {
    /// Sets a custom parameter's index state (`pending`, `reindexing`, `ready`).
    async fn set_param_state(&mut self, base: &str, code: &str, status: &str) -> StoreResult<()>;
    /// The registry changed (a SearchParameter deleted): every node reloads it.
    async fn bump_registry_generation(&mut self) -> StoreResult<()>;
}

/// A database transaction of either dialect.
pub(super) struct SqlTx<DB: sqlx::Database> {
    pub tx: sqlx::Transaction<'static, DB>,
    /// Sequence numbers of the versions written, for the change feed.
    written: Vec<i64>,
    /// Whether a job was enqueued (the workers are woken at commit).
    enqueued: bool,
    wake: Arc<Notify>,
}

impl<DB: sqlx::Database> SqlTx<DB> {
    pub fn new(tx: sqlx::Transaction<'static, DB>, wake: Arc<Notify>) -> SqlTx<DB> {
        SqlTx {
            tx,
            written: Vec::new(),
            enqueued: false,
            wake,
        }
    }
}

/// The advisory lock every PostgreSQL writer takes right before its commit to number its
/// versions in the change feed.
const FEED_LOCK: &str = "healporium:change-feed";

macro_rules! transaction_impl {
    ($db:ty, postgres = $pg:expr) => {
        impl SqlTx<$db> {
            async fn advisory_lock(&mut self, key: &str) -> StoreResult<()> {
                if !$pg {
                    return Ok(()); // BEGIN IMMEDIATE already holds the database write lock
                }
                sqlx::query::<$db>("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(key)
                    .execute(&mut *self.tx)
                    .await
                    .map(|_| ())
                    .map_err(map_err)
            }
        }

        #[async_trait]
        impl Transaction for SqlTx<$db> {
            async fn lock_resource(&mut self, resource_type: &str, id: &str) -> StoreResult<()> {
                self.advisory_lock(&format!("resource:{resource_type}/{id}"))
                    .await
            }

            async fn lock_key(&mut self, key: &str) -> StoreResult<()> {
                self.advisory_lock(&format!("key:{key}")).await
            }

            async fn current(
                &mut self,
                resource_type: &str,
                id: &str,
            ) -> StoreResult<Option<StoredVersion>> {
                fetch_version::<$db>(&mut self.tx, SELECT_CURRENT, resource_type, id, None).await
            }

            async fn find(
                &mut self,
                resource_type: &str,
                filters: &[Filter],
                limit: u32,
            ) -> StoreResult<Vec<String>> {
                Compiler::new($pg, true)
                    .ids::<$db>(resource_type, filters, limit)
                    .build_query_scalar()
                    .fetch_all(&mut *self.tx)
                    .await
                    .map_err(map_err)
            }

            async fn version(
                &mut self,
                resource_type: &str,
                id: &str,
                version: VersionId,
            ) -> StoreResult<Option<StoredVersion>> {
                fetch_version::<$db>(
                    &mut self.tx,
                    SELECT_VERSION,
                    resource_type,
                    id,
                    Some(version),
                )
                .await
            }

            async fn referrers(
                &mut self,
                target_type: &str,
                target_id: &str,
                limit: u32,
            ) -> StoreResult<Vec<(String, String)>> {
                sql::referrers::<$db>(&mut self.tx, target_type, target_id, limit).await
            }

            async fn live_among(
                &mut self,
                keys: &[(String, String)],
            ) -> StoreResult<Vec<(String, String)>> {
                sql::live_among::<$db>(&mut self.tx, keys).await
            }

            async fn savepoint(&mut self, name: &str) -> StoreResult<()> {
                sql::savepoint::<$db>(&mut self.tx, "SAVEPOINT", name).await
            }

            async fn rollback_to_savepoint(&mut self, name: &str) -> StoreResult<()> {
                sql::savepoint::<$db>(&mut self.tx, "ROLLBACK TO SAVEPOINT", name).await
            }

            async fn release_savepoint(&mut self, name: &str) -> StoreResult<()> {
                sql::savepoint::<$db>(&mut self.tx, "RELEASE SAVEPOINT", name).await
            }

            async fn replace_index_rows(
                &mut self,
                resource_type: &str,
                id: &str,
                params: &[String],
                rows: &crate::search::index::IndexRows,
            ) -> StoreResult<()> {
                sql::replace_index_rows::<$db>(&mut self.tx, resource_type, id, params, rows).await
            }

            async fn write(&mut self, v: &NewVersion) -> StoreResult<()> {
                let seq = write_version::<$db>(&mut self.tx, v).await?;
                self.written.push(seq);
                Ok(())
            }

            async fn write_new(&mut self, versions: &[NewVersion]) -> StoreResult<()> {
                let seqs = sql::write_new_versions::<$db>(&mut self.tx, versions).await?;
                self.written.extend(seqs);
                Ok(())
            }

            fn audit(&mut self) -> &mut dyn AuditTx {
                self
            }

            fn params(&mut self) -> &mut dyn ParamTx {
                self
            }

            fn jobs(&mut self) -> &mut dyn JobTx {
                self
            }

            fn ledger(&mut self) -> &mut dyn LedgerTx {
                self
            }

            async fn commit(mut self: Box<Self>) -> StoreResult<()> {
                if $pg && !self.written.is_empty() {
                    // number the versions in commit order: the lock is held until this
                    // commit is visible, so the next writer's numbers are higher and a reader
                    // never sees a number before all lower ones are visible
                    self.advisory_lock(FEED_LOCK).await?;
                    let written = std::mem::take(&mut self.written);
                    let mut qb = QueryBuilder::<$db>::new("INSERT INTO change_feed (pos, seq) ");
                    qb.push_values(written, |mut row, seq| {
                        row.push("nextval('change_feed_pos')");
                        row.push_bind(seq);
                    });
                    qb.build().execute(&mut *self.tx).await.map_err(map_err)?;
                }
                let enqueued = self.enqueued;
                let wake = self.wake.clone();
                self.tx.commit().await.map_err(map_err)?;
                if enqueued {
                    wake.notify_waiters();
                }
                Ok(())
            }
        }

        #[async_trait]
        impl AuditTx for SqlTx<$db> {
            async fn last_audit_hash(&mut self) -> StoreResult<Option<String>> {
                sqlx::query_scalar("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(map_err)
            }

            async fn append_audit(
                &mut self,
                audit_id: &str,
                prev_hash: &str,
                hash: &str,
            ) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO audit_chain (audit_id, prev_hash, hash) VALUES ($1, $2, $3)",
                )
                .bind(audit_id)
                .bind(prev_hash)
                .bind(hash)
                .execute(&mut *self.tx)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn append_pending(&mut self, rows: &[(String, i64, String)]) -> StoreResult<()> {
                for chunk in rows.chunks(300) {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO audit_pending (audit_id, recorded, body) ",
                    );
                    qb.push_values(chunk, |mut b, (id, recorded, body)| {
                        b.push_bind(id.clone())
                            .push_bind(*recorded)
                            .push_bind(body.clone());
                    });
                    qb.build().execute(&mut *self.tx).await.map_err(map_err)?;
                }
                Ok(())
            }

            async fn remove_pending(&mut self, first: i64, last: i64) -> StoreResult<u64> {
                sqlx::query::<$db>("DELETE FROM audit_pending WHERE seq >= $1 AND seq <= $2")
                    .bind(first)
                    .bind(last)
                    .execute(&mut *self.tx)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(map_err)
            }

            async fn append_audits(
                &mut self,
                links: &[(String, String, String)],
            ) -> StoreResult<()> {
                // rows are numbered in the order of the VALUES list, the chain's order
                for chunk in links.chunks(300) {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO audit_chain (audit_id, prev_hash, hash) ",
                    );
                    qb.push_values(chunk, |mut b, (id, prev, hash)| {
                        b.push_bind(id.clone())
                            .push_bind(prev.clone())
                            .push_bind(hash.clone());
                    });
                    qb.build().execute(&mut *self.tx).await.map_err(map_err)?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl ParamTx for SqlTx<$db> {
            async fn set_param_state(
                &mut self,
                base: &str,
                code: &str,
                status: &str,
            ) -> StoreResult<()> {
                sql::set_param_state::<$db>(&mut self.tx, base, code, status).await
            }

            async fn bump_registry_generation(&mut self) -> StoreResult<()> {
                sql::bump_registry_generation::<$db>(&mut self.tx).await
            }
        }

        #[async_trait]
        impl JobTx for SqlTx<$db> {
            async fn enqueue(&mut self, job: &NewJob, now: i64) -> StoreResult<Option<String>> {
                let id = insert_job!($db, &mut *self.tx, job, now)?;
                self.enqueued |= id.is_some();
                Ok(id)
            }
        }
    };
}

transaction_impl!(Sqlite, postgres = false);
transaction_impl!(Postgres, postgres = true);
ledger_tx_impl!(
    SqlTx<Sqlite>,
    Sqlite,
    "SELECT COALESCE(MAX(id), 0) + 1 FROM ledger_entry"
);
ledger_tx_impl!(
    SqlTx<Postgres>,
    Postgres,
    "SELECT nextval('ledger_entry_id')"
);
