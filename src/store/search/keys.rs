//! The order of a page: the columns its sort keys yield, their kinds and directions, shared
//! by the page query and the ordered-index plans.

use crate::search::query::{SortKey, Table};

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

/// One component of a page's order.
pub(in crate::store::search) struct Comp {
    pub(in crate::store::search) col: String,
    pub(in crate::store::search) kind: KeyKind,
    pub(in crate::store::search) desc: bool,
    pub(in crate::store::search) nulls_last: bool,
    pub(in crate::store::search) nullable: bool,
    /// A type or id column (ordered by the primary key).
    pub(in crate::store::search) id_like: bool,
}

impl Comp {
    pub(in crate::store::search) fn id(col: &str) -> Comp {
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
