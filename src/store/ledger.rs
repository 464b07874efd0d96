//! The ledger's tables (migrations `*_ledger.sql`): an append-only double-entry journal in
//! integer minor units, and the finance commands' idempotency records. Postings are written
//! inside a write's transaction ([`LedgerTx`]), so an entry commits with the FHIR resources
//! that project it or not at all; [`LedgerStore`] reads and verifies on the pool.
//!
//! An entry's postings go in first and the entry row last: the database's insert trigger
//! refuses an entry that does not balance per currency, and a posting for an entry already
//! posted. Nothing is ever updated or deleted (triggers again).

use super::{StoreResult, map_err};
use async_trait::async_trait;
use sqlx::{Pool, Postgres, Sqlite};

/// One line of an entry: `amount` minor units of `currency` on `account`, debit positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: String,
    pub currency: String,
    pub amount: i64,
}

/// An entry to post.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The book it belongs to: the credit line's Account id.
    pub book: String,
    /// `draw`, `payment`, `reversal`, `interest`, `fee`, …
    pub kind: String,
    pub request_id: String,
    /// The accounting date, `YYYY-MM-DD`.
    pub effective: String,
    pub created: i64,
    /// The entry this one mirrors.
    pub reverses: Option<i64>,
    pub memo: Option<String>,
    pub postings: Vec<Posting>,
}

/// A posted entry with its postings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub id: i64,
    pub book: String,
    pub kind: String,
    pub request_id: String,
    pub effective: String,
    pub created: i64,
    pub reverses: Option<i64>,
    pub memo: Option<String>,
    pub postings: Vec<Posting>,
}

/// A stored finance command, for replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    pub fingerprint: String,
    /// The result as it was answered (JSON text).
    pub result: String,
}

/// What `finance verify` finds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub entries: i64,
    pub postings: i64,
    /// The first entry (by id) that does not balance, with why.
    pub first_bad: Option<(i64, String)>,
    /// Per currency, the sum of every posting: zero in a sound ledger.
    pub trial_balance: Vec<(String, i64)>,
}

impl Verification {
    pub fn is_sound(&self) -> bool {
        self.first_bad.is_none() && self.trial_balance.iter().all(|(_, s)| *s == 0)
    }
}

/// Why an entry cannot be posted, before the database is asked.
pub fn check_balanced(entry: &NewEntry) -> Result<(), String> {
    if entry.postings.len() < 2 {
        return Err("an entry needs at least two postings".into());
    }
    if entry.postings.iter().any(|p| p.amount == 0) {
        return Err("a posting of zero".into());
    }
    let mut sums: std::collections::BTreeMap<&str, i128> = Default::default();
    for p in &entry.postings {
        *sums.entry(p.currency.as_str()).or_default() += i128::from(p.amount);
    }
    match sums.iter().find(|(_, s)| **s != 0) {
        Some((c, s)) => Err(format!("the {c} postings sum to {s}, not zero")),
        None => Ok(()),
    }
}

/// The ledger inside a write transaction (callers lock the book first: `lock_key("book:…")`).
#[async_trait]
pub trait LedgerTx: Send {
    /// Posts a balanced entry; its id.
    async fn post(&mut self, entry: &NewEntry) -> StoreResult<i64>;
    /// Per (account, currency), the balance of every account of `book` whose name starts
    /// with `prefix`.
    async fn balances(
        &mut self,
        book: &str,
        prefix: &str,
    ) -> StoreResult<Vec<(String, String, i64)>>;
    /// The entries of a book, oldest first.
    async fn entries(&mut self, book: &str) -> StoreResult<Vec<EntryRow>>;
    /// A command recorded under (scope, request id).
    async fn command(&mut self, scope: &str, request_id: &str) -> StoreResult<Option<CommandRow>>;
    /// Records a command's result; false when one exists already.
    async fn record_command(
        &mut self,
        scope: &str,
        request_id: &str,
        fingerprint: &str,
        result: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// What a coverage's member has met in a plan year: (deductible, out of pocket).
    async fn accumulated(&mut self, coverage: &str, plan_year: &str) -> StoreResult<(i64, i64)>;
    /// Sets what a coverage's member has met in a plan year (callers hold the coverage's lock).
    async fn set_accumulated(
        &mut self,
        coverage: &str,
        plan_year: &str,
        met: (i64, i64),
        now: i64,
    ) -> StoreResult<()>;
}

/// The ledger outside write transactions.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Checks every entry and the trial balance.
    async fn verify(&self) -> StoreResult<Verification>;
    /// The entries of a book, oldest first.
    async fn entries(&self, book: &str) -> StoreResult<Vec<EntryRow>>;
}

pub(super) struct LedgerSql<DB: sqlx::Database> {
    pub read: Pool<DB>,
}

type EntryTuple = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
);

fn entry_from(t: EntryTuple, postings: Vec<Posting>) -> EntryRow {
    let (id, book, kind, request_id, effective, created, reverses, memo) = t;
    EntryRow {
        id,
        book,
        kind,
        request_id,
        effective,
        created,
        reverses,
        memo,
        postings,
    }
}

/// The SQL shared by [`LedgerTx`] and [`LedgerStore`] for one executor.
macro_rules! ledger_reads {
    ($db:ty) => {
        impl LedgerSql<$db> {
            pub(in crate::store) async fn entries_on<'e, E>(exec: E, book: &str) -> StoreResult<Vec<EntryRow>>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let rows: Vec<(EntryTuple, (String, String, i64))> = sqlx::query_as::<
                    _,
                    (
                        i64,
                        String,
                        String,
                        String,
                        String,
                        i64,
                        Option<i64>,
                        Option<String>,
                        String,
                        String,
                        i64,
                    ),
                >(
                    "SELECT e.id, e.book, e.kind, e.request_id, e.effective, e.created, \
                     e.reverses, e.memo, p.account, p.currency, p.amount \
                     FROM ledger_entry e JOIN ledger_posting p ON p.entry = e.id \
                     WHERE e.book = $1 ORDER BY e.id, p.seq",
                )
                .bind(book)
                .fetch_all(exec)
                .await
                .map_err(map_err)?
                .into_iter()
                .map(|(id, bk, kind, rq, eff, cr, rev, memo, acc, cur, amt)| {
                    ((id, bk, kind, rq, eff, cr, rev, memo), (acc, cur, amt))
                })
                .collect();
                let mut out: Vec<EntryRow> = Vec::new();
                for (t, (account, currency, amount)) in rows {
                    let posting = Posting {
                        account,
                        currency,
                        amount,
                    };
                    match out.last_mut() {
                        Some(last) if last.id == t.0 => last.postings.push(posting),
                        _ => out.push(entry_from(t, vec![posting])),
                    }
                }
                Ok(out)
            }
        }

        #[async_trait]
        impl LedgerStore for LedgerSql<$db> {
            async fn verify(&self) -> StoreResult<Verification> {
                let (entries, postings): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM ledger_entry), \
                     (SELECT count(*) FROM ledger_posting)",
                )
                .fetch_one(&self.read)
                .await
                .map_err(map_err)?;
                // an entry whose postings do not sum to zero per currency, or that has fewer
                // than two; a posting whose entry was never posted
                let unbalanced: Option<(i64, String)> = sqlx::query_as(
                    "SELECT id, why FROM ( \
                       SELECT p.entry AS id, 'its ' || p.currency || ' postings sum to ' \
                         || CAST(sum(p.amount) AS TEXT) AS why FROM ledger_posting p \
                         GROUP BY p.entry, p.currency HAVING sum(p.amount) <> 0 \
                       UNION ALL \
                       SELECT e.id, 'it has fewer than two postings' FROM ledger_entry e \
                         WHERE (SELECT count(*) FROM ledger_posting p WHERE p.entry = e.id) < 2 \
                       UNION ALL \
                       SELECT p.entry, 'its postings have no entry' FROM ledger_posting p \
                         WHERE NOT EXISTS (SELECT 1 FROM ledger_entry e WHERE e.id = p.entry) \
                     ) bad ORDER BY id LIMIT 1",
                )
                .fetch_optional(&self.read)
                .await
                .map_err(map_err)?;
                let trial_balance: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT currency, CAST(sum(amount) AS BIGINT) FROM ledger_posting \
                     GROUP BY currency ORDER BY currency",
                )
                .fetch_all(&self.read)
                .await
                .map_err(map_err)?;
                Ok(Verification {
                    entries,
                    postings,
                    first_bad: unbalanced,
                    trial_balance,
                })
            }

            async fn entries(&self, book: &str) -> StoreResult<Vec<EntryRow>> {
                Self::entries_on(&self.read, book).await
            }
        }
    };
}

ledger_reads!(Sqlite);
ledger_reads!(Postgres);

/// [`LedgerTx`] for a transaction type of dialect `$db`; `$next_id` is the SQL of the next
/// entry id (read under the book's lock and the transaction's write lock).
macro_rules! ledger_tx_impl {
    ($tx:ty, $db:ty, $next_id:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::ledger::LedgerTx for $tx {
            async fn post(&mut self, entry: &$crate::store::ledger::NewEntry) -> $crate::store::StoreResult<i64> {
                $crate::store::ledger::check_balanced(entry)
                    .map_err($crate::store::StoreError::Internal)?;
                let id: i64 = sqlx::query_scalar($next_id)
                    .fetch_one(&mut *self.tx)
                    .await
                    .map_err($crate::store::map_err)?;
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO ledger_posting (entry, seq, account, currency, amount) ",
                );
                qb.push_values(entry.postings.iter().enumerate(), |mut row, (seq, p)| {
                    row.push_bind(id)
                        .push_bind(i64::try_from(seq).unwrap_or(i64::MAX))
                        .push_bind(p.account.clone())
                        .push_bind(p.currency.clone())
                        .push_bind(p.amount);
                });
                qb.build().execute(&mut *self.tx).await.map_err($crate::store::map_err)?;
                sqlx::query::<$db>(
                    "INSERT INTO ledger_entry (id, book, kind, request_id, effective, created, \
                     reverses, memo) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(id)
                .bind(&entry.book)
                .bind(&entry.kind)
                .bind(&entry.request_id)
                .bind(&entry.effective)
                .bind(entry.created)
                .bind(entry.reverses)
                .bind(&entry.memo)
                .execute(&mut *self.tx)
                .await
                .map_err($crate::store::map_err)?;
                Ok(id)
            }

            async fn balances(
                &mut self,
                book: &str,
                prefix: &str,
            ) -> $crate::store::StoreResult<Vec<(String, String, i64)>> {
                sqlx::query_as(
                    "SELECT p.account, p.currency, CAST(sum(p.amount) AS BIGINT) \
                     FROM ledger_posting p JOIN ledger_entry e ON e.id = p.entry \
                     WHERE e.book = $1 AND substr(p.account, 1, length($2)) = $2 \
                     GROUP BY p.account, p.currency ORDER BY p.account, p.currency",
                )
                .bind(book)
                .bind(prefix)
                .fetch_all(&mut *self.tx)
                .await
                .map_err($crate::store::map_err)
            }

            async fn entries(&mut self, book: &str) -> $crate::store::StoreResult<Vec<$crate::store::ledger::EntryRow>> {
                $crate::store::ledger::LedgerSql::<$db>::entries_on(&mut *self.tx, book).await
            }

            async fn command(
                &mut self,
                scope: &str,
                request_id: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::ledger::CommandRow>> {
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT fingerprint, result FROM finance_command \
                     WHERE scope = $1 AND request_id = $2",
                )
                .bind(scope)
                .bind(request_id)
                .fetch_optional(&mut *self.tx)
                .await
                .map_err($crate::store::map_err)?;
                Ok(row.map(|(fingerprint, result)| $crate::store::ledger::CommandRow {
                    fingerprint,
                    result,
                }))
            }

            async fn record_command(
                &mut self,
                scope: &str,
                request_id: &str,
                fingerprint: &str,
                result: &str,
                now: i64,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query::<$db>(
                    "INSERT INTO finance_command (scope, request_id, fingerprint, result, created) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, request_id) DO NOTHING",
                )
                .bind(scope)
                .bind(request_id)
                .bind(fingerprint)
                .bind(result)
                .bind(now)
                .execute(&mut *self.tx)
                .await
                .map_err($crate::store::map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn accumulated(
                &mut self,
                coverage: &str,
                plan_year: &str,
            ) -> $crate::store::StoreResult<(i64, i64)> {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT deductible, out_of_pocket FROM benefit_accumulator \
                     WHERE coverage = $1 AND plan_year = $2",
                )
                .bind(coverage)
                .bind(plan_year)
                .fetch_optional(&mut *self.tx)
                .await
                .map_err($crate::store::map_err)?;
                Ok(row.unwrap_or((0, 0)))
            }

            async fn set_accumulated(
                &mut self,
                coverage: &str,
                plan_year: &str,
                met: (i64, i64),
                now: i64,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO benefit_accumulator \
                     (coverage, plan_year, deductible, out_of_pocket, updated) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (coverage, plan_year) DO UPDATE \
                     SET deductible = excluded.deductible, \
                     out_of_pocket = excluded.out_of_pocket, updated = excluded.updated",
                )
                .bind(coverage)
                .bind(plan_year)
                .bind(met.0)
                .bind(met.1)
                .bind(now)
                .execute(&mut *self.tx)
                .await
                .map_err($crate::store::map_err)?;
                Ok(())
            }
        }
    };
}

pub(super) use ledger_tx_impl;
