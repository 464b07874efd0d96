//! The parsed search query: the filters, sort keys, includes and result parameters that
//! the store compiles to SQL and the matcher evaluates in memory. Pure data: no parsing,
//! no SQL.

use crate::search::parameters::ParamType;

/// The index table a predicate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    String,
    Token,
    Reference,
    Date,
    Number,
    Quantity,
    Uri,
}
impl Table {
    /// The tables a parameter type's rows live in.
    pub fn of(kind: ParamType) -> &'static [Table] {
        match kind {
            ParamType::String => &[Table::String],
            ParamType::Token => &[Table::Token],
            ParamType::Reference => &[Table::Reference, Table::Uri],
            ParamType::Date => &[Table::Date],
            ParamType::Number => &[Table::Number],
            ParamType::Quantity => &[Table::Quantity],
            ParamType::Uri => &[Table::Uri],
            ParamType::Composite | ParamType::Special => &[],
        }
    }
}

/// A comparison prefix (search.html#prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrMatch {
    Starts,
    Exact,
    Contains,
}

/// One value a row must match (its table is implied by the variant).
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    Str(StrMatch, String),
    /// `system`: None any, Some(None) none, Some(Some(s)); `code`: None any.
    Token {
        system: Option<Option<String>>,
        code: Option<String>,
    },
    /// Any of these (system, code) pairs (`:in` a local ValueSet).
    TokenIn(Vec<(Option<String>, String)>),
    Ref {
        target_type: Option<String>,
        id: String,
    },
    Uri(String),
    /// The row's URI starts with this (`:below`).
    UriBelow(String),
    /// The row's URI is a prefix of this (`:above`).
    UriAbove(String),
    /// A search range [low, high] (inclusive, ms).
    Date(Prefix, i64, i64),
    /// value with its implicit precision range [low, high).
    Number(Prefix, f64, f64, f64),
    Quantity {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
        /// Compare the UCUM-normalized columns.
        canonical: bool,
    },
}

impl Pred {
    pub fn table(&self) -> Table {
        match self {
            Pred::Str(..) => Table::String,
            Pred::Token { .. } | Pred::TokenIn(_) => Table::Token,
            Pred::Ref { .. } => Table::Reference,
            Pred::Uri(_) | Pred::UriBelow(_) | Pred::UriAbove(_) => Table::Uri,
            Pred::Date(..) => Table::Date,
            Pred::Number(..) => Table::Number,
            Pred::Quantity { .. } => Table::Quantity,
        }
    }
}

/// A condition on resources of the type(s) being searched.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `_id` (ORed values); negated with `:not`.
    Id { ids: Vec<String>, negate: bool },
    /// `_lastUpdated` ranges, ORed.
    LastUpdated(Vec<Pred>),
    /// Rows of `param` matching any of `preds`; `negate`: no row matches (`:not`).
    Param {
        param: String,
        preds: Vec<Pred>,
        negate: bool,
    },
    /// `:missing`: whether any row of `param` exists in `tables`.
    Missing {
        param: String,
        tables: Vec<Table>,
        missing: bool,
    },
    /// Any value of the composite matches all component predicates (values ORed).
    Composite {
        param: String,
        values: Vec<Vec<Pred>>,
    },
    /// A reference parameter whose target (of one of the types) matches a filter.
    Chain {
        param: String,
        targets: Vec<(String, Box<Filter>)>,
    },
    /// `_has`: some `source_type` resource referencing this one through `param` matches.
    Has {
        source_type: String,
        param: String,
        filter: Box<Filter>,
    },
    /// `_list`: the resource is an item of List `id`.
    List(String),
    /// The row is of one of these types.
    OfType(Vec<String>),
    /// Any of the alternatives holds, each a list of filters that must all hold (v2 scope
    /// restrictions such as `Observation.rs?category=laboratory`).
    Any(Vec<Vec<Filter>>),
    /// In the compartment of an owner (or of any owner matching a filter): per resource
    /// type, referencing it by one of the type's compartment parameters (and the owner
    /// itself).
    Compartment {
        owner_type: String,
        owners: Owners,
        params: Vec<(String, Vec<String>)>,
    },
}

/// Whose compartment a [`Filter::Compartment`] is.
#[derive(Debug, Clone, PartialEq)]
pub enum Owners {
    /// One resource (`Patient/123/*`, a patient-context token).
    Id(String),
    /// Every resource of the owner type matching the filter (the patients a practitioner has
    /// a care relationship with).
    Matching(Box<Filter>),
}

/// What a sort key reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    Id,
    LastUpdated,
    Param { param: String, table: Table },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub desc: bool,
}

/// `_include` / `_revinclude`: `source_type:param[:target_type]` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub source_type: String,
    /// None: every reference parameter (`*`).
    pub param: Option<String>,
    pub target_type: Option<String>,
    pub iterate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Total {
    None,
    Estimate,
    #[default]
    Accurate,
}

/// The largest page a client may ask for.
pub const MAX_COUNT: u32 = 1000;

/// The page size when `_count` is absent.
pub const DEFAULT_COUNT: u32 = 20;

#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// The types searched (one for a type search; several or all for a system search).
    pub types: Vec<String>,
    pub filters: Vec<Filter>,
    pub sort: Vec<Sort>,
    pub count: Option<u32>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
    pub total: Total,
    /// Parameters ignored (lenient handling), with why.
    pub warnings: Vec<String>,
    /// The parameters that were used, in order, for the self link.
    pub used: Vec<(String, String)>,
    /// Parameters (type, code) the query filters or sorts on.
    pub params_used: Vec<(String, String)>,
}
