//! SQL shared by the SQLite and PostgreSQL stores: statements both dialects accept, row
//! decoding, and the dynamic queries (conditional criteria, history), built with sqlx's
//! QueryBuilder so each dialect gets its own placeholders.

use super::{
    Cursor, HistoryPage, HistoryQuery, HistoryScope, Method, NewVersion, StoreError, StoreResult,
    StoredVersion, map_err,
};
use crate::fhir::types::Instant;
use crate::search::index::index_key;
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

pub(super) const VERSION_COLUMNS: &str =
    "v.seq, v.resource_type, v.id, v.version, v.last_updated, v.method, v.deleted, v.body";

/// The change feed on SQLite: versions are numbered inside the single writer's transaction,
/// so their sequence numbers are in commit order already.
pub(super) const CHANGES_SQLITE: &str = "SELECT v.seq, v.resource_type, v.id, v.version, \
     v.last_updated, v.method, v.deleted, v.body FROM resource_version v WHERE v.seq > $1 \
     ORDER BY v.seq LIMIT $2";

/// The change feed on PostgreSQL: positions assigned at commit (see store/tx.rs).
pub(super) const CHANGES_POSTGRES: &str = "SELECT f.pos, v.resource_type, v.id, v.version, \
     v.last_updated, v.method, v.deleted, v.body FROM change_feed f JOIN resource_version v \
     ON v.seq = f.seq WHERE f.pos > $1 ORDER BY f.pos LIMIT $2";

pub(super) const SELECT_CURRENT: &str = "SELECT v.seq, v.resource_type, v.id, v.version, \
     v.last_updated, v.method, v.deleted, v.body FROM resource r JOIN resource_version v \
     ON v.resource_type = r.resource_type AND v.id = r.id AND v.version = r.version \
     WHERE r.resource_type = $1 AND r.id = $2";

pub(super) const SELECT_VERSION: &str = "SELECT v.seq, v.resource_type, v.id, v.version, \
     v.last_updated, v.method, v.deleted, v.body FROM resource_version v \
     WHERE v.resource_type = $1 AND v.id = $2 AND v.version = $3";

pub(super) const INSERT_VERSION: &str = "INSERT INTO resource_version \
     (resource_type, id, version, last_updated, method, deleted, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq";

pub(super) const INSERT_CURRENT: &str = "INSERT INTO resource \
     (resource_type, id, version, deleted, last_updated) VALUES ($1, $2, $3, $4, $5)";

/// Decodes a row selected with [`VERSION_COLUMNS`].
pub(super) fn version_from_row<'r, R>(row: &'r R) -> StoreResult<(i64, StoredVersion)>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = |e: sqlx::Error| StoreError::Internal(e.to_string());
    let seq: i64 = row.try_get(0).map_err(get)?;
    let body: Option<String> = row.try_get(7).map_err(get)?;
    let method: String = row.try_get(5).map_err(get)?;
    Ok((
        seq,
        StoredVersion {
            resource_type: row.try_get(1).map_err(get)?,
            id: row.try_get(2).map_err(get)?,
            version: row.try_get(3).map_err(get)?,
            last_updated: Instant::from_millis(row.try_get(4).map_err(get)?),
            method: Method::parse(&method),
            deleted: row.try_get(6).map_err(get)?,
            body: body.map(Into::into),
        },
    ))
}

/// Appends the WHERE clause of a history listing.
fn push_history_filter<DB>(
    qb: &mut QueryBuilder<DB>,
    scope: &HistoryScope,
    query: &HistoryQuery,
    with_cursor: bool,
) where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    match scope {
        HistoryScope::System => {}
        HistoryScope::Type(t) => {
            qb.push(" AND v.resource_type = ");
            qb.push_bind(t.clone());
        }
        HistoryScope::Instance(t, id) => {
            qb.push(" AND v.resource_type = ");
            qb.push_bind(t.clone());
            qb.push(" AND v.id = ");
            qb.push_bind(id.clone());
        }
    }
    if let Some(since) = query.since {
        qb.push(" AND v.last_updated >= ");
        qb.push_bind(since.millis());
    }
    if with_cursor {
        match query.cursor {
            Some(Cursor::Before(seq)) => {
                qb.push(" AND v.seq < ");
                qb.push_bind(seq);
            }
            Some(Cursor::After(seq)) => {
                qb.push(" AND v.seq > ");
                qb.push_bind(seq);
            }
            None => {}
        }
    }
}

/// The page query: one row more than asked for tells whether another page exists.
pub(super) fn history_page_query<DB>(scope: &HistoryScope, query: &HistoryQuery) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(format!("SELECT {VERSION_COLUMNS} FROM resource_version v"));
    push_history_filter(&mut qb, scope, query, true);
    let order = if matches!(query.cursor, Some(Cursor::After(_))) {
        "ASC"
    } else {
        "DESC"
    };
    qb.push(format!(" ORDER BY v.seq {order} LIMIT "));
    qb.push_bind(i64::from(query.count) + 1);
    qb
}

pub(super) fn history_count_query<DB>(
    scope: &HistoryScope,
    query: &HistoryQuery,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM resource_version v");
    push_history_filter(&mut qb, scope, query, false);
    qb
}

/// Whether rows newer than `seq` exist (after a `Before` page), as a query.
pub(super) fn history_exists_query<DB>(
    scope: &HistoryScope,
    query: &HistoryQuery,
    cursor: Cursor,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let probe = HistoryQuery {
        cursor: Some(cursor),
        ..query.clone()
    };
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM (SELECT 1 FROM resource_version v");
    push_history_filter(&mut qb, scope, &probe, true);
    qb.push(" LIMIT 1) AS probe");
    qb
}

/// Assembles a page from rows fetched by [`history_page_query`] (count + 1 rows at most).
pub(super) fn assemble_page(
    mut rows: Vec<(i64, StoredVersion)>,
    query: &HistoryQuery,
    total: u64,
    other_side_exists: bool,
) -> HistoryPage {
    let more = rows.len() > query.count as usize;
    rows.truncate(query.count as usize);
    match query.cursor {
        Some(Cursor::After(_)) => {
            rows.reverse();
            HistoryPage {
                entries: rows,
                total,
                has_newer: more,
                has_older: other_side_exists,
            }
        }
        Some(Cursor::Before(_)) => HistoryPage {
            entries: rows,
            total,
            has_newer: other_side_exists,
            has_older: more,
        },
        None => HistoryPage {
            entries: rows,
            total,
            has_newer: false,
            has_older: more,
        },
    }
}

/// The cursor on the other side of a page, to probe whether anything lies beyond it.
pub(super) fn opposite_cursor(query: &HistoryQuery) -> Option<Cursor> {
    match query.cursor {
        Some(Cursor::Before(seq)) => Some(Cursor::After(seq - 1)),
        Some(Cursor::After(seq)) => Some(Cursor::Before(seq + 1)),
        None => None,
    }
}

pub(super) const UPDATE_CURRENT_RETURNING: &str = "UPDATE resource SET version = $3, deleted = $4, \
     last_updated = $5 WHERE resource_type = $1 AND id = $2 AND version = $6 RETURNING version";

/// Writes a version, moves the current pointer (checking the expected previous version) and
/// replaces the resource's index rows — on the caller's transaction connection. Returns the
/// version's sequence number.
pub(super) async fn write_version<DB>(conn: &mut DB::Connection, v: &NewVersion) -> StoreResult<i64>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
{
    let deleted = v.body.is_none();
    let seq: i64 = sqlx::query_scalar::<DB, i64>(INSERT_VERSION)
        .bind(v.resource_type.as_str())
        .bind(v.id.as_str())
        .bind(v.version)
        .bind(v.last_updated.millis())
        .bind(v.method.as_str())
        .bind(deleted)
        .bind(v.body.as_deref())
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    match v.previous {
        None => {
            sqlx::query::<DB>(INSERT_CURRENT)
                .bind(v.resource_type.as_str())
                .bind(v.id.as_str())
                .bind(v.version)
                .bind(deleted)
                .bind(v.last_updated.millis())
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
        }
        Some(previous) => {
            let moved = sqlx::query::<DB>(UPDATE_CURRENT_RETURNING)
                .bind(v.resource_type.as_str())
                .bind(v.id.as_str())
                .bind(v.version)
                .bind(deleted)
                .bind(v.last_updated.millis())
                .bind(previous)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)?;
            if moved.is_none() {
                return Err(StoreError::Conflict);
            }
        }
    }
    if v.previous.is_some() {
        delete_index_rows::<DB>(conn, &v.resource_type, &v.id, INDEX_TABLES).await?;
    }
    if deleted {
        return Ok(seq);
    }
    insert_index_rows::<DB>(conn, &v.resource_type, &v.id, &v.index, true).await?;
    Ok(seq)
}

/// Writes the first versions of new resources (each with a body and no previous version) in
/// multi-row INSERTs shared by all of them; returns their sequence numbers.
pub(super) async fn write_new_versions<DB>(
    conn: &mut DB::Connection,
    versions: &[NewVersion],
) -> StoreResult<Vec<i64>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
{
    if versions
        .iter()
        .any(|v| v.previous.is_some() || v.body.is_none())
    {
        return Err(StoreError::Internal(
            "write_new_versions takes only first versions with a body".into(),
        ));
    }
    let mut seqs = Vec::with_capacity(versions.len());
    for chunk in versions.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::<DB>::new(
            "INSERT INTO resource_version \
             (resource_type, id, version, last_updated, method, deleted, body) ",
        );
        qb.push_values(chunk, |mut b, v| {
            b.push_bind(v.resource_type.clone())
                .push_bind(v.id.clone())
                .push_bind(v.version)
                .push_bind(v.last_updated.millis())
                .push_bind(v.method.as_str().to_string())
                .push_bind(false)
                .push_bind(v.body.clone());
        });
        qb.push(" RETURNING seq");
        let rows = qb.build().fetch_all(&mut *conn).await.map_err(map_err)?;
        for row in rows {
            seqs.push(row.try_get::<i64, _>(0).map_err(map_err)?);
        }
        let mut qb = QueryBuilder::<DB>::new(
            "INSERT INTO resource (resource_type, id, version, deleted, last_updated) ",
        );
        qb.push_values(chunk, |mut b, v| {
            b.push_bind(v.resource_type.clone())
                .push_bind(v.id.clone())
                .push_bind(v.version)
                .push_bind(false)
                .push_bind(v.last_updated.millis());
        });
        qb.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    let owners: Vec<(&str, &str, &crate::search::index::IndexRows)> = versions
        .iter()
        .map(|v| (v.resource_type.as_str(), v.id.as_str(), &v.index))
        .collect();
    insert_index_rows_of::<DB>(conn, &owners, true).await?;
    // the change feed numbers versions in this order
    seqs.sort_unstable();
    Ok(seqs)
}

/// Every table holding index rows of a resource.
pub(super) const INDEX_TABLES: &[&str] = &[
    "resource_token",
    "resource_reference",
    "resource_link",
    "search_string",
    "search_date",
    "search_number",
    "search_quantity",
    "search_uri",
];

/// Removes a resource's rows from `tables`.
pub(super) async fn delete_index_rows<DB>(
    conn: &mut DB::Connection,
    resource_type: &str,
    id: &str,
    tables: &[&str],
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    for table in tables {
        sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE resource_type = $1 AND id = $2"
        )))
        .bind(resource_type)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

/// Inserts index rows (links too when `links`), in multi-row INSERTs.
pub(super) async fn insert_index_rows<DB>(
    conn: &mut DB::Connection,
    rt: &str,
    id: &str,
    index: &crate::search::index::IndexRows,
    links: bool,
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
{
    insert_index_rows_of::<DB>(conn, &[(rt, id, index)], links).await
}

/// Inserts the index rows of several resources (links too when `links`), in multi-row
/// INSERTs shared by all of them.
pub(super) async fn insert_index_rows_of<DB>(
    conn: &mut DB::Connection,
    owners: &[(&str, &str, &crate::search::index::IndexRows)],
    links: bool,
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
{
    macro_rules! insert {
        ($field:ident, $sql:literal, |$b:ident, $r:ident| $push:expr) => {
            let rows: Vec<_> = owners
                .iter()
                .flat_map(|(rt, id, index)| index.$field.iter().map(move |r| (*rt, *id, r)))
                .collect();
            for chunk in rows.chunks(INSERT_CHUNK) {
                let mut qb = QueryBuilder::<DB>::new($sql);
                qb.push_values(chunk, |mut $b, item| {
                    let (rt, id, $r) = *item;
                    $b.push_bind(rt.to_string()).push_bind(id.to_string());
                    $push;
                });
                qb.build().execute(&mut *conn).await.map_err(map_err)?;
            }
        };
    }
    insert!(
        tokens,
        "INSERT INTO resource_token (resource_type, id, param, system, code, grp) ",
        |b, t| b
            .push_bind(t.param.clone())
            .push_bind(t.system.as_deref().map(|s| index_key(s).into_owned()))
            .push_bind(index_key(&t.code).into_owned())
            .push_bind(t.grp)
    );
    insert!(
        references,
        "INSERT INTO resource_reference (resource_type, id, param, target_type, target_id, grp) ",
        |b, r| b
            .push_bind(r.param.clone())
            .push_bind(r.target_type.clone())
            .push_bind(r.target_id.clone())
            .push_bind(r.grp)
    );
    insert!(
        strings,
        "INSERT INTO search_string (resource_type, id, param, norm, exact, grp) ",
        |b, r| b
            .push_bind(r.param.clone())
            .push_bind(index_key(&r.norm).into_owned())
            .push_bind(r.exact.clone())
            .push_bind(r.grp)
    );
    insert!(
        dates,
        "INSERT INTO search_date (resource_type, id, param, low, high, grp) ",
        |b, r| b
            .push_bind(r.param.clone())
            .push_bind(r.low)
            .push_bind(r.high)
            .push_bind(r.grp)
    );
    insert!(
        numbers,
        "INSERT INTO search_number (resource_type, id, param, value, grp) ",
        |b, r| b
            .push_bind(r.param.clone())
            .push_bind(r.value)
            .push_bind(r.grp)
    );
    insert!(
        quantities,
        "INSERT INTO search_quantity (resource_type, id, param, value, system, code, unit, \
         cvalue, ccode, grp) ",
        |b, r| b
            .push_bind(r.param.clone())
            .push_bind(r.value)
            .push_bind(r.system.clone())
            .push_bind(r.code.clone())
            .push_bind(r.unit.clone())
            .push_bind(r.cvalue)
            .push_bind(r.ccode.clone())
            .push_bind(r.grp)
    );
    insert!(
        uris,
        "INSERT INTO search_uri (resource_type, id, param, value, grp) ",
        |b, r| b
            .push_bind(r.param.clone())
            .push_bind(index_key(&r.value).into_owned())
            .push_bind(r.grp)
    );
    if links {
        let rows: Vec<(&str, &str, &crate::search::index::LinkRow)> = owners
            .iter()
            .flat_map(|(rt, id, index)| {
                index
                    .links
                    .iter()
                    .filter(|l| l.version.is_none())
                    .map(move |l| (*rt, *id, l))
            })
            .collect();
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new(
                "INSERT INTO resource_link (resource_type, id, target_type, target_id) ",
            );
            qb.push_values(chunk, |mut b, item| {
                let (rt, id, l) = *item;
                b.push_bind(rt.to_string())
                    .push_bind(id.to_string())
                    .push_bind(l.target_type.clone())
                    .push_bind(l.target_id.clone());
            });
            qb.build().execute(&mut *conn).await.map_err(map_err)?;
        }
    }
    Ok(())
}

/// Rows per multi-row INSERT (well under SQLite's bound-parameter limit).
const INSERT_CHUNK: usize = 200;

/// Reads one version with [`SELECT_CURRENT`] (type, id) or [`SELECT_VERSION`] (type, id, version).
pub(super) async fn fetch_version<DB>(
    conn: &mut DB::Connection,
    sql: &'static str,
    resource_type: &str,
    id: &str,
    version: Option<i64>,
) -> StoreResult<Option<StoredVersion>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let mut q = sqlx::query::<DB>(sql).bind(resource_type).bind(id);
    if let Some(v) = version {
        q = q.bind(v);
    }
    let row = q.fetch_optional(&mut *conn).await.map_err(map_err)?;
    row.map(|r| version_from_row(&r).map(|(_, v)| v))
        .transpose()
}

/// A page of history with its total and whether pages exist on either side.
pub(super) async fn read_history<DB>(
    conn: &mut DB::Connection,
    scope: &HistoryScope,
    query: &HistoryQuery,
) -> StoreResult<HistoryPage>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    let rows = history_page_query::<DB>(scope, query)
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    let rows = rows
        .iter()
        .map(version_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let total: i64 = history_count_query::<DB>(scope, query)
        .build_query_scalar()
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    let other = match opposite_cursor(query) {
        Some(c) => {
            let n: i64 = history_exists_query::<DB>(scope, query, c)
                .build_query_scalar()
                .fetch_one(&mut *conn)
                .await
                .map_err(map_err)?;
            n > 0
        }
        None => false,
    };
    Ok(assemble_page(rows, query, total.max(0) as u64, other))
}

/// Live resources that reference `target_type/target_id` anywhere (resource_link).
pub(super) async fn referrers<DB>(
    conn: &mut DB::Connection,
    target_type: &str,
    target_id: &str,
    limit: u32,
) -> StoreResult<Vec<(String, String)>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    (String, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as::<DB, (String, String)>(
        "SELECT DISTINCT resource_type, id FROM resource_link \
         WHERE target_type = $1 AND target_id = $2 ORDER BY resource_type, id LIMIT $3",
    )
    .bind(target_type)
    .bind(target_id)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)
}

/// Reference-parameter rows pointing at `target_type` (one id, or any when `target_id` is None):
/// (resource_type, id, param, target_id).
pub(super) async fn referencing<DB>(
    conn: &mut DB::Connection,
    target_type: &str,
    target_id: Option<&str>,
) -> StoreResult<Vec<(String, String, String, String)>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    (String, String, String, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let mut qb = QueryBuilder::<DB>::new(
        "SELECT resource_type, id, param, target_id FROM resource_reference WHERE target_type = ",
    );
    qb.push_bind(target_type.to_string());
    if let Some(id) = target_id {
        qb.push(" AND target_id = ");
        qb.push_bind(id.to_string());
    }
    qb.build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)
}

/// The local resources that `sources` reference (resource_link), distinct.
pub(super) async fn links_from<DB>(
    conn: &mut DB::Connection,
    sources: &[(String, String)],
) -> StoreResult<Vec<(String, String)>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    (String, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let mut out = Vec::new();
    for chunk in sources.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::<DB>::new("");
        push_keys_cte(&mut qb, chunk);
        qb.push(
            " SELECT DISTINCT l.target_type, l.target_id FROM k JOIN resource_link l \
             ON l.resource_type = k.t AND l.id = k.i",
        );
        let rows: Vec<(String, String)> = qb
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
        out.extend(rows);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `WITH k(t, i) AS (VALUES (…), …)`: a key list the planner joins through the indexes
/// (a row-value `IN` list makes SQLite scan the table).
pub(super) fn push_keys_cte<DB>(qb: &mut QueryBuilder<DB>, keys: &[(String, String)])
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    qb.push("WITH k(t, i) AS (VALUES ");
    for (n, (t, id)) in keys.iter().enumerate() {
        if n > 0 {
            qb.push(", ");
        }
        qb.push("(");
        qb.push_bind(t.clone());
        qb.push(", ");
        qb.push_bind(id.clone());
        qb.push(")");
    }
    qb.push(")");
}

/// The current, live versions of `keys` (missing and deleted ones are left out).
pub(super) async fn read_many<DB>(
    conn: &mut DB::Connection,
    keys: &[(String, String)],
) -> StoreResult<Vec<StoredVersion>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let mut out = Vec::new();
    for chunk in keys.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::<DB>::new("");
        push_keys_cte(&mut qb, chunk);
        qb.push(format!(
            " SELECT {VERSION_COLUMNS} FROM k JOIN resource r ON r.resource_type = k.t AND r.id = k.i \
             JOIN resource_version v \
             ON v.resource_type = r.resource_type AND v.id = r.id AND v.version = r.version \
             WHERE r.deleted = "
        ));
        qb.push_bind(false);
        let rows = qb.build().fetch_all(&mut *conn).await.map_err(map_err)?;
        for row in &rows {
            out.push(version_from_row(row)?.1);
        }
    }
    Ok(out)
}

/// A page of an unconfined export: the current live versions of `resource_type` last
/// updated in `[since, until]`, with ids after `after`, in id order (the primary key's).
pub(super) async fn current_page<DB>(
    conn: &mut DB::Connection,
    resource_type: &str,
    since: i64,
    until: i64,
    after: &str,
    limit: u32,
) -> StoreResult<Vec<StoredVersion>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let rows = sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
        // the page's keys first (the primary key, in order), then their bodies: the join
        // never sees more than a page, whatever the planner knows of the tables
        "SELECT {VERSION_COLUMNS} FROM (SELECT resource_type, id, version FROM resource \
         WHERE resource_type = $1 AND deleted = $2 AND last_updated >= $3 \
         AND last_updated <= $4 AND id > $5 ORDER BY id LIMIT $6) r \
         JOIN resource_version v \
         ON v.resource_type = r.resource_type AND v.id = r.id AND v.version = r.version \
         ORDER BY r.id"
    )))
    .bind(resource_type.to_string())
    .bind(false)
    .bind(since)
    .bind(until)
    .bind(after.to_string())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(version_from_row(row)?.1);
    }
    Ok(out)
}

/// Ids of the live resources of a type.
pub(super) async fn live_ids<DB>(
    conn: &mut DB::Connection,
    resource_type: &str,
) -> StoreResult<Vec<String>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let rows: Vec<(String,)> = sqlx::query_as::<DB, (String,)>(
        "SELECT id FROM resource WHERE resource_type = $1 AND deleted = $2 ORDER BY id",
    )
    .bind(resource_type)
    .bind(false)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// `SAVEPOINT name` / `ROLLBACK TO SAVEPOINT name` / `RELEASE SAVEPOINT name`.
pub(super) async fn savepoint<DB>(
    conn: &mut DB::Connection,
    verb: &'static str,
    name: &str,
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(StoreError::Internal("bad savepoint name".into()));
    }
    sqlx::query::<DB>(sqlx::AssertSqlSafe(format!("{verb} {name}")))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(map_err)
}

/// Which of `keys` are live resources.
pub(super) async fn live_among<DB>(
    conn: &mut DB::Connection,
    keys: &[(String, String)],
) -> StoreResult<Vec<(String, String)>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    (String, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let mut out = Vec::new();
    for chunk in keys.chunks(INSERT_CHUNK) {
        let mut qb = QueryBuilder::<DB>::new("");
        push_keys_cte(&mut qb, chunk);
        qb.push(
            " SELECT r.resource_type, r.id FROM k JOIN resource r \
             ON r.resource_type = k.t AND r.id = k.i WHERE r.deleted = ",
        );
        qb.push_bind(false);
        let rows: Vec<(String, String)> = qb
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
        out.extend(rows);
    }
    Ok(out)
}

/// Upserts a custom parameter's index state.
pub(super) async fn set_param_state<DB>(
    conn: &mut DB::Connection,
    base: &str,
    code: &str,
    status: &str,
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO search_param_state (base, code, status, updated) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (base, code) DO UPDATE SET status = excluded.status, updated = excluded.updated",
    )
    .bind(base)
    .bind(code)
    .bind(status)
    .bind(Instant::now().millis())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    bump_registry_generation::<DB>(conn).await
}

/// The search-parameter registry changed: every node reloads it before its next search or write.
pub(super) async fn bump_registry_generation<DB>(conn: &mut DB::Connection) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query::<DB>("UPDATE registry_generation SET generation = generation + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// The registry's generation ([`bump_registry_generation`]).
pub(super) async fn registry_generation<'c, DB, E>(executor: E) -> StoreResult<i64>
where
    DB: Database,
    E: sqlx::Executor<'c, Database = DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let row: Option<(i64,)> =
        sqlx::query_as::<DB, (i64,)>("SELECT generation FROM registry_generation WHERE id = 1")
            .fetch_optional(executor)
            .await
            .map_err(map_err)?;
    Ok(row.map_or(0, |r| r.0))
}

/// Deletes a resource's rows of `params` in every index table, then inserts `rows`.
pub(super) async fn replace_index_rows<DB>(
    conn: &mut DB::Connection,
    resource_type: &str,
    id: &str,
    params: &[String],
    rows: &crate::search::index::IndexRows,
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
{
    if params.is_empty() {
        return Ok(());
    }
    // resource_link rows have no parameter: they stay
    for table in INDEX_TABLES.iter().filter(|t| **t != "resource_link") {
        delete_params::<DB>(conn, table, resource_type, id, params).await?;
    }
    insert_index_rows::<DB>(conn, resource_type, id, rows, false).await
}

async fn delete_params<DB>(
    conn: &mut DB::Connection,
    table: &str,
    resource_type: &str,
    id: &str,
    params: &[String],
) -> StoreResult<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE resource_type = "));
    qb.push_bind(resource_type.to_string());
    qb.push(" AND id = ");
    qb.push_bind(id.to_string());
    qb.push(" AND param IN (");
    let mut sep = qb.separated(", ");
    for p in params {
        sep.push_bind(p.clone());
    }
    qb.push(")");
    qb.build().execute(&mut *conn).await.map_err(map_err)?;
    Ok(())
}
