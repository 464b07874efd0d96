//! The embedded SQLite store: one file, WAL mode, created and migrated on first start.
//!
//! Writers take the database write lock up front (`BEGIN IMMEDIATE`) on a single-connection
//! write pool, so writes are serialized in arrival order and never fail half-way on a lock
//! upgrade; readers use a separate pool and run concurrently (WAL).

use super::heavy::{ABANDONED, Closing, FINISHED, Heavy};
use super::search::{
    Compiler, Hit, SearchSpec, hits_from_rows, include_query, plan_forms, revinclude_query,
    sort_walk, walk_sorted,
};
use super::sql::{self, SELECT_CURRENT, SELECT_VERSION, fetch_version, read_history};
use super::{
    HistoryPage, HistoryQuery, HistoryScope, Store, StoreResult, StoredVersion, Transaction,
    map_err,
};
use crate::fhir::types::VersionId;
use crate::search::query::Filter;
use anyhow::Context;
use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    heavy: Heavy,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

/// Read connections; half of them may run searches at once ([`Heavy`]).
const READERS: u32 = 8;

impl SqliteStore {
    pub async fn open(url: &str, opts: &super::StoreOptions) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite database URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // statement journals (multi-row INSERTs inside a transaction) in memory, not in
            // temporary files: they never outlive their statement
            .pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            // the one writer keeps the index pages it updates (16 MB; readers keep SQLite's
            // default 2 MB each) and checkpoints every 10,000 WAL pages instead of 1,000, so a
            // hot index page is copied into the database once per checkpoint, not ten times
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", "-16384")
                    .pragma("wal_autocheckpoint", "10000"),
            )
            .await
            .context("cannot open the SQLite database")?;
        sqlx::migrate!("migrations/sqlite")
            .run(&write)
            .await
            .context("cannot migrate the SQLite database")?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true))
            .await
            .context("cannot open the SQLite database for reading")?;
        Ok(SqliteStore {
            read,
            write,
            heavy: Heavy::new(READERS, opts.statement_timeout_ms),
            wake: Default::default(),
        })
    }

    /// A read connection for a search: its statements stop at the statement timeout or when
    /// the request is dropped (a progress handler watches both).
    async fn heavy_conn(&self) -> StoreResult<Closing<Sqlite>> {
        let mut conn = Closing::new(self.read.acquire().await.map_err(map_err)?);
        let state = conn.state();
        let deadline = std::time::Instant::now() + self.heavy.timeout();
        conn.conn()?
            .lock_handle()
            .await
            .map_err(map_err)?
            .set_progress_handler(1000, move || match state.load(Ordering::Relaxed) {
                FINISHED => true,
                ABANDONED => false,
                _ => std::time::Instant::now() < deadline,
            });
        Ok(conn)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn auth(&self) -> std::sync::Arc<dyn super::AuthStore> {
        std::sync::Arc::new(super::auth::AuthSql {
            read: self.read.clone(),
            write: self.write.clone(),
        })
    }

    fn subscriptions(&self) -> std::sync::Arc<dyn super::SubscriptionStore> {
        std::sync::Arc::new(super::subscriptions::SubscriptionSql {
            read: self.read.clone(),
            write: self.write.clone(),
        })
    }

    fn bulk(&self) -> std::sync::Arc<dyn super::BulkStore> {
        std::sync::Arc::new(super::bulk::BulkSql {
            read: self.read.clone(),
            write: self.write.clone(),
        })
    }

    fn feeds(&self) -> std::sync::Arc<dyn super::FeedStore> {
        std::sync::Arc::new(super::feeds::FeedSql {
            read: self.read.clone(),
            write: self.write.clone(),
        })
    }

    fn jobs(&self) -> std::sync::Arc<dyn super::JobStore> {
        std::sync::Arc::new(super::jobs::JobSql {
            read: self.read.clone(),
            write: self.write.clone(),
            claim_lock: "",
        })
    }

    fn ledger(&self) -> std::sync::Arc<dyn super::ledger::LedgerStore> {
        std::sync::Arc::new(super::ledger::LedgerSql {
            read: self.read.clone(),
        })
    }

    fn job_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    async fn changes(&self, after: i64, limit: u32) -> StoreResult<Vec<(i64, StoredVersion)>> {
        let rows = sqlx::query(sql::CHANGES_SQLITE)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(map_err)?;
        rows.iter().map(sql::version_from_row).collect()
    }

    async fn purge_cursors(&self, before: i64) -> StoreResult<u64> {
        sqlx::query("DELETE FROM search_cursor WHERE created < $1")
            .bind(before)
            .execute(&self.write)
            .await
            .map(|r| r.rows_affected())
            .map_err(map_err)
    }

    async fn begin(&self) -> StoreResult<Box<dyn Transaction>> {
        let tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        Ok(Box::new(super::tx::SqlTx::new(tx, self.wake.clone())))
    }

    async fn read(&self, resource_type: &str, id: &str) -> StoreResult<Option<StoredVersion>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        fetch_version::<Sqlite>(&mut conn, SELECT_CURRENT, resource_type, id, None).await
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: VersionId,
    ) -> StoreResult<Option<StoredVersion>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        fetch_version::<Sqlite>(&mut conn, SELECT_VERSION, resource_type, id, Some(version)).await
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        query: &HistoryQuery,
    ) -> StoreResult<HistoryPage> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        read_history::<Sqlite>(&mut conn, scope, query).await
    }

    async fn referencing(
        &self,
        target_type: &str,
        target_id: Option<&str>,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        sql::referencing::<Sqlite>(&mut conn, target_type, target_id).await
    }

    async fn links_from(&self, sources: &[(String, String)]) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        sql::links_from::<Sqlite>(&mut conn, sources).await
    }

    async fn read_many(&self, keys: &[(String, String)]) -> StoreResult<Vec<StoredVersion>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        sql::read_many::<Sqlite>(&mut conn, keys).await
    }

    async fn current_page(
        &self,
        resource_type: &str,
        since: i64,
        until: i64,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<StoredVersion>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        sql::current_page::<Sqlite>(&mut conn, resource_type, since, until, after, limit).await
    }

    async fn live_ids(&self, resource_type: &str) -> StoreResult<Vec<String>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        sql::live_ids::<Sqlite>(&mut conn, resource_type).await
    }

    async fn referrers(
        &self,
        target_type: &str,
        target_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        sql::referrers::<Sqlite>(&mut conn, target_type, target_id, limit).await
    }

    async fn search(&self, spec: &SearchSpec<'_>) -> StoreResult<Vec<Hit>> {
        let _slot = self.heavy.enter().await?;
        let mut guard = self.heavy_conn().await?;
        let conn = guard.conn()?;
        let forms = plan_forms::<Sqlite>(conn, false, spec).await?;
        let spec = &SearchSpec {
            forms: &forms,
            ..spec.clone()
        };
        let hits = if let Some(walk) = sort_walk(spec) {
            walk_sorted::<Sqlite>(conn, false, true, spec, walk).await?
        } else {
            let rows = Compiler::new(false, true)
                .page::<Sqlite>(spec)
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(map_err)?;
            hits_from_rows(&rows, spec)?
        };
        guard.keep();
        Ok(hits)
    }

    async fn explain_search(&self, spec: &SearchSpec<'_>) -> StoreResult<String> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        let forms = plan_forms::<Sqlite>(&mut conn, false, spec).await?;
        let spec = &SearchSpec {
            forms: &forms,
            ..spec.clone()
        };
        let rows = Compiler::new(false, true)
            .page_with::<Sqlite>("EXPLAIN QUERY PLAN ", spec)
            .build()
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
        let mut out = String::new();
        for row in &rows {
            use sqlx::Row;
            let line: String = row
                .try_get(3)
                .map_err(|e| super::StoreError::Internal(e.to_string()))?;
            out.push_str(&line);
            out.push('\n');
        }
        Ok(out)
    }

    async fn count(&self, types: &[String], filters: &[Filter]) -> StoreResult<u64> {
        let _slot = self.heavy.enter().await?;
        let mut guard = self.heavy_conn().await?;
        let n: i64 = Compiler::new(false, true)
            .count::<Sqlite>(types, filters)
            .build_query_scalar()
            .fetch_one(&mut *guard.conn()?)
            .await
            .map_err(map_err)?;
        guard.keep();
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn include_targets(
        &self,
        sources: &[(String, String)],
        param: Option<&str>,
        target_type: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        let _slot = self.heavy.enter().await?;
        let mut guard = self.heavy_conn().await?;
        let mut out = Vec::new();
        for chunk in sources.chunks(200) {
            if out.len() >= limit {
                break;
            }
            let rows: Vec<(String, String)> =
                include_query::<Sqlite>(chunk, param, target_type, limit - out.len())
                    .build_query_as()
                    .fetch_all(&mut *guard.conn()?)
                    .await
                    .map_err(map_err)?;
            out.extend(rows);
        }
        guard.keep();
        Ok(out)
    }

    async fn revinclude_sources(
        &self,
        targets: &[(String, String)],
        source_type: Option<&str>,
        param: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        let _slot = self.heavy.enter().await?;
        let mut guard = self.heavy_conn().await?;
        let mut out = Vec::new();
        for chunk in targets.chunks(200) {
            if out.len() >= limit {
                break;
            }
            let rows: Vec<(String, String)> =
                revinclude_query::<Sqlite>(chunk, source_type, param, limit - out.len())
                    .build_query_as()
                    .fetch_all(&mut *guard.conn()?)
                    .await
                    .map_err(map_err)?;
            out.extend(rows);
        }
        guard.keep();
        Ok(out)
    }

    async fn save_cursors(&self, rows: &[(String, i64, String)]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut qb: sqlx::QueryBuilder<Sqlite> =
            sqlx::QueryBuilder::new("INSERT INTO search_cursor (id, created, payload) ");
        qb.push_values(rows, |mut b, (id, created, payload)| {
            b.push_bind(id.as_str())
                .push_bind(*created)
                .push_bind(payload.as_str());
        });
        qb.build().execute(&self.write).await.map_err(map_err)?;
        Ok(())
    }

    async fn audit_chain(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, String, String, String)>> {
        sqlx::query_as(
            "SELECT seq, audit_id, prev_hash, hash FROM audit_chain WHERE seq > $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(map_err)
    }

    fn pool_stats(&self) -> Vec<(&'static str, u32, u32, u32)> {
        let stat = |name, pool: &SqlitePool| {
            let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
            (
                name,
                pool.size(),
                idle,
                pool.options().get_max_connections(),
            )
        };
        vec![
            stat("sqlite-read", &self.read),
            stat("sqlite-write", &self.write),
        ]
    }

    async fn change_head(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM resource_version")
            .fetch_one(&self.read)
            .await
            .map_err(map_err)
    }

    async fn feed_backlog(&self) -> StoreResult<(i64, Option<i64>)> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        super::operator::feed_backlog::<Sqlite>(&mut conn).await
    }

    async fn subscription_owed(&self) -> StoreResult<i64> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        super::operator::count_rows::<Sqlite>(&mut conn, "subscription_event").await
    }

    async fn record_verification(
        &self,
        kind: &str,
        at: i64,
        ok: bool,
        detail: &str,
    ) -> StoreResult<()> {
        let mut conn = self.write.acquire().await.map_err(map_err)?;
        super::operator::record_verification::<Sqlite>(&mut conn, kind, at, ok, detail).await
    }

    async fn verifications(&self) -> StoreResult<Vec<(String, i64, bool)>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        super::operator::verifications::<Sqlite>(&mut conn).await
    }

    async fn pending_audits(&self, limit: u32) -> StoreResult<Vec<(i64, String, i64, String)>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        super::operator::pending_audits::<Sqlite>(&mut conn, limit).await
    }

    async fn pending_audit_bodies(&self, ids: &[String]) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        super::operator::pending_audit_bodies::<Sqlite>(&mut conn, ids).await
    }

    async fn audit_pending_count(&self) -> StoreResult<u64> {
        let mut conn = self.read.acquire().await.map_err(map_err)?;
        let n = super::operator::count_rows::<Sqlite>(&mut conn, "audit_pending").await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn param_states(&self) -> StoreResult<Vec<(String, String, String)>> {
        sqlx::query_as("SELECT base, code, status FROM search_param_state ORDER BY base, code")
            .fetch_all(&self.read)
            .await
            .map_err(map_err)
    }

    async fn set_param_state(&self, base: &str, code: &str, status: &str) -> StoreResult<()> {
        let mut conn = self.write.acquire().await.map_err(map_err)?;
        sql::set_param_state::<Sqlite>(&mut conn, base, code, status).await
    }

    async fn registry_generation(&self) -> StoreResult<i64> {
        sql::registry_generation::<Sqlite, _>(&self.read).await
    }

    async fn load_cursor(&self, id: &str) -> StoreResult<Option<(i64, String)>> {
        sqlx::query_as("SELECT created, payload FROM search_cursor WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(map_err)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}
