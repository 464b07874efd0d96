//! `_include` and `_revinclude`: the reference rows from a page's hits to their targets, and
//! from referrers to the hits, each a keys CTE joined to `resource_reference`.

use sqlx::{Database, Encode, QueryBuilder, Type};

/// `(target_type, target_id)` of reference rows from `sources` (`_include`).
pub(in crate::store) fn include_query<DB>(
    sources: &[(String, String)],
    param: Option<&str>,
    target_type: Option<&str>,
    limit: usize,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("");
    crate::store::sql::push_keys_cte(&mut qb, sources);
    qb.push(
        " SELECT DISTINCT a.target_type, a.target_id FROM k JOIN resource_reference a \
         ON a.resource_type = k.t AND a.id = k.i WHERE 1 = 1",
    );
    if let Some(p) = param {
        qb.push(" AND a.param = ");
        qb.push_bind(p.to_string());
    }
    if let Some(t) = target_type {
        qb.push(" AND a.target_type = ");
        qb.push_bind(t.to_string());
    }
    qb.push(" LIMIT ");
    qb.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    qb
}

/// `(resource_type, id)` of resources whose reference rows point at `targets` (`_revinclude`).
pub(in crate::store) fn revinclude_query<DB>(
    targets: &[(String, String)],
    source_type: Option<&str>,
    param: Option<&str>,
    limit: usize,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("");
    crate::store::sql::push_keys_cte(&mut qb, targets);
    qb.push(
        " SELECT DISTINCT a.resource_type, a.id FROM k JOIN resource_reference a \
         ON a.target_type = k.t AND a.target_id = k.i WHERE 1 = 1",
    );
    if let Some(t) = source_type {
        qb.push(" AND a.resource_type = ");
        qb.push_bind(t.to_string());
    }
    if let Some(p) = param {
        qb.push(" AND a.param = ");
        qb.push_bind(p.to_string());
    }
    qb.push(" LIMIT ");
    qb.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    qb
}
