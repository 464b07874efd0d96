//! The index tables as the planner needs them: which (resource_type, id, param) owner index
//! a per-row probe must read through.

use super::Compiler;

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
