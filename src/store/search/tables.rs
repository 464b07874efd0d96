//! The index tables by name: the SQL table each [`Table`] of the query tree is stored in, and
//! which (resource_type, id, param) owner index a per-row probe must read through. The
//! search layer names tables only abstractly; their SQL names live here, in store/.

use super::Compiler;
use crate::search::query::Table;

/// The SQL table holding a [`Table`]'s index rows.
pub(super) fn table_name(table: Table) -> &'static str {
    match table {
        Table::String => "search_string",
        Table::Token => "resource_token",
        Table::Reference => "resource_reference",
        Table::Date => "search_date",
        Table::Number => "search_number",
        Table::Quantity => "search_quantity",
        Table::Uri => "search_uri",
    }
}

impl Compiler {
    /// `table`, read through its (resource_type, id, param) index in a probe. SQLite has no
    /// statistics and would otherwise pick the value index (more equality columns), walking
    /// every row of a value for each probed resource.
    pub(super) fn owner_indexed(&self, table: &str, alias: &str) -> String {
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
}
