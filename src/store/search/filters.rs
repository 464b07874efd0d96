//! Writes filters as SQL: each becomes an IN subquery against its index table (the value
//! index finds the matches) or, probed, an EXISTS per row through the owner index; chains,
//! `_has`, lists and compartments nest the same shape against `resource_reference`.

use super::tables::table_name;
use super::{Compiler, Form, MAX_CHAR, Scope};
use crate::search::index::{index_key, index_prefix};
use crate::search::query::{Filter, Owners, Pred, Prefix, StrMatch, Table};
use sqlx::{Database, Encode, QueryBuilder, Type};

impl Compiler {
    /// `SELECT … FROM resource r WHERE <types> AND live AND <filters>` (no keys, no order);
    /// `forms` (one per filter, or empty: all [`Form::In`]) say how each filter is written.
    pub(super) fn push_base<DB>(
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
        let order = filters
            .iter()
            .enumerate()
            .filter(|&(i, _)| form(i) != Form::Probe)
            .chain(
                filters
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| form(i) == Form::Probe),
            );
        for (i, f) in order {
            qb.push(" AND ");
            self.probe = form(i) == Form::Probe;
            self.filter(qb, f, scope, "r.resource_type", "r.id");
            self.probe = false;
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

    pub(super) fn filter<DB>(
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
                    self.member(qb, scope, tcol, icol, table_name(*table), &a);
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
                    self.member(qb, scope, tcol, icol, table_name(*table), &a);
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
                    let (Some(first), Some(first_pred)) = (aliases.first(), preds.first()) else {
                        qb.push("1 = 0");
                        continue;
                    };
                    let mut from = if self.probe {
                        self.owner_indexed(table_name(first_pred.table()), first)
                    } else {
                        format!("{} {first}", table_name(first_pred.table()))
                    };
                    for (p, a) in preds.iter().zip(&aliases).skip(1) {
                        from.push_str(&format!(
                            " JOIN {} {a} ON {a}.resource_type = {first}.resource_type AND \
                             {a}.id = {first}.id AND {a}.grp = {first}.grp",
                            table_name(p.table())
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

    pub(super) fn pred<DB>(&mut self, qb: &mut QueryBuilder<DB>, p: &Pred, a: &str)
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

/// R4 date prefixes over inclusive ranges: the row [low, high] against the search [sl, sh].
pub(super) fn date_pred<DB>(
    qb: &mut QueryBuilder<DB>,
    p: Prefix,
    sl: i64,
    sh: i64,
    low: &str,
    high: &str,
) where
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
