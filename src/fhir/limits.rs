//! What one request may ask of the server: the limits that keep a hostile or careless
//! request from taking the whole machine. Each over-limit request is refused with an
//! OperationOutcome that names the limit (`serve --help` lists the flags that set them).

use super::outcome::{ErrorKind, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Query parameters in one search (filters and result parameters together).
    pub search_params: usize,
    /// Comma-separated (OR'ed) values in one search parameter.
    pub or_values: usize,
    /// Keys in `_sort`.
    pub sort_keys: usize,
    /// Chain links and `_has` levels in one parameter (`subject:Patient.name` is 1).
    pub chain_depth: usize,
    /// `_include` and `_revinclude` parameters in one search.
    pub includes: usize,
    /// Resources `_include`/`_revinclude` may add to one page.
    pub included: usize,
    /// Entries in one batch or transaction Bundle.
    pub bundle_entries: usize,
    /// Operations in one JSON Patch or FHIRPath Patch.
    pub patch_operations: usize,
    /// The largest resource (serialized bytes) a write or a patch may produce.
    pub resource_bytes: usize,
    /// Database time one statement may take before it is cancelled (milliseconds).
    pub statement_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            search_params: 50,
            or_values: 100,
            sort_keys: 5,
            chain_depth: 3,
            includes: 10,
            included: 1000,
            bundle_entries: 10_000,
            patch_operations: 100,
            resource_bytes: 16 * 1024 * 1024,
            statement_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    /// The refusal of a request over limit `name` (the flag's name without `--max-`).
    pub fn exceeded(name: &str, limit: usize, what: &str) -> Outcome {
        Outcome::new(
            ErrorKind::TooCostly,
            format!("{what} exceeds the server's limit of {limit} (limit '{name}')"),
        )
    }

    /// The refusal of a request whose result would be larger than `resource_bytes`.
    pub fn too_large(&self, what: &str) -> Outcome {
        Outcome::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "{what} would be larger than the server's limit of {} bytes (limit 'resource-bytes')",
                self.resource_bytes
            ),
        )
    }
}
