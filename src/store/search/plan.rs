//! Plans a page: how each top-level filter is written ([`Form`]), chosen from a capped count
//! of its index rows before the page query runs — the smallest selective filter drives, a
//! broad orderable one orders the page, the rest are probed row by row.

use super::filters::date_pred;
use super::ordered::{Drive, ordered_drive};
use super::tables::table_name;
use super::{Compiler, Scope, SearchSpec};
use crate::search::query::{Filter, Owners, Pred};
use sqlx::{Database, Encode, QueryBuilder, Type};

/// How a top-level filter is written into a page query (see [`choose_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Form {
    /// `id IN (SELECT … FROM <index table> WHERE <value>)`: the value index finds every
    /// match first; right for a selective filter (few matches), which then drives the page.
    In,
    /// `EXISTS (SELECT 1 FROM <index table> WHERE resource_type = r.resource_type AND
    /// id = r.id AND …)`: a per-row probe through the owner index; right for a broad filter,
    /// where the page walks resources in id order and stops after `limit` hits.
    Probe,
    /// The filter drives the page in its own index order instead of id order (a page without
    /// `_sort` only; see [`ordered_drive`]): the walk stops after `limit` hits, so a broad
    /// string prefix, or a chain over one, costs the page, not the matches.
    Ordered,
}

/// A filter with fewer index rows than this drives a page (read in full through its value
/// index); a filter with at least this many is probed row by row.
pub const DRIVER_CAP: i64 = 2000;

/// What is known about a filter's size before the page query.
pub(in crate::store) enum Estimate<DB: Database> {
    /// Exactly this many candidates (an `_id` list).
    Known(i64),
    /// `SELECT COUNT(*)` of its index rows, capped at [`DRIVER_CAP`].
    Query(QueryBuilder<DB>),
    /// Not cheaply countable (negations, `:missing`, alternatives): never a driver.
    Unknown,
}

/// The forms of a single-type page's filters from their capped counts (`None`: unknown):
/// the smallest count under [`DRIVER_CAP`] drives (IN) and the rest are probed; when every
/// filter is broad or unknown, all are probed and the page walks the primary key in order,
/// so its cost follows the page (`limit` ÷ the fraction that matches), not the matches.
pub fn choose_forms(counts: &[Option<i64>]) -> Vec<Form> {
    let driver = counts
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.filter(|&c| c < DRIVER_CAP).map(|c| (c, i)))
        .min()
        .map(|(_, i)| i);
    (0..counts.len())
        .map(|i| {
            if Some(i) == driver {
                Form::In
            } else {
                Form::Probe
            }
        })
        .collect()
}

/// A filter with at least this many index rows, when it can drive in its own index order
/// ([`ordered_drive`]) and nothing smaller drives, orders the page ([`Form::Ordered`]);
/// below it, sorting the matches by id costs less than the ordered walk's probes.
pub const ORDERED_MIN: i64 = 100;

/// The forms of a page's filters from their capped counts (`None`: unknown) and whether each
/// can drive in index order (`orderable`; only without `_sort`): a filter under
/// [`ORDERED_MIN`] drives by id; else the smallest orderable filter orders the page
/// ([`Form::Ordered`]); else [`choose_forms`].
pub fn choose_plan(counts: &[Option<i64>], orderable: &[bool]) -> Vec<Form> {
    let smallest = counts.iter().flatten().min().copied();
    if smallest.is_none_or(|c| c >= ORDERED_MIN)
        && let Some((_, i)) = counts
            .iter()
            .enumerate()
            .filter(|&(i, _)| orderable.get(i).copied().unwrap_or(false))
            .map(|(i, c)| (c.unwrap_or(i64::MAX), i))
            .min()
    {
        return (0..counts.len())
            .map(|j| if j == i { Form::Ordered } else { Form::Probe })
            .collect();
    }
    choose_forms(counts)
}

impl Compiler {
    /// How to size `filter` (of `resource_type`) before a page query: a capped count of the
    /// index rows its IN form would read.
    pub(in crate::store) fn estimate<DB>(
        &mut self,
        resource_type: &str,
        filter: &Filter,
    ) -> Estimate<DB>
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM (SELECT 1 AS one FROM ");
        match filter {
            Filter::Id { ids, negate: false } => {
                return Estimate::Known(i64::try_from(ids.len()).unwrap_or(i64::MAX));
            }
            Filter::LastUpdated(preds) if preds.is_empty() => return Estimate::Unknown,
            Filter::LastUpdated(preds) => {
                qb.push("resource a WHERE a.resource_type = ");
                qb.push_bind(resource_type.to_string());
                qb.push(" AND a.deleted = ");
                qb.push_bind(false);
                // never `(1 = 0 OR …)`: SQLite would not use an index for what follows
                qb.push(" AND (");
                for (i, p) in preds.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    match p {
                        Pred::Date(prefix, low, high) => date_pred(
                            &mut qb,
                            *prefix,
                            *low,
                            *high,
                            "a.last_updated",
                            "a.last_updated",
                        ),
                        _ => {
                            qb.push("1 = 0");
                        }
                    }
                }
                qb.push(")");
            }
            Filter::Param {
                param,
                preds,
                negate: false,
            } => {
                let Some(table) = preds.first().map(Pred::table) else {
                    return Estimate::Known(0);
                };
                if preds.iter().any(|p| p.table() != table) {
                    return Estimate::Unknown;
                }
                qb.push(format!("{} a WHERE a.resource_type = ", table_name(table)));
                qb.push_bind(resource_type.to_string());
                qb.push(" AND a.param = ");
                qb.push_bind(param.clone());
                qb.push(" AND (");
                for (i, p) in preds.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push("(");
                    self.pred(&mut qb, p, "a");
                    qb.push(")");
                }
                qb.push(")");
            }
            Filter::Composite { param, values } => {
                qb.push("(");
                let mut any = false;
                for preds in values {
                    let Some(p) = preds.first() else { continue };
                    if any {
                        qb.push(" UNION ALL ");
                    }
                    any = true;
                    let a = self.alias();
                    qb.push(format!(
                        "SELECT 1 AS one FROM {} {a} WHERE {a}.resource_type = ",
                        table_name(p.table())
                    ));
                    qb.push_bind(resource_type.to_string());
                    qb.push(format!(" AND {a}.param = "));
                    qb.push_bind(format!("{param}$0"));
                    qb.push(" AND ");
                    self.pred(&mut qb, p, &a);
                }
                if !any {
                    return Estimate::Known(0);
                }
                qb.push(") a WHERE 1 = 1");
            }
            Filter::Chain { targets, .. } if targets.is_empty() => return Estimate::Known(0),
            Filter::Chain { param, targets } => {
                qb.push("resource_reference a WHERE a.resource_type = ");
                qb.push_bind(resource_type.to_string());
                qb.push(" AND a.param = ");
                qb.push_bind(param.clone());
                qb.push(" AND (");
                for (i, (t, inner)) in targets.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push("(a.target_type = ");
                    qb.push_bind(t.clone());
                    qb.push(" AND ");
                    self.filter(
                        &mut qb,
                        inner,
                        Scope::One(t),
                        "a.target_type",
                        "a.target_id",
                    );
                    qb.push(")");
                }
                qb.push(")");
            }
            Filter::Has {
                source_type,
                param,
                filter,
            } => {
                qb.push("resource_reference a WHERE a.target_type = ");
                qb.push_bind(resource_type.to_string());
                qb.push(" AND a.resource_type = ");
                qb.push_bind(source_type.clone());
                qb.push(" AND a.param = ");
                qb.push_bind(param.clone());
                qb.push(" AND ");
                self.filter(
                    &mut qb,
                    filter,
                    Scope::One(source_type),
                    "a.resource_type",
                    "a.id",
                );
            }
            Filter::List(id) => {
                qb.push(
                    "resource_reference a WHERE a.resource_type = 'List' AND a.param = 'item' \
                     AND a.id = ",
                );
                qb.push_bind(id.clone());
                qb.push(" AND a.target_type = ");
                qb.push_bind(resource_type.to_string());
            }
            Filter::Compartment {
                owner_type,
                owners: Owners::Id(owner_id),
                params,
            } => {
                let Some((_, codes)) = params.iter().find(|(t, _)| t == resource_type) else {
                    return Estimate::Known(0);
                };
                if codes.is_empty() {
                    return Estimate::Known(1);
                }
                qb.push("resource_reference a WHERE a.resource_type = ");
                qb.push_bind(resource_type.to_string());
                qb.push(" AND a.target_type = ");
                qb.push_bind(owner_type.clone());
                qb.push(" AND a.target_id = ");
                qb.push_bind(owner_id.clone());
                qb.push(" AND a.param IN (");
                let mut sep = qb.separated(", ");
                for c in codes {
                    sep.push_bind(c.clone());
                }
                qb.push(")");
            }
            _ => return Estimate::Unknown,
        }
        qb.push(" LIMIT ");
        qb.push_bind(DRIVER_CAP);
        qb.push(") c");
        Estimate::Query(qb)
    }
}

/// The forms of a page's filters ([`choose_plan`]), sized by one capped count per filter.
/// Only a single-type page with filters is planned this way; other pages keep every filter
/// in the IN form.
pub(in crate::store) async fn plan_forms<DB>(
    conn: &mut DB::Connection,
    pg: bool,
    spec: &SearchSpec<'_>,
) -> crate::store::StoreResult<Vec<Form>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    i64: for<'r> sqlx::Decode<'r, DB> + Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let [resource_type] = spec.types else {
        return Ok(Vec::new());
    };
    if !spec.forms.is_empty() || spec.filters.is_empty() {
        return Ok(spec.forms.to_vec());
    }
    let mut counts = Vec::with_capacity(spec.filters.len());
    let mut orderable = Vec::with_capacity(spec.filters.len());
    for f in spec.filters {
        let drive = ordered_drive(f).filter(|_| spec.sort.is_empty());
        orderable.push(drive.is_some());
        // an orderable chain over a broad inner filter is sized by that filter: counting its
        // own rows would list every inner match first
        if let Some(Drive::Chain { target, .. }) = drive
            && let Filter::Chain { targets, .. } = f
            && let Some((_, inner)) = targets.first()
            && let Some(n) = size::<DB>(conn, pg, target, inner).await?
            && n >= ORDERED_MIN
        {
            counts.push(Some(n));
            continue;
        }
        counts.push(size::<DB>(conn, pg, resource_type, f).await?);
    }
    Ok(choose_plan(&counts, &orderable))
}

/// A filter's capped count ([`Compiler::estimate`]). A chain or `_has` whose inner filter is
/// itself broad is broad without counting: its count query would first list every inner match.
async fn size<DB>(
    conn: &mut DB::Connection,
    pg: bool,
    resource_type: &str,
    filter: &Filter,
) -> crate::store::StoreResult<Option<i64>>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    i64: for<'r> sqlx::Decode<'r, DB> + Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let inner: Vec<(&str, &Filter)> = match filter {
        Filter::Has {
            source_type,
            filter,
            ..
        } => vec![(source_type.as_str(), &**filter)],
        Filter::Chain { targets, .. } => targets.iter().map(|(t, f)| (t.as_str(), &**f)).collect(),
        _ => Vec::new(),
    };
    for (t, f) in inner {
        if let Some(n) = Box::pin(size::<DB>(conn, pg, t, f)).await?
            && n >= DRIVER_CAP
        {
            return Ok(Some(DRIVER_CAP));
        }
    }
    Ok(
        match Compiler::new(pg, true).estimate::<DB>(resource_type, filter) {
            Estimate::Known(n) => Some(n),
            Estimate::Unknown => None,
            Estimate::Query(mut qb) => {
                let (n,): (i64,) = qb
                    .build_query_as::<(i64,)>()
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(crate::store::map_err)?;
                Some(n)
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Form::{In, Ordered, Probe};

    #[test]
    fn the_smallest_filter_under_the_cap_drives() {
        assert_eq!(
            choose_forms(&[Some(500), Some(20), None]),
            [Probe, In, Probe]
        );
        assert_eq!(choose_forms(&[Some(DRIVER_CAP), None]), [Probe, Probe]);
        assert_eq!(choose_forms(&[Some(DRIVER_CAP - 1)]), [In]);
    }

    #[test]
    fn a_broad_orderable_filter_orders_the_page() {
        // a small filter drives by id, orderable or not
        assert_eq!(
            choose_plan(&[Some(ORDERED_MIN - 1), Some(5000)], &[false, true]),
            [In, Probe]
        );
        assert_eq!(choose_plan(&[Some(3)], &[true]), [In]);
        // nothing small: the orderable one orders, whatever its size
        assert_eq!(
            choose_plan(&[Some(ORDERED_MIN), Some(DRIVER_CAP)], &[true, false]),
            [Ordered, Probe]
        );
        assert_eq!(
            choose_plan(&[None, Some(50_000)], &[false, true]),
            [Probe, Ordered]
        );
        // the smallest of several orderable filters
        assert_eq!(
            choose_plan(&[Some(900), Some(300)], &[true, true]),
            [Probe, Ordered]
        );
        // nothing orderable: as before
        assert_eq!(
            choose_plan(&[Some(500), None], &[false, false]),
            [In, Probe]
        );
    }
}
