//! Sort walks: a page with one `_sort` key on a date or string parameter and no selective
//! filter walks that parameter's value index in order, the filters probed, and stops after
//! `limit` hits; the resources without the parameter follow in id order.

use super::tables::table_name;
use super::{Compiler, Form, Hit, KeyValue, Scope, SearchSpec, hits_from_rows, push_key};
use crate::search::query::{Sort, SortKey, Table};
use sqlx::{Database, Encode, QueryBuilder, Type};

/// A sort walk: the page's one sort key, on a date or string parameter.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) struct Walk<'a> {
    pub param: &'a str,
    pub table: Table,
    pub desc: bool,
}
/// The two phases of a sort walk: resources with the sort parameter, then those without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum Phase {
    Keyed,
    Missing,
}

/// Whether a page is read as a sort walk: one type, one `_sort` key on a date or string
/// parameter, and every filter probed (the store found none selective). The page then walks
/// the sort parameter's value index in order and stops after `limit` hits — the same hits in
/// the same order as the top-N sort over every match, which grows with the matches.
pub(in crate::store) fn sort_walk<'a>(spec: &SearchSpec<'a>) -> Option<Walk<'a>> {
    if spec.types.len() != 1 || spec.forms.iter().any(|f| *f != Form::Probe) {
        return None;
    }
    let [
        Sort {
            key: SortKey::Param { param, table },
            desc,
        },
    ] = spec.sort
    else {
        return None;
    };
    matches!(table, Table::Date | Table::String).then_some(Walk {
        param,
        table: *table,
        desc: *desc,
    })
}

/// A page read as a sort walk ([`sort_walk`]): the keyed phase, then the resources without
/// the parameter (backwards: the other way round), each from the anchor when it lies there.
pub(in crate::store) async fn walk_sorted<DB>(
    conn: &mut DB::Connection,
    pg: bool,
    c_ids: bool,
    spec: &SearchSpec<'_>,
    walk: Walk<'_>,
) -> crate::store::StoreResult<Vec<Hit>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'r> String: sqlx::Decode<'r, DB>,
    for<'r> Option<String>: sqlx::Decode<'r, DB>,
    for<'r> Option<i64>: sqlx::Decode<'r, DB>,
    for<'r> Option<f64>: sqlx::Decode<'r, DB>,
{
    // where the anchor lies: among the keyed resources, or among those without the key
    let anchor_missing = spec
        .anchor
        .map(|a| matches!(a.keys.first(), None | Some(KeyValue::Null)));
    let phases: &[(Phase, bool)] = match (spec.backwards, anchor_missing) {
        (false, None) => &[(Phase::Keyed, false), (Phase::Missing, false)],
        (false, Some(false)) => &[(Phase::Keyed, true), (Phase::Missing, false)],
        (false, Some(true)) => &[(Phase::Missing, true)],
        (true, Some(true)) => &[(Phase::Missing, true), (Phase::Keyed, false)],
        (true, _) => &[(Phase::Keyed, true)],
    };
    let mut hits = Vec::new();
    for &(phase, after) in phases {
        let left = i64::from(spec.limit) - hits.len() as i64;
        if left <= 0 {
            break;
        }
        let rows = Compiler::new(pg, c_ids)
            .walk_phase::<DB>("", spec, walk, phase, after, left)
            .build()
            .fetch_all(&mut *conn)
            .await
            .map_err(crate::store::map_err)?;
        hits.extend(hits_from_rows(&rows, spec)?);
    }
    Ok(hits)
}

impl Compiler {
    /// One phase of a sort walk ([`sort_walk`]). `Keyed`: the sort parameter's rows walked in
    /// its value index's order, each resource at its sort key's row only (the row that is its
    /// MIN, or MAX when descending, as [`Compiler::sort_expr`] computes it), the filters
    /// probed. `Missing`: the resources without the parameter, in id order (they sort last).
    /// `after`: the anchor lies in this phase (else the phase is read from its start).
    pub(in crate::store) fn walk_phase<DB>(
        &mut self,
        prefix: &'static str,
        spec: &SearchSpec<'_>,
        walk: Walk<'_>,
        phase: Phase,
        after: bool,
        limit: i64,
    ) -> QueryBuilder<DB>
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        let idc = if self.c_ids { "" } else { self.collate() };
        let back = spec.backwards;
        let sub_end = if self.pg { " OFFSET 0)" } else { ")" };
        let mut qb = QueryBuilder::new(prefix);
        let table = table_name(walk.table);
        match phase {
            Phase::Keyed => {
                let col = match walk.table {
                    Table::Date if walk.desc => "high",
                    Table::Date => "low",
                    _ => "norm",
                };
                // the expression no index serves (the dedupe probe must use the owner index)
                let plain = |a: &str| match walk.table {
                    Table::Date => format!("({a}.{col} + 0)"),
                    _ => format!("({a}.{col} || '')"),
                };
                let rk = if self.pg { "ctid" } else { "rowid" };
                let resource_type = spec.types.first().cloned().unwrap_or_default();
                qb.push(format!(
                    "SELECT d.resource_type, d.id, d.{col} FROM {table} d WHERE \
                     d.resource_type = "
                ));
                qb.push_bind(resource_type.clone());
                qb.push(" AND d.param = ");
                qb.push_bind(walk.param.to_string());
                let owner = self.owner_indexed(table, "e");
                qb.push(format!(
                    " AND NOT EXISTS (SELECT 1 FROM {owner} WHERE e.resource_type = \
                     d.resource_type AND e.id = d.id AND e.param = d.param AND ({} {} d.{col} \
                     OR ({} = d.{col} AND e.{rk} < d.{rk})){sub_end}",
                    plain("e"),
                    if walk.desc { ">" } else { "<" },
                    plain("e"),
                ));
                for f in spec.filters {
                    qb.push(" AND ");
                    self.probe = true;
                    self.filter(
                        &mut qb,
                        f,
                        Scope::One(&resource_type),
                        "d.resource_type",
                        "d.id",
                    );
                    self.probe = false;
                }
                // in the direction of travel: the key descends when the sort does, reversed
                // when travelling backwards; ids ascend forwards
                let kdesc = walk.desc != back;
                if let Some(a) = spec.anchor.filter(|_| after) {
                    let key = a.keys.first().cloned().unwrap_or(KeyValue::Null);
                    qb.push(format!(" AND d.{col} {} ", if kdesc { "<=" } else { ">=" }));
                    push_key(&mut qb, &key);
                    qb.push(format!(" AND (d.{col} {} ", if kdesc { "<" } else { ">" }));
                    push_key(&mut qb, &key);
                    qb.push(format!(" OR (d.{col} = "));
                    push_key(&mut qb, &key);
                    qb.push(format!(" AND d.id{idc} {} ", if back { "<" } else { ">" }));
                    qb.push_bind(a.id.clone());
                    qb.push("))");
                }
                qb.push(format!(
                    " ORDER BY d.{col}{}, d.id{idc}{} LIMIT ",
                    if kdesc { " DESC" } else { "" },
                    if back { " DESC" } else { "" }
                ));
            }
            Phase::Missing => {
                let null = match walk.table {
                    Table::Date => "CAST(NULL AS BIGINT)",
                    _ => "CAST(NULL AS TEXT)",
                };
                qb.push(format!("SELECT r.resource_type, r.id, {null}"));
                let probes = vec![Form::Probe; spec.filters.len()];
                self.push_base(&mut qb, spec.types, spec.filters, &probes);
                let owner = self.owner_indexed(table, "m");
                qb.push(format!(
                    " AND NOT EXISTS (SELECT 1 FROM {owner} WHERE m.resource_type = \
                     r.resource_type AND m.id = r.id AND m.param = "
                ));
                qb.push_bind(walk.param.to_string());
                qb.push(sub_end);
                if let Some(a) = spec.anchor.filter(|_| after) {
                    qb.push(format!(" AND r.id{idc} {} ", if back { "<" } else { ">" }));
                    qb.push_bind(a.id.clone());
                }
                qb.push(format!(
                    " ORDER BY r.id{idc}{} LIMIT ",
                    if back { " DESC" } else { "" }
                ));
            }
        }
        qb.push_bind(limit);
        qb
    }
}
