//! Ordered pages ([`Form::Ordered`]): a page without `_sort` driven by one filter in its own
//! index order — a string prefix, or a chain over one — so the walk stops after `limit` hits
//! and a broad prefix costs the page, not the matches.

use super::keys::Comp;
use super::{Compiler, Form, KeyValue, MAX_CHAR, Scope, SearchSpec, push_key};
use crate::search::query::{Filter, Pred, StrMatch};
use sqlx::{Database, Encode, QueryBuilder, Type};

/// The shape of a filter that can drive a page in its own index order.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum Drive<'a> {
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
pub(in crate::store) fn ordered_drive(f: &Filter) -> Option<Drive<'_>> {
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

/// The driver of an ordered page (filter index and shape), when `spec` asks for one and can
/// have it: one type, no `_sort`, an orderable filter in [`Form::Ordered`].
pub(in crate::store) fn ordered_plan<'a>(spec: &SearchSpec<'a>) -> Option<(usize, Drive<'a>)> {
    if spec.types.len() != 1 || !spec.sort.is_empty() {
        return None;
    }
    let i = spec.forms.iter().position(|f| *f == Form::Ordered)?;
    spec.filters.get(i).and_then(ordered_drive).map(|d| (i, d))
}

impl Compiler {
    /// A page in the order of filter `driver`'s index ([`Form::Ordered`]): the driver's rows
    /// are walked in (norm, id) order — for a chain, the targets', then each target's
    /// referrers by id — and the walk stops after `limit` hits. A resource with several
    /// matching rows is kept at its first (smallest) key only, so it appears once and at the
    /// same place on every page. The other filters are written as `spec.forms` say.
    pub(super) fn page_ordered<DB>(
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
            self.ordered_keyset(qb, rest, values.get(1..).unwrap_or_default());
            qb.push(")");
        }
        qb.push(")");
    }
}
