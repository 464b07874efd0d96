//! The conformance suite: black-box tests of the real server on real databases (SQLite
//! always, PostgreSQL when HEALPORIUM_TEST_DATABASE_URL is set), plus the checks that keep
//! the code base honest (architecture, generated tables).

// test code: a failed expectation is a failed test (see .clippy.toml)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

mod common;

mod access;
mod access_matrix;
mod access_tokens;
mod architecture;
mod audit;
mod bulk;
mod bundles;
mod capabilities;
mod cli;
mod concurrency;
mod conditional;
mod corpus;
mod errors;
mod examples;
mod feeds;
mod fhirpath_suite;
mod finance;
mod history;
mod hl7v2_samples;
mod hostile;
mod jobs;
mod openapi;
mod operations;
mod patch;
mod profiles;
mod rest;
mod scheduling;
mod search;
mod sign_in;
mod smart;
mod smart_cli;
mod subscriptions;
mod synthea;
mod validator_cases;
mod validator_examples;
mod web;
mod web_browser;
