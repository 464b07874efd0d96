//! L1: search. The parameter registry (from fhir-profiles/), index-row extraction by FHIRPath,
//! query parsing into a [`query::SearchQuery`] the store compiles to SQL, and the value
//! normalizations both sides share (dates as ranges, folded strings, UCUM base units).

pub mod criteria;
pub mod dates;
pub mod index;
pub mod matching;
pub mod parameters;
pub mod presence;
pub mod query;
pub mod text;
pub mod ucum;
