//! Compiles a parsed search ([`Filter`]s, sort keys, a keyset anchor) to one SQL statement
//! both dialects accept. Every filter becomes `id IN (SELECT … FROM <index table> …)`, so the
//! index on (resource_type, param, value) drives it; chains and `_has` nest the same shape
//! against `resource_reference`. Paging is keyset-based on the sort keys plus type and id,
//! so pages stay stable while other clients write.
//!
//! This file holds what the stores use (the spec of a page, its hits, the [`Compiler`]) and
//! the count and id statements; the rest is split by concern: `plan` (how each filter is
//! written, from capped counts), `filters` (the SQL of filters and predicates), `tables`
//! (the index tables' owner indexes), `paging` (the page query, keyset-paged on its sort
//! keys), `ordered` (pages in a driving filter's index order), `walk` (sort walks along a
//! sort parameter's value index) and `include` (`_include` / `_revinclude`).

mod filters;
mod include;
mod keys;
mod ordered;
mod paging;
mod plan;
mod tables;
mod walk;

use crate::search::query::{Filter, Sort};
use sqlx::{Database, Encode, QueryBuilder, Type};

pub(in crate::store) use include::{include_query, revinclude_query};
pub(in crate::store) use ordered::ordered_plan;
pub(in crate::store) use paging::hits_from_rows;
pub(in crate::store) use plan::plan_forms;
pub use plan::{DRIVER_CAP, Form, ORDERED_MIN, choose_forms, choose_plan};
pub(in crate::store) use walk::{sort_walk, walk_sorted};

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

/// Which resources the rows around a filter belong to.
#[derive(Clone, Copy)]
enum Scope<'a> {
    One(&'a str),
    Many,
}

pub(in crate::store) struct Compiler {
    n: u32,
    /// Filters are being written as per-row probes ([`Form::Probe`]), nested ones included.
    probe: bool,
    /// PostgreSQL: text compares and sorts bytewise (`COLLATE "C"`), as SQLite does.
    pg: bool,
    /// The database already orders ids bytewise (SQLite; PostgreSQL with a C collation): ids
    /// sort without a COLLATE clause, so the primary key can deliver them in order.
    c_ids: bool,
}

const MAX_CHAR: char = '\u{10FFFF}';
impl Compiler {
    /// `c_ids`: ids order bytewise without a COLLATE clause (always true for SQLite).
    pub(in crate::store) fn new(pg: bool, c_ids: bool) -> Compiler {
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

    /// `SELECT COUNT(*) …` of a search.
    pub(in crate::store) fn count<DB>(
        &mut self,
        types: &[String],
        filters: &[Filter],
    ) -> QueryBuilder<DB>
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
    pub(in crate::store) fn ids<DB>(
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
