//! The page query: the matches with their sort-key values, ordered by the sort keys, then
//! type and id, and resumed strictly after an anchor (keyset paging), so pages stay stable
//! while other clients write; and the hits decoded from its rows.

use super::keys::{Comp, KeyKind, key_kind};
use super::ordered::Drive;
use super::tables::table_name;
use super::walk::Phase;
use super::{Compiler, Hit, KeyValue, SearchSpec, ordered_plan, push_key, sort_walk};
use crate::search::query::{Sort, SortKey, Table};
use sqlx::{Database, Encode, QueryBuilder, Type};

impl Compiler {
    /// One page: `SELECT rt, id, k0, k1… ORDER BY keys, rt, id LIMIT n`.
    pub(in crate::store) fn page<DB>(&mut self, spec: &SearchSpec<'_>) -> QueryBuilder<DB>
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
    pub(in crate::store) fn page_with<DB>(
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
            self.keyset(qb, rest, values.get(1..).unwrap_or_default());
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
                    table_name(*table)
                ));
                qb.push_bind(param.clone());
                qb.push(")");
            }
        }
    }
}

/// The hits of a page query's rows (see [`Compiler::page`]).
pub(in crate::store) fn hits_from_rows<R>(
    rows: &[R],
    spec: &SearchSpec<'_>,
) -> crate::store::StoreResult<Vec<Hit>>
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
    let get = |e: sqlx::Error| crate::store::StoreError::Internal(e.to_string());
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
