//! Parses a FHIR search query string into a [`SearchQuery`]: filters (ANDed across
//! parameters, ORed within one), chains, `_has`, sort keys, includes and the result
//! parameters. Parameter definitions come from the registry, never from a list in code.
//! Unknown parameters are dropped with a warning (or rejected when `strict`); an unknown
//! modifier or a malformed value is always an error.
//!
//! `tree` holds the parsed query (what the store compiles and the matcher evaluates),
//! `parser` turns `name=value` pairs into it, and `values` parses the values themselves
//! (tokens, references, dates, numbers, quantities, escapes).

mod parser;
mod tree;
mod values;

use crate::fhir::outcome::Outcome;

pub use parser::{parse, parse_at, parse_limited};
pub use tree::{
    DEFAULT_COUNT, Filter, Include, MAX_COUNT, Owners, Pred, Prefix, SearchQuery, Sort, SortKey,
    StrMatch, Summary, Table, Total,
};
pub use values::{split, token_pred};

fn bad(msg: impl Into<String>) -> Outcome {
    Outcome::bad_request(msg)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}
