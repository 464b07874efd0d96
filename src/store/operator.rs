//! What the operator reads of the store — the HL7 v2 backlog, the Subscriptions' owed
//! notifications, the last verifications, the AuditEvents waiting for the indexer — as SQL
//! both dialects share (generic over sqlx's `Database`, like `sql.rs`).

use super::{StoreResult, map_err};
use sqlx::{Database, Decode, Encode, FromRow, QueryBuilder, Type};

/// HL7 v2 messages received and not yet answered, and when the oldest was received.
pub(super) async fn feed_backlog<DB>(conn: &mut DB::Connection) -> StoreResult<(i64, Option<i64>)>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> (i64, Option<i64>): FromRow<'r, DB::Row>,
{
    sqlx::query_as::<DB, (i64, Option<i64>)>(
        "SELECT COUNT(*), MIN(received) FROM feed_message WHERE state = 'processing'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)
}

/// A count of `table`'s rows (a fixed table name, never input).
pub(super) async fn count_rows<DB>(
    conn: &mut DB::Connection,
    table: &'static str,
) -> StoreResult<i64>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    let (n,) =
        sqlx::query_as::<DB, (i64,)>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
    Ok(n)
}

/// Records the outcome of a verification (`audit`, `ledger`).
pub(super) async fn record_verification<DB>(
    conn: &mut DB::Connection,
    kind: &str,
    at: i64,
    ok: bool,
    detail: &str,
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO verification (kind, at, ok, detail) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind) DO UPDATE SET at = excluded.at, ok = excluded.ok, \
         detail = excluded.detail",
    )
    .bind(kind)
    .bind(at)
    .bind(ok)
    .bind(detail)
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(map_err)
}

/// The last verification of each kind: (kind, when, passed).
pub(super) async fn verifications<DB>(
    conn: &mut DB::Connection,
) -> StoreResult<Vec<(String, i64, bool)>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> (String, i64, bool): FromRow<'r, DB::Row>,
{
    sqlx::query_as::<DB, (String, i64, bool)>("SELECT kind, at, ok FROM verification ORDER BY kind")
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)
}

/// The oldest pending AuditEvents: (seq, id, recorded ms, body), in order.
pub(super) async fn pending_audits<DB>(
    conn: &mut DB::Connection,
    limit: u32,
) -> StoreResult<Vec<(i64, String, i64, String)>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (i64, String, i64, String): FromRow<'r, DB::Row>,
{
    sqlx::query_as::<DB, (i64, String, i64, String)>(
        "SELECT seq, audit_id, recorded, body FROM audit_pending ORDER BY seq LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)
}

/// The bodies of pending AuditEvents among `ids`: (id, body).
pub(super) async fn pending_audit_bodies<DB>(
    conn: &mut DB::Connection,
    ids: &[String],
) -> StoreResult<Vec<(String, String)>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> (String, String): FromRow<'r, DB::Row>,
    for<'r> String: Decode<'r, DB>,
{
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut qb =
            QueryBuilder::<DB>::new("SELECT audit_id, body FROM audit_pending WHERE audit_id IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(id.clone());
        }
        qb.push(")");
        let rows: Vec<(String, String)> = qb
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
        out.extend(rows);
    }
    Ok(out)
}
