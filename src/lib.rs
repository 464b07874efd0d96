//! Healporium: a FHIR R4 (4.0.1) server.
//!
//! Crate map (mirrors docs/ARCHITECTURE.md); layers only import downwards:
//! - L0 [`fhir`]: ids, instants, Outcome/ErrorKind, the definitions registry, validation;
//!   [`fhirpath`]: FHIRPath lexer, parser, evaluator (and FHIRPath Patch).
//! - L1 [`search`]: the search-parameter registry, query parsing and index-row extraction;
//!   [`auth`]: pure access decisions (principals, SMART scopes, compartments);
//!   [`finance`]: the finance rules (amortization), exact in minor units; [`hl7v2`]: HL7 v2
//!   ER7 parsing, message-structure grammars, timestamps and ACKs (pure).
//! - L2 [`store`]: the only SQL — SQLite and PostgreSQL behind one trait.
//! - L3 [`interaction`]: FHIR REST semantics without HTTP types; [`smart`]: the SMART App
//!   Launch authorization server (clients, users, codes, tokens, keys); [`jobs`]: durable
//!   background jobs (the outbox, workers, periodic schedules); [`feeds`]: hospital feeds on
//!   the mapping set in mappings/.
//! - L4 [`api`]: the axum edge — routes, extractors, the ErrorKind → HTTP table in use;
//!   [`web`]: the web app at `/app/`, a SMART app of this server (askama pages).
//! - [`app`] wires it together ([`demo`] seeds `serve --demo`); [`config`] and [`telemetry`]
//!   serve `main`.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod feeds;
pub mod fhir;
pub mod fhirpath;
pub mod finance;
pub mod hl7v2;
pub mod interaction;
pub mod jobs;
pub mod search;
pub mod smart;
pub mod store;
pub mod telemetry;
pub mod web;
