//! The embedded SQLite store: one file, WAL mode, created and migrated on first start.
//!
//! Writers take the database write lock up front (`BEGIN IMMEDIATE`) on a single-connection
//! write pool, so writes are serialized in arrival order and never fail half-way on a lock
//! upgrade; readers use a separate pool and run concurrently (WAL).

use super::sql::{
    self, SELECT_CURRENT, SELECT_VERSION, fetch_version, find_query, read_history, write_version,
};
use super::{
    HistoryPage, HistoryQuery, HistoryScope, NewVersion, Store, StoreResult, StoredVersion,
    Transaction, map_err,
};
use crate::fhir::types::VersionId;
use crate::search::criteria::Criterion;
use anyhow::Context;
use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite database URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .context("cannot open the SQLite database")?;
        sqlx::migrate!("migrations/sqlite")
            .run(&write)
            .await
            .context("cannot migrate the SQLite database")?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await
            .context("cannot open the SQLite database for reading")?;
        Ok(SqliteStore { read, write })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn begin(&self) -> StoreResult<Box<dyn Transaction>> {
        let tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        Ok(Box::new(SqliteTx { tx }))
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

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}

struct SqliteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
}

#[async_trait]
impl Transaction for SqliteTx {
    async fn lock_resource(&mut self, _resource_type: &str, _id: &str) -> StoreResult<()> {
        Ok(()) // BEGIN IMMEDIATE already holds the database write lock
    }

    async fn lock_key(&mut self, _key: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn current(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> StoreResult<Option<StoredVersion>> {
        fetch_version::<Sqlite>(&mut self.tx, SELECT_CURRENT, resource_type, id, None).await
    }

    async fn find(
        &mut self,
        resource_type: &str,
        criteria: &[Criterion],
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        find_query::<Sqlite>(resource_type, criteria, limit)
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
        fetch_version::<Sqlite>(
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
        sql::referrers::<Sqlite>(&mut self.tx, target_type, target_id, limit).await
    }

    async fn live_among(
        &mut self,
        keys: &[(String, String)],
    ) -> StoreResult<Vec<(String, String)>> {
        sql::live_among::<Sqlite>(&mut self.tx, keys).await
    }

    async fn savepoint(&mut self, name: &str) -> StoreResult<()> {
        sql::savepoint::<Sqlite>(&mut self.tx, "SAVEPOINT", name).await
    }

    async fn rollback_to_savepoint(&mut self, name: &str) -> StoreResult<()> {
        sql::savepoint::<Sqlite>(&mut self.tx, "ROLLBACK TO SAVEPOINT", name).await
    }

    async fn release_savepoint(&mut self, name: &str) -> StoreResult<()> {
        sql::savepoint::<Sqlite>(&mut self.tx, "RELEASE SAVEPOINT", name).await
    }

    async fn write(&mut self, v: &NewVersion) -> StoreResult<()> {
        write_version::<Sqlite>(&mut self.tx, v).await
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await.map_err(map_err)
    }
}
