//! HL7 v2, pure (no I/O): ER7 parsing ([`er7`]), message-structure grammars and matching
//! ([`grammar`]), v2 timestamps as FHIR ones ([`dtm`]) and acknowledgements ([`ack`]).
//! The feeds layer reads the structures and maps from mappings/ and does the I/O.

pub mod ack;
pub mod dtm;
pub mod er7;
pub mod grammar;
