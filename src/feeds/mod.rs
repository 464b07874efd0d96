//! Hospital feeds: the mapping set read from mappings/ ([`mapping_set`]) and, on it, the
//! HL7 v2 and CSV imports. Pure HL7 v2 handling lives in [`crate::hl7v2`].

pub mod csv;
pub mod map;
pub mod mapping_set;
pub mod maps;
pub mod mllp;
pub mod runtime;
