//! L1: the finance rules, pure and exact (no I/O, no HTTP, no SQL): amortization of deferred
//! payments in integer minor units. The operations that use them live in
//! `interaction/operation/` (so every call meets the Guard), their ledger rows in `store/`.
//! See docs/finance.md.

pub mod adjudicate;
pub mod amortize;
pub mod artifacts;
pub mod catalog;
pub mod deferred;
pub mod products;
