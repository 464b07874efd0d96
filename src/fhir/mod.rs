//! L0: pure FHIR R4 basics — ids and instants, the Outcome error type, the definitions
//! registry built from fhir-profiles/, and the validator. No I/O, no HTTP, no SQL.

pub mod definitions;
pub mod json;
pub mod limits;
pub mod money;
pub mod narrative;
pub mod outcome;
pub mod references;
pub mod resource;
pub mod strict;
pub mod types;
pub mod validation;
