//! The finance day job: for a date, on every active credit line, posts each APR draw's
//! interest for every installment due by then (on the principal actually owed, half-up), a
//! late fee for every installment still unpaid after the grace period, and marks those
//! installments missed. Idempotent: each posting is a recorded command (`day:<line>`,
//! `interest:<draw>:<n>` / `late:<draw>:<n>`), so running a day twice, or catching up on
//! several at once, posts each thing once. Runs as the periodic job `finance-day` and as
//! `healporium finance run-day --date …`.

use super::command;
use super::credit_draw::{apr_of, principal_events, promo_end_of};
use super::credit_payment::{receivable_parts, reproject, terms_of};
use crate::fhir::money::Money;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::Instant;
use crate::interaction::reader::Src;
use crate::interaction::{Context, integrity};
use crate::store::ledger::{NewEntry, Posting};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

/// Days after a due date before an unpaid installment is missed and charged the late fee.
pub const GRACE_DAYS: i64 = 10;
/// The late fee of the default product, in minor units (15.00 USD).
pub const LATE_FEE_MINOR: i64 = 1_500;

/// What a day's run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DayReport {
    pub lines: usize,
    pub interest_postings: usize,
    pub late_fees: usize,
    pub statements: usize,
}

/// The day of the month a line's statements are cut (`credit-line`'s `cycleDay`).
fn cycle_day_of(fin: &crate::finance::catalog::Catalog, line: &Value) -> Option<i8> {
    fin.extension_part(line, "credit-line", "cycleDay", "valueInteger")?
        .as_i64()
        .and_then(|d| i8::try_from(d).ok())
}

/// (number, due date, net in minor units) of each installment of a terms Contract.
fn installments(contract: &Value) -> Vec<(u32, jiff::civil::Date, i64)> {
    contract
        .pointer("/term/0/asset/0/valuedItem")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(n, item)| {
            let due = item
                .get("paymentDate")?
                .as_str()?
                .parse::<jiff::civil::Date>()
                .ok()?;
            let net = Money::parse(item.get("net")?).ok()?.minor_units().ok()?;
            Some((u32::try_from(n + 1).ok()?, due, net))
        })
        .collect()
}

/// Runs the finance day `date` on every active credit line.
pub async fn run_day(
    ctx: &Context,
    base: &str,
    date: jiff::civil::Date,
) -> Result<DayReport, Outcome> {
    use crate::search::query::{Filter, Pred};
    let token = |param: &str, system: Option<String>, code: &str| Filter::Param {
        param: param.to_string(),
        preds: vec![Pred::Token {
            system: system.map(Some),
            code: Some(code.to_string()),
        }],
        negate: false,
    };
    let criteria = [
        token(
            "type",
            Some(ctx.finance.system("account-type")),
            "credit-line",
        ),
        token("status", None, "active"),
    ];
    let lines = Src::Store(ctx.store.as_ref())
        .find("Account", &criteria, 100_000)
        .await?;
    let mut report = DayReport::default();
    for line_id in lines {
        run_line(ctx, base, &line_id, date, &mut report).await?;
        // the statement cut, on the line's cycle day (once per date, like `$statement`)
        let line = ctx
            .store
            .read("Account", &line_id)
            .await?
            .and_then(|v| v.body)
            .and_then(|b| serde_json::from_str::<Value>(&b).ok());
        if line.as_ref().and_then(|l| cycle_day_of(&ctx.finance, l)) == Some(date.day()) {
            super::credit_statement::cut(ctx, base, &line_id, date).await?;
            report.statements += 1;
        }
        report.lines += 1;
    }
    Ok(report)
}

async fn run_line(
    ctx: &Context,
    base: &str,
    line_id: &str,
    date: jiff::civil::Date,
    report: &mut DayReport,
) -> Result<(), Outcome> {
    let mut s = command::session(ctx, base).await?;
    s.tx().lock_key(&format!("book:{line_id}")).await?;
    let Some(line) = s
        .tx()
        .current("Account", line_id)
        .await?
        .and_then(|v| v.body)
        .and_then(|b| serde_json::from_str::<Value>(&b).ok())
    else {
        return Ok(());
    };
    let Some((currency, _)) = super::credit_draw::credit_line_of(&ctx.finance, &line) else {
        return Ok(());
    };
    let scope = format!("day:{line_id}");
    let entries = s.tx().ledger().entries(line_id).await?;
    let mut draws: Vec<String> = Vec::new();
    for e in &entries {
        for p in &e.postings {
            if let Some((d, _)) = receivable_parts(&p.account)
                && !draws.iter().any(|x| x == d)
            {
                draws.push(d.to_string());
            }
        }
    }
    let now = Instant::now();
    let mut touched = Vec::new();
    for draw in &draws {
        let Some(account) = s
            .tx()
            .current("Account", draw)
            .await?
            .and_then(|v| v.body)
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        else {
            continue;
        };
        let Some(terms) = terms_of(&ctx.finance, &account) else {
            continue;
        };
        let Some(contract) = s
            .tx()
            .current("Contract", &terms)
            .await?
            .and_then(|v| v.body)
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        else {
            continue;
        };
        let apr = apr_of(&ctx.finance, &account);
        let promo_end = promo_end_of(&ctx.finance, &account);
        let mut changed = false;
        // a deferred-interest draw at its promotion's end: waived when paid off, else the
        // whole shadow interest is assessed
        if let Some(end) = promo_end
            && end <= date
        {
            let key = format!("promo:{draw}");
            if s.tx().ledger().command(&scope, &key).await?.is_none() {
                let entries = s.tx().ledger().entries(line_id).await?;
                let assessed =
                    crate::finance::deferred::assess(&principal_events(&entries, draw), apr, end);
                if assessed > 0 {
                    post(
                        &mut s,
                        line_id,
                        "interest",
                        &key,
                        date,
                        now,
                        vec![
                            (format!("receivable:{draw}:interest"), assessed),
                            ("income:interest".into(), -assessed),
                        ],
                        currency.code(),
                    )
                    .await?;
                    report.interest_postings += 1;
                    changed = true;
                }
                s.tx()
                    .ledger()
                    .record_command(&scope, &key, "", "{}", now.millis())
                    .await?;
            }
        }
        let mut due_so_far = 0i64;
        for (number, due, net) in installments(&contract) {
            due_so_far += net;
            if due > date {
                break;
            }
            let balances = s
                .tx()
                .ledger()
                .balances(line_id, &format!("receivable:{draw}:"))
                .await?;
            let owed = |kind: &str| -> i64 {
                balances
                    .iter()
                    .filter(|(a, c, _)| {
                        *a == format!("receivable:{draw}:{kind}") && c == currency.code()
                    })
                    .map(|(_, _, n)| n)
                    .sum()
            };
            // the period's interest on the principal actually owed
            let key = format!("interest:{draw}:{number}");
            // (a deferred-interest draw charges no interest per period: see above)
            if !apr.is_zero()
                && promo_end.is_none()
                && s.tx().ledger().command(&scope, &key).await?.is_none()
            {
                let interest = (Decimal::from(owed("principal")) * apr / Decimal::from(1200))
                    .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
                    .to_i64()
                    .unwrap_or(0);
                if interest > 0 {
                    post(
                        &mut s,
                        line_id,
                        "interest",
                        &key,
                        date,
                        now,
                        vec![
                            (format!("receivable:{draw}:interest"), interest),
                            ("income:interest".into(), -interest),
                        ],
                        currency.code(),
                    )
                    .await?;
                    report.interest_postings += 1;
                    changed = true;
                }
                s.tx()
                    .ledger()
                    .record_command(&scope, &key, "", "{}", now.millis())
                    .await?;
            }
            // an installment still unpaid after the grace period: missed, with the late fee
            let late_key = format!("late:{draw}:{number}");
            let past_grace = date
                > due
                    .checked_add(jiff::Span::new().days(GRACE_DAYS))
                    .unwrap_or(due);
            if past_grace && s.tx().ledger().command(&scope, &late_key).await?.is_none() {
                // what was charged toward installments through this one, against what is paid
                let entries = s.tx().ledger().entries(line_id).await?;
                let installment_account = |a: &str| {
                    a == format!("receivable:{draw}:principal")
                        || a == format!("receivable:{draw}:interest")
                };
                let charged: i64 = entries
                    .iter()
                    .filter(|e| matches!(e.kind.as_str(), "draw" | "interest"))
                    .flat_map(|e| e.postings.iter())
                    .filter(|p| installment_account(&p.account))
                    .map(|p| p.amount)
                    .sum();
                let paid = charged - owed("principal") - owed("interest");
                if paid < due_so_far.min(charged) && owed("principal") + owed("interest") > 0 {
                    post(
                        &mut s,
                        line_id,
                        "fee",
                        &late_key,
                        date,
                        now,
                        vec![
                            (format!("receivable:{draw}:fees"), LATE_FEE_MINOR),
                            ("income:fees".into(), -LATE_FEE_MINOR),
                        ],
                        currency.code(),
                    )
                    .await?;
                    report.late_fees += 1;
                    changed = true;
                }
                s.tx()
                    .ledger()
                    .record_command(&scope, &late_key, "", "{}", now.millis())
                    .await?;
            }
        }
        if changed {
            touched.push(draw.clone());
        }
    }
    let missed_before = date.checked_sub(jiff::Span::new().days(GRACE_DAYS)).ok();
    let book = super::credit_payment::Book {
        id: line_id,
        line,
        currency,
    };
    reproject(ctx, &mut s, book, now, &touched, missed_before).await?;
    integrity::finish(s).await
}

#[allow(clippy::too_many_arguments)] // one posting's facts, named at the call
async fn post(
    s: &mut crate::interaction::session::Session,
    line_id: &str,
    kind: &str,
    key: &str,
    date: jiff::civil::Date,
    now: Instant,
    postings: Vec<(String, i64)>,
    currency: &str,
) -> Result<(), Outcome> {
    s.tx()
        .ledger()
        .post(&NewEntry {
            book: line_id.to_string(),
            kind: kind.to_string(),
            request_id: key.to_string(),
            effective: date.to_string(),
            created: now.millis(),
            reverses: None,
            memo: None,
            postings: postings
                .into_iter()
                .map(|(account, amount)| Posting {
                    account,
                    currency: currency.to_string(),
                    amount,
                })
                .collect(),
        })
        .await?;
    Ok(())
}
