//! The PostgreSQL store: the production and scale-out backend. Stateless Healporium nodes
//! share one database; writers of one resource serialize on a transaction-scoped advisory lock
//! and the current-version row is updated only if it still holds the expected version.

use super::heavy::{Closing, Heavy};
use super::search::{
    Compiler, Hit, SearchSpec, hits_from_rows, include_query, ordered_plan, plan_forms,
    revinclude_query, sort_walk, walk_sorted,
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
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

pub struct PostgresStore {
    pool: PgPool,
    /// Where searches and their counts run: a read replica when configured, else `pool`.
    search: PgPool,
    replica: bool,
    heavy: Heavy,
    /// The database collates text bytewise (C/POSIX): ids sort by the primary key as is.
    c_ids: bool,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

/// Pooled connections per node; half of them may run searches at once ([`Heavy`]).
const CONNECTIONS: u32 = 16;

impl PostgresStore {
    pub async fn open(url: &str, opts: &super::StoreOptions) -> anyhow::Result<PostgresStore> {
        let base = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
        // migrations run on a connection of their own, without the statement timeout (an
        // index built over a large table may take longer)
        let mut migrating = <sqlx::PgConnection as sqlx::Connection>::connect_with(&base)
            .await
            .context("cannot connect to PostgreSQL")?;
        sqlx::migrate!("migrations/postgres")
            .run(&mut migrating)
            .await
            .context("cannot migrate the PostgreSQL database")?;
        // read on the migration connection, which has no statement timeout: a store opened
        // with a very short one must still open
        let collation: String = sqlx::query_scalar(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()",
        )
        .fetch_one(&mut migrating)
        .await
        .context("cannot read the database collation")?;
        let _ = sqlx::Connection::close(migrating).await;
        // Search statements are prepared once per connection; PostgreSQL's generic plans
        // (chosen after five runs) ignore how selective the values are and made chained
        // searches 8x slower in the search benchmark, so plan each execution for its values.
        // Every statement stops at the statement timeout, and a statement whose client closed
        // the connection (a search abandoned with its request, see heavy.rs) is cancelled
        // within a second (PostgreSQL 14 and later).
        let timeout = opts.statement_timeout_ms.to_string();
        let options = base.options([
            ("plan_cache_mode", "force_custom_plan"),
            ("statement_timeout", timeout.as_str()),
            ("client_connection_check_interval", "1000"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .context("cannot connect to PostgreSQL")?;
        let c_ids = matches!(collation.as_str(), "C" | "POSIX" | "C.UTF-8" | "C.utf8");
        // searches on a read replica: same settings, read-only transactions, no migrations
        // (the replica follows the primary's schema)
        let search = match &opts.search_replica_url {
            None => pool.clone(),
            Some(url) => {
                let replica = PgConnectOptions::from_str(url)
                    .context("invalid PostgreSQL URL of the search replica")?
                    .options([
                        ("plan_cache_mode", "force_custom_plan"),
                        ("statement_timeout", timeout.as_str()),
                        ("client_connection_check_interval", "1000"),
                        ("default_transaction_read_only", "on"),
                    ]);
                PgPoolOptions::new()
                    .max_connections(CONNECTIONS)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(replica)
                    .await
                    .context("cannot connect to the search replica")?
            }
        };
        Ok(PostgresStore {
            replica: opts.search_replica_url.is_some(),
            pool,
            search,
            heavy: Heavy::new(CONNECTIONS, opts.statement_timeout_ms),
            c_ids,
            wake: Default::default(),
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn auth(&self) -> std::sync::Arc<dyn super::AuthStore> {
        std::sync::Arc::new(super::auth::AuthSql {
            read: self.pool.clone(),
            write: self.pool.clone(),
        })
    }

    fn subscriptions(&self) -> std::sync::Arc<dyn super::SubscriptionStore> {
        std::sync::Arc::new(super::subscriptions::SubscriptionSql {
            read: self.pool.clone(),
            write: self.pool.clone(),
        })
    }

    fn bulk(&self) -> std::sync::Arc<dyn super::BulkStore> {
        std::sync::Arc::new(super::bulk::BulkSql {
            read: self.pool.clone(),
            write: self.pool.clone(),
        })
    }

    fn feeds(&self) -> std::sync::Arc<dyn super::FeedStore> {
        std::sync::Arc::new(super::feeds::FeedSql {
            read: self.pool.clone(),
            write: self.pool.clone(),
        })
    }

    fn jobs(&self) -> std::sync::Arc<dyn super::JobStore> {
        std::sync::Arc::new(super::jobs::JobSql {
            read: self.pool.clone(),
            write: self.pool.clone(),
            claim_lock: "FOR UPDATE SKIP LOCKED",
        })
    }

    fn ledger(&self) -> std::sync::Arc<dyn super::ledger::LedgerStore> {
        std::sync::Arc::new(super::ledger::LedgerSql {
            read: self.pool.clone(),
        })
    }

    fn job_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    async fn changes(&self, after: i64, limit: u32) -> StoreResult<Vec<(i64, StoredVersion)>> {
        let rows = sqlx::query(sql::CHANGES_POSTGRES)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(sql::version_from_row).collect()
    }

    async fn purge_cursors(&self, before: i64) -> StoreResult<u64> {
        sqlx::query("DELETE FROM search_cursor WHERE created < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(map_err)
    }

    async fn begin(&self) -> StoreResult<Box<dyn Transaction>> {
        let tx = self.pool.begin().await.map_err(map_err)?;
        Ok(Box::new(super::tx::SqlTx::new(tx, self.wake.clone())))
    }

    async fn read(&self, resource_type: &str, id: &str) -> StoreResult<Option<StoredVersion>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        fetch_version::<Postgres>(&mut conn, SELECT_CURRENT, resource_type, id, None).await
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: VersionId,
    ) -> StoreResult<Option<StoredVersion>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        fetch_version::<Postgres>(&mut conn, SELECT_VERSION, resource_type, id, Some(version)).await
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        query: &HistoryQuery,
    ) -> StoreResult<HistoryPage> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        read_history::<Postgres>(&mut conn, scope, query).await
    }

    async fn referencing(
        &self,
        target_type: &str,
        target_id: Option<&str>,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        sql::referencing::<Postgres>(&mut conn, target_type, target_id).await
    }

    async fn links_from(&self, sources: &[(String, String)]) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        sql::links_from::<Postgres>(&mut conn, sources).await
    }

    async fn read_many(&self, keys: &[(String, String)]) -> StoreResult<Vec<StoredVersion>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        sql::read_many::<Postgres>(&mut conn, keys).await
    }

    async fn current_page(
        &self,
        resource_type: &str,
        since: i64,
        until: i64,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<StoredVersion>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        sql::current_page::<Postgres>(&mut conn, resource_type, since, until, after, limit).await
    }

    async fn live_ids(&self, resource_type: &str) -> StoreResult<Vec<String>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        sql::live_ids::<Postgres>(&mut conn, resource_type).await
    }

    async fn referrers(
        &self,
        target_type: &str,
        target_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        sql::referrers::<Postgres>(&mut conn, target_type, target_id, limit).await
    }

    async fn search(&self, spec: &SearchSpec<'_>) -> StoreResult<Vec<Hit>> {
        let _slot = self.heavy.enter().await?;
        let mut guard = Closing::new(self.search.acquire().await.map_err(map_err)?);
        let conn = guard.conn()?;
        let forms = plan_forms::<Postgres>(conn, true, spec).await?;
        let spec = &SearchSpec {
            forms: &forms,
            ..spec.clone()
        };
        let walk = sort_walk(spec);
        if walk.is_none() && ordered_plan(spec).is_none() {
            let rows = Compiler::new(true, self.c_ids)
                .page::<Postgres>(spec)
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(map_err)?;
            let hits = hits_from_rows(&rows, spec)?;
            guard.keep();
            return Ok(hits);
        }
        let mut tx = without_full_sort(conn).await?;
        let hits = match walk {
            Some(walk) => walk_sorted::<Postgres>(&mut tx, true, self.c_ids, spec, walk).await?,
            None => {
                let rows = Compiler::new(true, self.c_ids)
                    .page::<Postgres>(spec)
                    .build()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_err)?;
                hits_from_rows(&rows, spec)?
            }
        };
        tx.commit().await.map_err(map_err)?;
        guard.keep();
        Ok(hits)
    }

    async fn explain_search(&self, spec: &SearchSpec<'_>) -> StoreResult<String> {
        let mut conn = self.search.acquire().await.map_err(map_err)?;
        let forms = plan_forms::<Postgres>(&mut conn, true, spec).await?;
        let spec = &SearchSpec {
            forms: &forms,
            ..spec.clone()
        };
        let mut query = Compiler::new(true, self.c_ids);
        let mut qb = query.page_with::<Postgres>("EXPLAIN (ANALYZE, BUFFERS) ", spec);
        let rows = if ordered_plan(spec).is_some() || sort_walk(spec).is_some() {
            let mut tx = without_full_sort(&mut conn).await?;
            let rows = qb.build().fetch_all(&mut *tx).await.map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            rows
        } else {
            qb.build().fetch_all(&mut *conn).await.map_err(map_err)?
        };
        let mut out = String::new();
        for row in &rows {
            use sqlx::Row;
            let line: String = row
                .try_get(0)
                .map_err(|e| super::StoreError::Internal(e.to_string()))?;
            out.push_str(&line);
            out.push('\n');
        }
        Ok(out)
    }

    async fn count(&self, types: &[String], filters: &[Filter]) -> StoreResult<u64> {
        let _slot = self.heavy.enter().await?;
        let mut guard = Closing::new(self.search.acquire().await.map_err(map_err)?);
        let n: i64 = Compiler::new(true, self.c_ids)
            .count::<Postgres>(types, filters)
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
        let mut guard = Closing::new(self.pool.acquire().await.map_err(map_err)?);
        let mut out = Vec::new();
        for chunk in sources.chunks(200) {
            if out.len() >= limit {
                break;
            }
            let rows: Vec<(String, String)> =
                include_query::<Postgres>(chunk, param, target_type, limit - out.len())
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
        let mut guard = Closing::new(self.pool.acquire().await.map_err(map_err)?);
        let mut out = Vec::new();
        for chunk in targets.chunks(200) {
            if out.len() >= limit {
                break;
            }
            let rows: Vec<(String, String)> =
                revinclude_query::<Postgres>(chunk, source_type, param, limit - out.len())
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let mut qb: sqlx::QueryBuilder<Postgres> =
            sqlx::QueryBuilder::new("INSERT INTO search_cursor (id, created, payload) ");
        qb.push_values(rows, |mut b, (id, created, payload)| {
            b.push_bind(id.as_str())
                .push_bind(*created)
                .push_bind(payload.as_str());
        });
        qb.build().execute(&mut *tx).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
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
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)
    }

    fn pool_stats(&self) -> Vec<(&'static str, u32, u32, u32)> {
        let stats = |name: &'static str, pool: &PgPool| {
            (
                name,
                pool.size(),
                u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                pool.options().get_max_connections(),
            )
        };
        let mut out = vec![stats("postgres", &self.pool)];
        if self.replica {
            out.push(stats("postgres-search-replica", &self.search));
        }
        out
    }

    async fn change_head(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(pos), 0) FROM change_feed")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn feed_backlog(&self) -> StoreResult<(i64, Option<i64>)> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        super::operator::feed_backlog::<Postgres>(&mut conn).await
    }

    async fn subscription_owed(&self) -> StoreResult<i64> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        super::operator::count_rows::<Postgres>(&mut conn, "subscription_event").await
    }

    async fn record_verification(
        &self,
        kind: &str,
        at: i64,
        ok: bool,
        detail: &str,
    ) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        super::operator::record_verification::<Postgres>(&mut conn, kind, at, ok, detail).await
    }

    async fn verifications(&self) -> StoreResult<Vec<(String, i64, bool)>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        super::operator::verifications::<Postgres>(&mut conn).await
    }

    async fn pending_audits(&self, limit: u32) -> StoreResult<Vec<(i64, String, i64, String)>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        super::operator::pending_audits::<Postgres>(&mut conn, limit).await
    }

    async fn pending_audit_bodies(&self, ids: &[String]) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        super::operator::pending_audit_bodies::<Postgres>(&mut conn, ids).await
    }

    async fn audit_pending_count(&self) -> StoreResult<u64> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let n = super::operator::count_rows::<Postgres>(&mut conn, "audit_pending").await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn param_states(&self) -> StoreResult<Vec<(String, String, String)>> {
        sqlx::query_as("SELECT base, code, status FROM search_param_state ORDER BY base, code")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn set_param_state(&self, base: &str, code: &str, status: &str) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        sql::set_param_state::<Postgres>(&mut conn, base, code, status).await
    }

    async fn registry_generation(&self) -> StoreResult<i64> {
        sql::registry_generation::<Postgres, _>(&self.pool).await
    }

    async fn load_cursor(&self, id: &str) -> StoreResult<Option<(i64, String)>> {
        sqlx::query_as("SELECT created, payload FROM search_cursor WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}

/// A transaction for an ordered page or a sort walk, which are only cheap if never sorted
/// whole: PostgreSQL 15 would sort the whole join from its (low) row estimate of a prefix
/// range; with full sorts off it walks the index and sorts each run of equal keys only.
async fn without_full_sort(
    conn: &mut sqlx::PgConnection,
) -> StoreResult<sqlx::Transaction<'_, Postgres>> {
    let mut tx = sqlx::Connection::begin(conn).await.map_err(map_err)?;
    sqlx::query("SET LOCAL enable_sort = off")
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(tx)
}
