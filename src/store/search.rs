//! Compiles a parsed search ([`Filter`]s, sort keys, a keyset anchor) to one SQL statement
//! both dialects accept. Every filter becomes `id IN (SELECT … FROM <index table> …)`, so the
//! index on (resource_type, param, value) drives it; chains and `_has` nest the same shape
//! against `resource_reference`. Paging is keyset-based on the sort keys plus type and id,
//! so pages stay stable while other clients write.

use crate::search::index::{index_key, index_prefix};
use crate::search::query::{Filter, Owners, Pred, Prefix, Sort, SortKey, StrMatch, Table};
use sqlx::{Database, Encode, QueryBuilder, Type};

/// A sort-key value of a hit, as the cursor remembers it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum KeyValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A position in a result list: the sort-key values, type and id of a hit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub keys: Vec<KeyValue>,
    pub resource_type: String,
    pub id: String,
    /// The plan of an ordered page ([`Form::Ordered`]): later pages keep its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<Form>,
}

/// One search hit, with its sort-key values (for the next cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub resource_type: String,
    pub id: String,
    pub keys: Vec<KeyValue>,
    /// Non-empty when the page was ordered by a driver's index ([`Form::Ordered`]): the
    /// forms to page on with (`keys` are then the driver's order keys).
    pub plan: Vec<Form>,
}

/// What a page query needs.
#[derive(Debug, Clone)]
pub struct SearchSpec<'a> {
    /// The types searched; empty = every type.
    pub types: &'a [String],
    pub filters: &'a [Filter],
    pub sort: &'a [Sort],
    /// Rows strictly after this position (in the direction of travel).
    pub anchor: Option<&'a Anchor>,
    /// Travel backwards (the previous page): the order is reversed.
    pub backwards: bool,
    pub limit: u32,
    /// How each filter is written (empty: the store plans, [`choose_plan`]). IN and probe
    /// forms change the plan, never the result; [`Form::Ordered`] also changes the order of
    /// a page without `_sort` (the same matches, in the driver's index order).
    pub forms: &'a [Form],
}

/// The kind of column a sort key yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Int,
    Real,
    Text,
}

pub fn key_kind(key: &SortKey) -> KeyKind {
    match key {
        SortKey::Id => KeyKind::Text,
        SortKey::LastUpdated => KeyKind::Int,
        SortKey::Param { table, .. } => match table {
            Table::Date => KeyKind::Int,
            Table::Number | Table::Quantity => KeyKind::Real,
            _ => KeyKind::Text,
        },
    }
}

/// Which resources the rows around a filter belong to.
#[derive(Clone, Copy)]
enum Scope<'a> {
    One(&'a str),
    Many,
}

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
pub(super) enum Estimate<DB: Database> {
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

/// The shape of a filter that can drive a page in its own index order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Drive<'a> {
    /// `param=v` on a string parameter (a prefix): rows in (norm, id) order.
    Str { param: &'a str, prefix: &'a str },
    /// `param:target.inner=v` (one target type, a string prefix): the targets in (norm, id)
    /// order, then their referrers by id.
    Chain {
        param: &'a str,
        target: &'a str,
        inner: &'a str,
        prefix: &'a str,
    },
}

/// Whether `f` can drive a page in its own index order, and how.
pub(super) fn ordered_drive(f: &Filter) -> Option<Drive<'_>> {
    fn prefix(f: &Filter) -> Option<(&str, &str)> {
        match f {
            Filter::Param {
                param,
                preds,
                negate: false,
            } => match preds.as_slice() {
                [Pred::Str(StrMatch::Starts, v)] => Some((param.as_str(), v.as_str())),
                _ => None,
            },
            _ => None,
        }
    }
    match f {
        Filter::Chain { param, targets } => match targets.as_slice() {
            [(target, inner)] => prefix(inner).map(|(inner, prefix)| Drive::Chain {
                param,
                target,
                inner,
                prefix,
            }),
            _ => None,
        },
        _ => prefix(f).map(|(param, prefix)| Drive::Str { param, prefix }),
    }
}

/// The forms of a page's filters from their capped counts (`None`: unknown) and whether each
/// can drive in index order (`orderable`; only without `_sort`): a filter under
/// [`ORDERED_MIN`] drives by id; else the smallest orderable filter orders the page
/// ([`Form::Ordered`]); else [`choose_forms`].
pub fn choose_plan(counts: &[Option<i64>], orderable: &[bool]) -> Vec<Form> {
    let smallest = counts.iter().flatten().min().copied();
    if smallest.is_none_or(|c| c >= ORDERED_MIN)
        && let Some((_, i)) = (0..counts.len())
            .filter(|&i| orderable.get(i).copied().unwrap_or(false))
            .map(|i| (counts[i].unwrap_or(i64::MAX), i))
            .min()
    {
        return (0..counts.len())
            .map(|j| if j == i { Form::Ordered } else { Form::Probe })
            .collect();
    }
    choose_forms(counts)
}

pub(super) struct Compiler {
    n: u32,
    /// Filters are being written as per-row probes ([`Form::Probe`]), nested ones included.
    probe: bool,
    /// PostgreSQL: text compares and sorts bytewise (`COLLATE "C"`), as SQLite does.
    pg: bool,
    /// The database already orders ids bytewise (SQLite; PostgreSQL with a C collation): ids
    /// sort without a COLLATE clause, so the primary key can deliver them in order.
    c_ids: bool,
}

/// One component of a page's order.
struct Comp {
    col: String,
    kind: KeyKind,
    desc: bool,
    nulls_last: bool,
    nullable: bool,
    /// A type or id column (ordered by the primary key).
    id_like: bool,
}

impl Comp {
    fn id(col: &str) -> Comp {
        Comp {
            col: col.to_string(),
            kind: KeyKind::Text,
            desc: false,
            nulls_last: true,
            nullable: false,
            id_like: true,
        }
    }
}

const MAX_CHAR: char = '\u{10FFFF}';

impl Compiler {
    /// `c_ids`: ids order bytewise without a COLLATE clause (always true for SQLite).
    pub(super) fn new(pg: bool, c_ids: bool) -> Compiler {
        Compiler {
            n: 0,
            probe: false,
            pg,
            c_ids: !pg || c_ids,
        }
    }

    fn alias(&mut self) -> String {
        self.n += 1;
        format!("x{}", self.n)
    }

    fn collate(&self) -> &'static str {
        if self.pg { " COLLATE \"C\"" } else { "" }
    }

    /// `SELECT … FROM resource r WHERE <types> AND live AND <filters>` (no keys, no order);
    /// `forms` (one per filter, or empty: all [`Form::In`]) say how each filter is written.
    fn push_base<DB>(
        &mut self,
        qb: &mut QueryBuilder<DB>,
        types: &[String],
        filters: &[Filter],
        forms: &[Form],
    ) where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        qb.push(" FROM resource r WHERE r.deleted = ");
        qb.push_bind(false);
        let scope = match types {
            [one] => {
                qb.push(" AND r.resource_type = ");
                qb.push_bind(one.clone());
                Scope::One(one.as_str())
            }
            [] => Scope::Many,
            many => {
                qb.push(" AND r.resource_type IN (");
                let mut sep = qb.separated(", ");
                for t in many {
                    sep.push_bind(t.clone());
                }
                qb.push(")");
                Scope::Many
            }
        };
        // drivers first: SQLite tries conditions in the order written
        let form = |i: usize| forms.get(i).copied().unwrap_or(Form::In);
        let order = (0..filters.len())
            .filter(|&i| form(i) != Form::Probe)
            .chain((0..filters.len()).filter(|&i| form(i) == Form::Probe));
        for i in order {
            qb.push(" AND ");
            self.probe = form(i) == Form::Probe;
            self.filter(qb, &filters[i], scope, "r.resource_type", "r.id");
            self.probe = false;
        }
    }

    /// How to size `filter` (of `resource_type`) before a page query: a capped count of the
    /// index rows its IN form would read.
    pub(super) fn estimate<DB>(&mut self, resource_type: &str, filter: &Filter) -> Estimate<DB>
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
                qb.push(format!("{} a WHERE a.resource_type = ", table.name()));
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
                        p.table().name()
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

    /// `table`, read through its (resource_type, id, param) index in a probe. SQLite has no
    /// statistics and would otherwise pick the value index (more equality columns), walking
    /// every row of a value for each probed resource.
    fn owner_indexed(&self, table: &str, alias: &str) -> String {
        let index = match table {
            "resource_token" | "resource_reference" => format!("{table}_owner_param"),
            "search_string" | "search_date" | "search_number" | "search_quantity"
            | "search_uri" => format!("{table}_owner"),
            _ => return format!("{table} {alias}"),
        };
        if self.pg {
            format!("{table} {alias}")
        } else {
            format!("{table} {alias} INDEXED BY {index}")
        }
    }

    /// Closes what [`Compiler::member`] opened.
    fn close<DB: Database>(&self, qb: &mut QueryBuilder<DB>) {
        // PostgreSQL turns a plain EXISTS into a join it plans from its estimates; OFFSET 0
        // keeps it a per-row probe
        qb.push(if self.probe && self.pg {
            " OFFSET 0)"
        } else {
            ")"
        });
    }

    /// `SELECT COUNT(*) …` of a search.
    pub(super) fn count<DB>(&mut self, types: &[String], filters: &[Filter]) -> QueryBuilder<DB>
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        let mut qb = QueryBuilder::new("SELECT COUNT(*)");
        self.push_base(&mut qb, types, filters, &[]);
        qb
    }

    /// Ids of the live resources of one type matching `filters` (conditional interactions).
    pub(super) fn ids<DB>(
        &mut self,
        resource_type: &str,
        filters: &[Filter],
        limit: u32,
    ) -> QueryBuilder<DB>
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        let mut qb = QueryBuilder::new("SELECT r.id");
        self.push_base(&mut qb, &[resource_type.to_string()], filters, &[]);
        let coll = if self.c_ids { "" } else { self.collate() };
        qb.push(format!(" ORDER BY r.id{coll} LIMIT "));
        qb.push_bind(i64::from(limit));
        qb
    }

    /// One page: `SELECT rt, id, k0, k1… ORDER BY keys, rt, id LIMIT n`.
    pub(super) fn page<DB>(&mut self, spec: &SearchSpec<'_>) -> QueryBuilder<DB>
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        self.page_with("", spec)
    }

    /// [`Compiler::page`] behind a fixed prefix such as `EXPLAIN `.
    pub(super) fn page_with<DB>(
        &mut self,
        prefix: &'static str,
        spec: &SearchSpec<'_>,
    ) -> QueryBuilder<DB>
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        if let Some((i, drive)) = ordered_plan(spec)
            && let [resource_type] = spec.types
        {
            return self.page_ordered(prefix, spec, resource_type, i, drive);
        }
        if let Some(walk) = sort_walk(spec) {
            // the store runs both phases (walk_sorted); this is the first, for EXPLAIN
            let after = spec
                .anchor
                .is_some_and(|a| !matches!(a.keys.first(), None | Some(KeyValue::Null)));
            let limit = i64::from(spec.limit);
            return self.walk_phase(prefix, spec, walk, Phase::Keyed, after, limit);
        }
        let mut qb = QueryBuilder::new(prefix);
        qb.push("SELECT s.rt, s.id");
        for i in 0..spec.sort.len() {
            qb.push(format!(", s.k{i}"));
        }
        qb.push(" FROM (SELECT r.resource_type AS rt, r.id AS id");
        for (i, s) in spec.sort.iter().enumerate() {
            qb.push(", ");
            self.sort_expr(&mut qb, s);
            qb.push(format!(" AS k{i}"));
        }
        self.push_base(&mut qb, spec.types, spec.filters, spec.forms);
        qb.push(") s");
        // the order's components; a single type leaves the type out (it is constant), so the
        // (resource_type, id) primary key can deliver rows in order
        let mut comps: Vec<Comp> = spec
            .sort
            .iter()
            .enumerate()
            .map(|(i, s)| Comp {
                col: format!("s.k{i}"),
                kind: key_kind(&s.key),
                desc: s.desc,
                nulls_last: true,
                nullable: !matches!(s.key, SortKey::Id | SortKey::LastUpdated),
                id_like: s.key == SortKey::Id,
            })
            .collect();
        let mut values: Vec<KeyValue> = spec
            .anchor
            .map(|a| {
                let mut v = a.keys.clone();
                v.resize(spec.sort.len(), KeyValue::Null);
                v
            })
            .unwrap_or_default();
        if spec.types.len() != 1 {
            comps.push(Comp::id("s.rt"));
            if let Some(a) = spec.anchor {
                values.push(KeyValue::Text(a.resource_type.clone()));
            }
        }
        comps.push(Comp::id("s.id"));
        if let Some(a) = spec.anchor {
            values.push(KeyValue::Text(a.id.clone()));
        }
        if spec.backwards {
            for comp in &mut comps {
                comp.desc = !comp.desc;
                comp.nulls_last = !comp.nulls_last;
            }
        }
        if spec.anchor.is_some() {
            qb.push(" WHERE ");
            self.keyset(&mut qb, &comps, &values);
        }
        qb.push(" ORDER BY ");
        for (i, c) in comps.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            if c.nullable {
                qb.push(format!(
                    "({} IS NULL){}, ",
                    c.col,
                    if c.nulls_last { "" } else { " DESC" }
                ));
            }
            qb.push(format!(
                "{}{}{}",
                c.col,
                self.coll_of(c),
                if c.desc { " DESC" } else { "" }
            ));
        }
        qb.push(" LIMIT ");
        qb.push_bind(i64::from(spec.limit));
        qb
    }

    /// A page in the order of filter `driver`'s index ([`Form::Ordered`]): the driver's rows
    /// are walked in (norm, id) order — for a chain, the targets', then each target's
    /// referrers by id — and the walk stops after `limit` hits. A resource with several
    /// matching rows is kept at its first (smallest) key only, so it appears once and at the
    /// same place on every page. The other filters are written as `spec.forms` say.
    fn page_ordered<DB>(
        &mut self,
        prefix: &'static str,
        spec: &SearchSpec<'_>,
        resource_type: &str,
        driver: usize,
        drive: Drive<'_>,
    ) -> QueryBuilder<DB>
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        // ids compare bytewise in order and keyset alike (the index has `id COLLATE "C"`);
        // a row's physical key breaks ties between duplicate rows
        let c = self.collate();
        let rk = if self.pg { "ctid" } else { "rowid" };
        let mut qb = QueryBuilder::new(prefix);
        let (tcol, icol, cols): (&str, &str, &[&str]) = match drive {
            Drive::Str { param, prefix: v } => {
                qb.push(format!(
                    "SELECT d.resource_type AS o_rt, d.id{c} AS o_id, d.norm AS o_k0 \
                     FROM search_string d WHERE d.resource_type = "
                ));
                qb.push_bind(resource_type.to_string());
                qb.push(" AND d.param = ");
                qb.push_bind(param.to_string());
                qb.push(" AND ");
                self.ordered_rows(&mut qb, v);
                ("d.resource_type", "d.id", &["d.norm", "d.id"])
            }
            Drive::Chain {
                param,
                target,
                inner,
                prefix: v,
            } => {
                qb.push(format!(
                    "SELECT c.resource_type AS o_rt, c.id{c} AS o_id, d.norm AS o_k0, \
                     d.id{c} AS o_k1 FROM search_string d JOIN resource_reference c ON \
                     c.target_type = d.resource_type AND c.target_id = d.id WHERE \
                     d.resource_type = "
                ));
                qb.push_bind(target.to_string());
                qb.push(" AND d.param = ");
                qb.push_bind(inner.to_string());
                qb.push(" AND ");
                self.ordered_rows(&mut qb, v);
                qb.push(" AND c.resource_type = ");
                qb.push_bind(resource_type.to_string());
                qb.push(" AND c.param = ");
                qb.push_bind(param.to_string());
                // a referrer is kept under its first (norm, target id, row) only
                let owner = self.owner_indexed("resource_reference", "c2");
                let owner_s = self.owner_indexed("search_string", "e2");
                qb.push(format!(
                    " AND NOT EXISTS (SELECT 1 FROM {owner} JOIN {owner_s} ON e2.resource_type \
                     = c2.target_type AND e2.id = c2.target_id WHERE c2.resource_type = \
                     c.resource_type AND c2.id = c.id AND c2.param = c.param AND \
                     c2.target_type = c.target_type AND e2.param = d.param AND "
                ));
                self.unindexed_prefix(&mut qb, "e2", v);
                qb.push(format!(
                    " AND ((e2.norm || '') < d.norm OR (e2.norm = d.norm AND e2.id{c} < \
                     d.id{c}) OR (c2.target_id = d.id AND c2.{rk} < c.{rk})){}",
                    if self.pg { " OFFSET 0)" } else { ")" }
                ));
                ("c.resource_type", "c.id", &["d.norm", "d.id", "c.id"])
            }
        };
        for (j, f) in spec.filters.iter().enumerate() {
            if j == driver {
                continue;
            }
            qb.push(" AND ");
            self.probe = spec.forms.get(j) == Some(&Form::Probe);
            self.filter(&mut qb, f, Scope::One(resource_type), tcol, icol);
            self.probe = false;
        }
        // the order: the driver's keys, then the id
        let mut comps: Vec<Comp> = cols.iter().map(|col| Comp::id(col)).collect();
        let names: &[&str] = match drive {
            Drive::Str { .. } => &["o_k0", "o_id"],
            Drive::Chain { .. } => &["o_k0", "o_k1", "o_id"],
        };
        if spec.backwards {
            for comp in &mut comps {
                comp.desc = true;
            }
        }
        if let Some(a) = spec.anchor {
            let mut values = a.keys.clone();
            values.resize(comps.len() - 1, KeyValue::Null);
            values.push(KeyValue::Text(a.id.clone()));
            // the first key bounds the index range; the rest is the exact keyset
            if let Some(KeyValue::Text(k0)) = values.first() {
                qb.push(format!(
                    " AND d.norm {} ",
                    if spec.backwards { "<=" } else { ">=" }
                ));
                qb.push_bind(k0.clone());
            }
            qb.push(" AND ");
            self.ordered_keyset(&mut qb, &comps, &values);
        }
        qb.push(" ORDER BY ");
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push(format!(
                "{name}{}",
                if spec.backwards { " DESC" } else { "" }
            ));
        }
        qb.push(" LIMIT ");
        qb.push_bind(i64::from(spec.limit));
        qb
    }

    /// `d`'s rows matching the prefix `v`, each resource's first (smallest norm, then row)
    /// only.
    fn ordered_rows<DB>(&mut self, qb: &mut QueryBuilder<DB>, v: &str)
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
    {
        let pred = Pred::Str(StrMatch::Starts, v.to_string());
        self.pred(qb, &pred, "d");
        let owner = self.owner_indexed("search_string", "e");
        let rk = if self.pg { "ctid" } else { "rowid" };
        qb.push(format!(
            " AND NOT EXISTS (SELECT 1 FROM {owner} WHERE e.resource_type = d.resource_type \
             AND e.id = d.id AND e.param = d.param AND "
        ));
        self.unindexed_prefix(qb, "e", v);
        qb.push(format!(
            " AND ((e.norm || '') < d.norm OR (e.norm = d.norm AND e.{rk} < d.{rk})){}",
            if self.pg { " OFFSET 0)" } else { ")" }
        ));
    }

    /// `a.norm` starts with `v`, written so that no index on norm can serve it: a dedupe
    /// probe must go through the owner index, not walk the whole prefix range per row.
    fn unindexed_prefix<DB>(&self, qb: &mut QueryBuilder<DB>, a: &str, v: &str)
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
    {
        qb.push(format!("({a}.norm || '') >= "));
        qb.push_bind(v.to_string());
        qb.push(format!(" AND ({a}.norm || '') < "));
        qb.push_bind(format!("{v}{MAX_CHAR}"));
    }

    /// Rows strictly after `values` in the ordered-driver order `comps` (text keys compared
    /// bytewise, never null).
    fn ordered_keyset<DB>(&self, qb: &mut QueryBuilder<DB>, comps: &[Comp], values: &[KeyValue])
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
    {
        let Some((comp, rest)) = comps.split_first() else {
            qb.push("1 = 0");
            return;
        };
        let c = self.collate();
        let v = values.first().cloned().unwrap_or(KeyValue::Null);
        let op = if comp.desc { "<" } else { ">" };
        qb.push(format!("({}{c} {op} ", comp.col));
        push_key(qb, &v);
        if !rest.is_empty() {
            qb.push(format!(" OR ({}{c} = ", comp.col));
            push_key(qb, &v);
            qb.push(" AND ");
            self.ordered_keyset(qb, rest, &values[1.min(values.len())..]);
            qb.push(")");
        }
        qb.push(")");
    }

    /// One phase of a sort walk ([`sort_walk`]). `Keyed`: the sort parameter's rows walked in
    /// its value index's order, each resource at its sort key's row only (the row that is its
    /// MIN, or MAX when descending, as [`Compiler::sort_expr`] computes it), the filters
    /// probed. `Missing`: the resources without the parameter, in id order (they sort last).
    /// `after`: the anchor lies in this phase (else the phase is read from its start).
    pub(super) fn walk_phase<DB>(
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
        let table = walk.table.name();
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

    /// The collation clause a component compares and sorts with.
    fn coll_of(&self, c: &Comp) -> &'static str {
        match c.kind {
            KeyKind::Text if c.id_like && self.c_ids => "",
            KeyKind::Text => self.collate(),
            _ => "",
        }
    }

    /// Rows strictly after `values` in the order `comps`:
    /// gt0 OR (eq0 AND (gt1 OR (eq1 AND …))).
    fn keyset<DB>(&self, qb: &mut QueryBuilder<DB>, comps: &[Comp], values: &[KeyValue])
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
    {
        let Some((c, rest)) = comps.split_first() else {
            qb.push("1 = 0");
            return;
        };
        let col = &c.col;
        let v = values.first().cloned().unwrap_or(KeyValue::Null);
        let coll = self.coll_of(c);
        qb.push("(");
        // strictly greater on this component
        match &v {
            KeyValue::Null => {
                if c.nulls_last {
                    qb.push("1 = 0");
                } else {
                    qb.push(format!("{col} IS NOT NULL"));
                }
            }
            value => {
                qb.push(format!("({col}{coll} {} ", if c.desc { "<" } else { ">" }));
                push_key(qb, value);
                qb.push(")");
                if c.nulls_last && c.nullable {
                    qb.push(format!(" OR {col} IS NULL"));
                }
            }
        }
        if !rest.is_empty() {
            qb.push(" OR (");
            match &v {
                KeyValue::Null => qb.push(format!("{col} IS NULL")),
                value => {
                    qb.push(format!("{col}{coll} = "));
                    push_key(qb, value);
                    &mut *qb
                }
            };
            qb.push(" AND ");
            self.keyset(qb, rest, &values[1.min(values.len())..]);
            qb.push(")");
        }
        qb.push(")");
    }

    fn sort_expr<DB>(&mut self, qb: &mut QueryBuilder<DB>, s: &Sort)
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
    {
        match &s.key {
            SortKey::Id => {
                qb.push("r.id");
            }
            SortKey::LastUpdated => {
                qb.push("r.last_updated");
            }
            SortKey::Param { param, table } => {
                let col = match table {
                    Table::String => "norm",
                    Table::Token => "code",
                    Table::Reference => "target_id",
                    Table::Date if s.desc => "high",
                    Table::Date => "low",
                    Table::Number | Table::Quantity | Table::Uri => "value",
                };
                let a = self.alias();
                let agg = if s.desc { "MAX" } else { "MIN" };
                let coll = if matches!(table, Table::Token | Table::Reference) {
                    self.collate()
                } else {
                    ""
                };
                // `+ 0` / `|| ''` keep the planner off the min/max shortcut through the value
                // index (which walks a parameter's rows of every resource for each resource)
                // and on the (resource_type, id, param) index
                let value = match table {
                    Table::Date | Table::Number | Table::Quantity => format!("{a}.{col} + 0"),
                    _ => format!("({a}.{col} || ''){coll}"),
                };
                qb.push(format!(
                    "(SELECT {agg}({value}) FROM {} {a} WHERE {a}.resource_type = \
                     r.resource_type AND {a}.id = r.id AND {a}.param = ",
                    table.name()
                ));
                qb.push_bind(param.clone());
                qb.push(")");
            }
        }
    }

    /// Opens `icol IN (SELECT a.<sel> FROM table a WHERE <type>`; the caller continues
    /// with ` AND …` and closes with `)`.
    fn member<DB>(
        &self,
        qb: &mut QueryBuilder<DB>,
        scope: Scope<'_>,
        tcol: &str,
        icol: &str,
        from: &str,
        a: &str,
    ) where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
    {
        if self.probe {
            let from = self.owner_indexed(from, a);
            match scope {
                Scope::One(t) => {
                    qb.push(format!(
                        "EXISTS (SELECT 1 FROM {from} WHERE {a}.resource_type = "
                    ));
                    qb.push_bind(t.to_string());
                    qb.push(format!(" AND {a}.id = {icol}"));
                }
                Scope::Many => {
                    qb.push(format!(
                        "EXISTS (SELECT 1 FROM {from} WHERE {a}.resource_type = {tcol} AND \
                         {a}.id = {icol}"
                    ));
                }
            }
            return;
        }
        match scope {
            Scope::One(t) => {
                qb.push(format!(
                    "{icol} IN (SELECT {a}.id FROM {from} {a} WHERE {a}.resource_type = "
                ));
                qb.push_bind(t.to_string());
            }
            Scope::Many => {
                qb.push(format!(
                    "({tcol}, {icol}) IN (SELECT {a}.resource_type, {a}.id FROM {from} {a} \
                     WHERE 1 = 1"
                ));
            }
        }
    }

    fn filter<DB>(
        &mut self,
        qb: &mut QueryBuilder<DB>,
        f: &Filter,
        scope: Scope<'_>,
        tcol: &str,
        icol: &str,
    ) where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        match f {
            Filter::Id { ids, negate } => {
                if ids.is_empty() {
                    qb.push(if *negate { "1 = 0" } else { "1 = 1" });
                    return;
                }
                qb.push(format!("{icol}{} IN (", if *negate { " NOT" } else { "" }));
                let mut sep = qb.separated(", ");
                for id in ids {
                    sep.push_bind(id.clone());
                }
                qb.push(")");
            }
            Filter::LastUpdated(preds) => {
                let a = self.alias();
                self.member(qb, scope, tcol, icol, "resource", &a);
                qb.push(format!(" AND {a}.deleted = "));
                qb.push_bind(false);
                qb.push(" AND (");
                for (i, p) in preds.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    if let Pred::Date(prefix, low, high) = p {
                        let col = format!("{a}.last_updated");
                        date_pred(qb, *prefix, *low, *high, &col, &col);
                    } else {
                        qb.push("1 = 0");
                    }
                }
                qb.push(")");
                self.close(qb);
            }
            Filter::Param {
                param,
                preds,
                negate,
            } => {
                if *negate {
                    qb.push("NOT ");
                }
                qb.push("(");
                let mut tables: Vec<Table> = Vec::new();
                for p in preds {
                    if !tables.contains(&p.table()) {
                        tables.push(p.table());
                    }
                }
                if tables.is_empty() {
                    qb.push("1 = 0");
                }
                for (i, table) in tables.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    let a = self.alias();
                    self.member(qb, scope, tcol, icol, table.name(), &a);
                    qb.push(format!(" AND {a}.param = "));
                    qb.push_bind(param.clone());
                    qb.push(" AND (");
                    let mut first = true;
                    for p in preds.iter().filter(|p| p.table() == *table) {
                        if !first {
                            qb.push(" OR ");
                        }
                        first = false;
                        self.pred(qb, p, &a);
                    }
                    qb.push(")");
                    self.close(qb);
                }
                qb.push(")");
            }
            Filter::Missing {
                param,
                tables,
                missing,
            } => {
                if *missing {
                    qb.push("NOT ");
                }
                qb.push("(");
                if tables.is_empty() {
                    qb.push("1 = 0");
                }
                for (i, table) in tables.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    let a = self.alias();
                    self.member(qb, scope, tcol, icol, table.name(), &a);
                    qb.push(format!(" AND {a}.param = "));
                    qb.push_bind(param.clone());
                    self.close(qb);
                }
                qb.push(")");
            }
            Filter::Composite { param, values } => {
                qb.push("(");
                for (vi, preds) in values.iter().enumerate() {
                    if vi > 0 {
                        qb.push(" OR ");
                    }
                    let aliases: Vec<String> = preds.iter().map(|_| self.alias()).collect();
                    let Some(first) = aliases.first() else {
                        qb.push("1 = 0");
                        continue;
                    };
                    let mut from = if self.probe {
                        self.owner_indexed(preds[0].table().name(), first)
                    } else {
                        format!("{} {first}", preds[0].table().name())
                    };
                    for (p, a) in preds.iter().zip(&aliases).skip(1) {
                        from.push_str(&format!(
                            " JOIN {} {a} ON {a}.resource_type = {first}.resource_type AND \
                             {a}.id = {first}.id AND {a}.grp = {first}.grp",
                            p.table().name()
                        ));
                    }
                    // member() names the first alias itself
                    match scope {
                        Scope::One(t) if self.probe => {
                            qb.push(format!(
                                "EXISTS (SELECT 1 FROM {from} WHERE {first}.resource_type = "
                            ));
                            qb.push_bind(t.to_string());
                            qb.push(format!(" AND {first}.id = {icol}"));
                        }
                        Scope::Many if self.probe => {
                            qb.push(format!(
                                "EXISTS (SELECT 1 FROM {from} WHERE {first}.resource_type = \
                                 {tcol} AND {first}.id = {icol}"
                            ));
                        }
                        Scope::One(t) => {
                            qb.push(format!(
                                "{icol} IN (SELECT {first}.id FROM {from} WHERE \
                                 {first}.resource_type = "
                            ));
                            qb.push_bind(t.to_string());
                        }
                        Scope::Many => {
                            qb.push(format!(
                                "({tcol}, {icol}) IN (SELECT {first}.resource_type, {first}.id \
                                 FROM {from} WHERE 1 = 1"
                            ));
                        }
                    }
                    for (i, (p, a)) in preds.iter().zip(&aliases).enumerate() {
                        qb.push(format!(" AND {a}.param = "));
                        qb.push_bind(format!("{param}${i}"));
                        qb.push(" AND (");
                        self.pred(qb, p, a);
                        qb.push(")");
                    }
                    self.close(qb);
                }
                qb.push(")");
            }
            Filter::Chain { param, targets } => {
                let a = self.alias();
                self.member(qb, scope, tcol, icol, "resource_reference", &a);
                qb.push(format!(" AND {a}.param = "));
                qb.push_bind(param.clone());
                qb.push(" AND (");
                for (i, (t, inner)) in targets.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push(format!("({a}.target_type = "));
                    qb.push_bind(t.clone());
                    qb.push(" AND ");
                    let (tt, ti) = (format!("{a}.target_type"), format!("{a}.target_id"));
                    self.filter(qb, inner, Scope::One(t), &tt, &ti);
                    qb.push(")");
                }
                qb.push(")");
                self.close(qb);
            }
            Filter::Has {
                source_type,
                param,
                filter,
            } => {
                let a = self.alias();
                match scope {
                    Scope::One(t) if self.probe => {
                        qb.push(format!(
                            "EXISTS (SELECT 1 FROM resource_reference {a} WHERE {a}.target_type \
                             = "
                        ));
                        qb.push_bind(t.to_string());
                        qb.push(format!(" AND {a}.target_id = {icol}"));
                    }
                    Scope::Many if self.probe => {
                        qb.push(format!(
                            "EXISTS (SELECT 1 FROM resource_reference {a} WHERE {a}.target_type \
                             = {tcol} AND {a}.target_id = {icol}"
                        ));
                    }
                    Scope::One(t) => {
                        qb.push(format!(
                            "{icol} IN (SELECT {a}.target_id FROM resource_reference {a} WHERE \
                             {a}.target_type = "
                        ));
                        qb.push_bind(t.to_string());
                    }
                    Scope::Many => {
                        qb.push(format!(
                            "({tcol}, {icol}) IN (SELECT {a}.target_type, {a}.target_id FROM \
                             resource_reference {a} WHERE 1 = 1"
                        ));
                    }
                }
                qb.push(format!(" AND {a}.resource_type = "));
                qb.push_bind(source_type.clone());
                qb.push(format!(" AND {a}.param = "));
                qb.push_bind(param.clone());
                qb.push(" AND ");
                let (st, si) = (format!("{a}.resource_type"), format!("{a}.id"));
                self.filter(qb, filter, Scope::One(source_type), &st, &si);
                self.close(qb);
            }
            Filter::List(id) => {
                let a = self.alias();
                if self.probe {
                    qb.push(format!(
                        "EXISTS (SELECT 1 FROM resource_reference {a} WHERE {a}.resource_type = \
                         'List' AND {a}.param = 'item' AND {a}.id = "
                    ));
                    qb.push_bind(id.clone());
                    qb.push(format!(
                        " AND {a}.target_type = {tcol} AND {a}.target_id = {icol}"
                    ));
                } else {
                    qb.push(format!(
                        "({tcol}, {icol}) IN (SELECT {a}.target_type, {a}.target_id FROM \
                         resource_reference {a} WHERE {a}.resource_type = 'List' AND {a}.param = \
                         'item' AND {a}.id = "
                    ));
                    qb.push_bind(id.clone());
                }
                self.close(qb);
            }
            Filter::OfType(types) => {
                qb.push(format!("{tcol} IN ("));
                let mut sep = qb.separated(", ");
                for t in types {
                    sep.push_bind(t.clone());
                }
                if types.is_empty() {
                    sep.push("NULL");
                }
                qb.push(")");
            }
            Filter::Any(alternatives) => {
                qb.push("(");
                if alternatives.is_empty() {
                    qb.push("1 = 0");
                }
                for (i, alt) in alternatives.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push("(1 = 1");
                    for f in alt {
                        qb.push(" AND ");
                        self.filter(qb, f, scope, tcol, icol);
                    }
                    qb.push(")");
                }
                qb.push(")");
            }
            Filter::Compartment {
                owner_type,
                owners,
                params,
            } => {
                // no `1 = 0 OR …`: SQLite would not drive the page from the reference rows
                let applicable: Vec<&(String, Vec<String>)> = params
                    .iter()
                    .filter(|(t, _)| !matches!(scope, Scope::One(one) if one != t))
                    .collect();
                qb.push("(");
                if applicable.is_empty() {
                    qb.push("1 = 0");
                }
                for (i, (t, codes)) in applicable.into_iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push(format!("({tcol} = "));
                    qb.push_bind(t.clone());
                    qb.push(" AND (");
                    // the owner is in its own compartment
                    let own = t == owner_type;
                    if own {
                        match owners {
                            Owners::Id(owner_id) => {
                                qb.push(format!("{icol} = "));
                                qb.push_bind(owner_id.clone());
                            }
                            Owners::Matching(f) => {
                                self.owners(qb, f, owner_type, tcol, icol);
                            }
                        }
                    }
                    if !codes.is_empty() {
                        if own {
                            qb.push(" OR ");
                        }
                        let a = self.alias();
                        qb.push(format!(
                            "{icol} IN (SELECT {a}.id FROM resource_reference {a} WHERE \
                             {a}.resource_type = "
                        ));
                        qb.push_bind(t.clone());
                        qb.push(format!(" AND {a}.target_type = "));
                        qb.push_bind(owner_type.clone());
                        qb.push(format!(" AND {a}.param IN ("));
                        let mut sep = qb.separated(", ");
                        for c in codes {
                            sep.push_bind(c.clone());
                        }
                        qb.push(")");
                        match owners {
                            Owners::Id(owner_id) => {
                                qb.push(format!(" AND {a}.target_id = "));
                                qb.push_bind(owner_id.clone());
                            }
                            Owners::Matching(f) => {
                                qb.push(" AND ");
                                let (tt, ti) =
                                    (format!("{a}.target_type"), format!("{a}.target_id"));
                                self.owners(qb, f, owner_type, &tt, &ti);
                            }
                        }
                        qb.push(")");
                    } else if !own {
                        qb.push("1 = 0");
                    }
                    qb.push("))");
                }
                qb.push(")");
            }
        }
    }

    /// The compartment's owners given by a filter (the care set): written as uncorrelated
    /// IN subqueries, so the database finds the owners once, not once per candidate row as
    /// a probe would.
    fn owners<DB>(
        &mut self,
        qb: &mut QueryBuilder<DB>,
        f: &Filter,
        owner_type: &str,
        tcol: &str,
        icol: &str,
    ) where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
        for<'q> bool: Encode<'q, DB> + Type<DB>,
    {
        let probe = std::mem::replace(&mut self.probe, false);
        self.filter(qb, f, Scope::One(owner_type), tcol, icol);
        self.probe = probe;
    }

    fn pred<DB>(&mut self, qb: &mut QueryBuilder<DB>, p: &Pred, a: &str)
    where
        DB: Database,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> f64: Encode<'q, DB> + Type<DB>,
    {
        match p {
            Pred::Str(StrMatch::Starts, v) => {
                // the index keeps the first INDEX_KEY_PREFIX bytes of long values: a longer
                // prefix is looked for by its first part
                let v = index_prefix(v);
                qb.push(format!("{a}.norm >= "));
                qb.push_bind(v.to_string());
                qb.push(format!(" AND {a}.norm < "));
                qb.push_bind(format!("{v}{MAX_CHAR}"));
            }
            Pred::Str(StrMatch::Exact, v) => {
                qb.push(format!("{a}.exact = "));
                qb.push_bind(v.clone());
            }
            Pred::Str(StrMatch::Contains, v) => {
                let escaped = v
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                qb.push(format!("{a}.norm LIKE "));
                qb.push_bind(format!("%{escaped}%"));
                qb.push(" ESCAPE '\\'");
            }
            Pred::Token { system, code } => {
                qb.push("1 = 1");
                if let Some(code) = code {
                    qb.push(format!(" AND {a}.code = "));
                    qb.push_bind(index_key(code).into_owned());
                }
                match system {
                    None => {}
                    Some(None) => {
                        qb.push(format!(" AND {a}.system IS NULL"));
                    }
                    Some(Some(s)) => {
                        qb.push(format!(" AND {a}.system = "));
                        qb.push_bind(index_key(s).into_owned());
                    }
                }
            }
            Pred::TokenIn(codes) => {
                // never `(1 = 0 OR …)`: SQLite would then use no index for the codes
                qb.push("(");
                if codes.is_empty() {
                    qb.push("1 = 0");
                }
                for (i, (system, code)) in codes.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push(format!("({a}.code = "));
                    qb.push_bind(index_key(code).into_owned());
                    if let Some(s) = system {
                        qb.push(format!(" AND {a}.system = "));
                        qb.push_bind(index_key(s).into_owned());
                    }
                    qb.push(")");
                }
                qb.push(")");
            }
            Pred::Ref { target_type, id } => {
                qb.push(format!("{a}.target_id = "));
                qb.push_bind(id.clone());
                if let Some(t) = target_type {
                    qb.push(format!(" AND {a}.target_type = "));
                    qb.push_bind(t.clone());
                }
            }
            Pred::Uri(v) => {
                qb.push(format!("{a}.value = "));
                qb.push_bind(index_key(v).into_owned());
            }
            Pred::UriBelow(v) => {
                let v = index_prefix(v);
                qb.push(format!("{a}.value >= "));
                qb.push_bind(v.to_string());
                qb.push(format!(" AND {a}.value < "));
                qb.push_bind(format!("{v}{MAX_CHAR}"));
            }
            Pred::UriAbove(v) => {
                // every prefix of the value at a path boundary, and the value itself
                let mut prefixes: Vec<String> = v
                    .match_indices('/')
                    .map(|(i, _)| v[..i].to_string())
                    .filter(|p| p.len() > "https://".len())
                    .collect();
                prefixes.push(v.clone());
                qb.push(format!("{a}.value IN ("));
                let mut sep = qb.separated(", ");
                for p in prefixes {
                    sep.push_bind(index_key(&p).into_owned());
                }
                qb.push(")");
            }
            Pred::Date(prefix, low, high) => {
                date_pred(
                    qb,
                    *prefix,
                    *low,
                    *high,
                    &format!("{a}.low"),
                    &format!("{a}.high"),
                );
            }
            Pred::Number(prefix, value, low, high) => {
                number_pred(qb, *prefix, *value, *low, *high, &format!("{a}.value"));
            }
            Pred::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
                canonical,
            } => {
                let col = if *canonical { "cvalue" } else { "value" };
                qb.push("(");
                number_pred(qb, *prefix, *value, *low, *high, &format!("{a}.{col}"));
                if *canonical {
                    qb.push(format!(" AND {a}.ccode = "));
                    qb.push_bind(code.clone().unwrap_or_default());
                } else {
                    if let Some(s) = system {
                        qb.push(format!(" AND {a}.system = "));
                        qb.push_bind(s.clone());
                    }
                    if let Some(c) = code {
                        qb.push(format!(" AND ({a}.code = "));
                        qb.push_bind(c.clone());
                        qb.push(format!(" OR {a}.unit = "));
                        qb.push_bind(c.clone());
                        qb.push(")");
                    }
                }
                qb.push(")");
            }
        }
    }
}

fn push_key<DB>(qb: &mut QueryBuilder<DB>, v: &KeyValue)
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    match v {
        KeyValue::Null => {
            qb.push("NULL");
        }
        KeyValue::Int(i) => {
            qb.push_bind(*i);
        }
        KeyValue::Real(f) => {
            qb.push_bind(*f);
        }
        KeyValue::Text(s) => {
            qb.push_bind(s.clone());
        }
    }
}

/// R4 date prefixes over inclusive ranges: the row [low, high] against the search [sl, sh].
fn date_pred<DB>(qb: &mut QueryBuilder<DB>, p: Prefix, sl: i64, sh: i64, low: &str, high: &str)
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let contained = |qb: &mut QueryBuilder<DB>| {
        qb.push(format!("({low} >= "));
        qb.push_bind(sl);
        qb.push(format!(" AND {high} <= "));
        qb.push_bind(sh);
        qb.push(")");
    };
    // Eq, Ge and Le also get a bound that follows from low <= high and that an index can
    // serve: without it SQLite answers the OR through the high index's whole lower range
    // (ge2024-11 on 100k Encounters: 173 ms → 0.4 ms for the estimate alone)
    match p {
        Prefix::Eq => {
            qb.push(format!("({low} <= "));
            qb.push_bind(sh);
            qb.push(" AND ");
            contained(qb);
            qb.push(")");
        }
        Prefix::Ne => {
            qb.push("NOT ");
            contained(qb);
        }
        Prefix::Gt => {
            qb.push(format!("{high} > "));
            qb.push_bind(sh);
        }
        Prefix::Lt => {
            qb.push(format!("{low} < "));
            qb.push_bind(sl);
        }
        Prefix::Ge => {
            qb.push(format!("({high} >= "));
            qb.push_bind(sl);
            qb.push(format!(" AND ({high} > "));
            qb.push_bind(sh);
            qb.push(" OR ");
            contained(qb);
            qb.push("))");
        }
        Prefix::Le => {
            qb.push(format!("({low} <= "));
            qb.push_bind(sh);
            qb.push(format!(" AND ({low} < "));
            qb.push_bind(sl);
            qb.push(" OR ");
            contained(qb);
            qb.push("))");
        }
        Prefix::Sa => {
            qb.push(format!("{low} > "));
            qb.push_bind(sh);
        }
        Prefix::Eb => {
            qb.push(format!("{high} < "));
            qb.push_bind(sl);
        }
        Prefix::Ap => {
            // 10% of the distance from now, at least a day
            let now = crate::fhir::types::Instant::now().millis();
            let d = ((now - sl).abs() / 10).max(86_400_000);
            qb.push(format!("({low} <= "));
            qb.push_bind(sh.saturating_add(d));
            qb.push(format!(" AND {high} >= "));
            qb.push_bind(sl.saturating_sub(d));
            qb.push(")");
        }
    }
}

/// R4 number prefixes: eq/ne use the value's implicit precision range [low, high).
fn number_pred<DB>(qb: &mut QueryBuilder<DB>, p: Prefix, v: f64, low: f64, high: f64, col: &str)
where
    DB: Database,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    let (op, x) = match p {
        Prefix::Eq | Prefix::Ne => {
            qb.push(format!(
                "{}({col} >= ",
                if p == Prefix::Ne { "NOT " } else { "" }
            ));
            qb.push_bind(low);
            qb.push(format!(" AND {col} < "));
            qb.push_bind(high);
            qb.push(")");
            return;
        }
        Prefix::Ap => {
            let d = (v.abs() * 0.1).max(high - low);
            qb.push(format!("({col} >= "));
            qb.push_bind(v - d);
            qb.push(format!(" AND {col} <= "));
            qb.push_bind(v + d);
            qb.push(")");
            return;
        }
        Prefix::Gt | Prefix::Sa => (">", v),
        Prefix::Lt | Prefix::Eb => ("<", v),
        Prefix::Ge => (">=", v),
        Prefix::Le => ("<=", v),
    };
    qb.push(format!("{col} {op} "));
    qb.push_bind(x);
}

/// Decodes page rows: type, id, then one column per sort key.
/// A sort walk: the page's one sort key, on a date or string parameter.
#[derive(Debug, Clone, Copy)]
pub(super) struct Walk<'a> {
    pub param: &'a str,
    pub table: Table,
    pub desc: bool,
}

/// The two phases of a sort walk: resources with the sort parameter, then those without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Keyed,
    Missing,
}

/// Whether a page is read as a sort walk: one type, one `_sort` key on a date or string
/// parameter, and every filter probed (the store found none selective). The page then walks
/// the sort parameter's value index in order and stops after `limit` hits — the same hits in
/// the same order as the top-N sort over every match, which grows with the matches.
pub(super) fn sort_walk<'a>(spec: &SearchSpec<'a>) -> Option<Walk<'a>> {
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
pub(super) async fn walk_sorted<DB>(
    conn: &mut DB::Connection,
    pg: bool,
    c_ids: bool,
    spec: &SearchSpec<'_>,
    walk: Walk<'_>,
) -> super::StoreResult<Vec<Hit>>
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
            .map_err(super::map_err)?;
        hits.extend(hits_from_rows(&rows, spec)?);
    }
    Ok(hits)
}

/// The driver of an ordered page (filter index and shape), when `spec` asks for one and can
/// have it: one type, no `_sort`, an orderable filter in [`Form::Ordered`].
pub(super) fn ordered_plan<'a>(spec: &SearchSpec<'a>) -> Option<(usize, Drive<'a>)> {
    if spec.types.len() != 1 || !spec.sort.is_empty() {
        return None;
    }
    let i = spec.forms.iter().position(|f| *f == Form::Ordered)?;
    spec.filters.get(i).and_then(ordered_drive).map(|d| (i, d))
}

/// The hits of a page query's rows (see [`Compiler::page`]).
pub(super) fn hits_from_rows<R>(rows: &[R], spec: &SearchSpec<'_>) -> super::StoreResult<Vec<Hit>>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database>,
    for<'r> Option<f64>: sqlx::Decode<'r, R::Database>,
    i64: Type<R::Database>,
    f64: Type<R::Database>,
{
    let get = |e: sqlx::Error| super::StoreError::Internal(e.to_string());
    let mut out = Vec::with_capacity(rows.len());
    if let Some((_, drive)) = ordered_plan(spec) {
        let n = match drive {
            Drive::Str { .. } => 1,
            Drive::Chain { .. } => 2,
        };
        for row in rows {
            let mut keys = Vec::with_capacity(n);
            for col in 2..2 + n {
                keys.push(KeyValue::Text(row.try_get(col).map_err(get)?));
            }
            out.push(Hit {
                resource_type: row.try_get(0).map_err(get)?,
                id: row.try_get(1).map_err(get)?,
                keys,
                plan: spec.forms.to_vec(),
            });
        }
        return Ok(out);
    }
    let sort = spec.sort;
    for row in rows {
        let mut keys = Vec::with_capacity(sort.len());
        for (i, s) in sort.iter().enumerate() {
            let col = i + 2;
            let v = match key_kind(&s.key) {
                KeyKind::Int => row
                    .try_get::<Option<i64>, _>(col)
                    .map_err(get)?
                    .map(KeyValue::Int),
                KeyKind::Real => row
                    .try_get::<Option<f64>, _>(col)
                    .map_err(get)?
                    .map(KeyValue::Real),
                KeyKind::Text => row
                    .try_get::<Option<String>, _>(col)
                    .map_err(get)?
                    .map(KeyValue::Text),
            };
            keys.push(v.unwrap_or(KeyValue::Null));
        }
        out.push(Hit {
            resource_type: row.try_get(0).map_err(get)?,
            id: row.try_get(1).map_err(get)?,
            keys,
            plan: Vec::new(),
        });
    }
    Ok(out)
}

/// `(target_type, target_id)` of reference rows from `sources` (`_include`).
pub(super) fn include_query<DB>(
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
    super::sql::push_keys_cte(&mut qb, sources);
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
pub(super) fn revinclude_query<DB>(
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
    super::sql::push_keys_cte(&mut qb, targets);
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

/// The forms of a page's filters ([`choose_plan`]), sized by one capped count per filter.
/// Only a single-type page with filters is planned this way; other pages keep every filter
/// in the IN form.
pub(super) async fn plan_forms<DB>(
    conn: &mut DB::Connection,
    pg: bool,
    spec: &SearchSpec<'_>,
) -> super::StoreResult<Vec<Form>>
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
) -> super::StoreResult<Option<i64>>
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
                    .map_err(super::map_err)?;
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
