//! L1: search basics. For now: parsing the criteria of conditional interactions (`_id` and
//! `identifier`) and extracting the identifier index rows they query. The search feature
//! replaces both with SearchParameter-driven parsing and FHIRPath extraction.

pub mod criteria;
pub mod index;
pub mod parameters;
