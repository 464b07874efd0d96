//! `POST|GET [base]/Account/[line]/$payoff`: what pays everything on a credit line as of a
//! date, changing nothing. In `date` (default today, UTC); out `amount`, with `principal`,
//! `interest` and `creditBalance`. What the ledger holds as owed (principal, interest and fees
//! posted), plus the simple daily interest (actual/365) each draw at an APR has accrued since
//! its last posting, rounded half-up once per draw, minus the line's credit balance.

use super::OperationRequest;
use super::command::answer;
use super::credit_payment::receivable_parts;
use super::params::{invalid, string};
use crate::auth::Perm;
use crate::fhir::money::Money;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::Id;
use crate::interaction::{Context, FhirResponse};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

/// Simple interest on `principal` minor units at `apr` percent for `days` (actual/365).
pub fn accrued(principal: i64, apr: Decimal, days: i64) -> i64 {
    if principal <= 0 || days <= 0 || apr.is_zero() {
        return 0;
    }
    (Decimal::from(principal) * apr / Decimal::from(100) * Decimal::from(days) / Decimal::from(365))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(0)
}

pub(super) async fn payoff(
    ctx: &Context,
    _base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let line_id = Id::parse(op.id.as_deref().unwrap_or(""))?;
    let line_id = line_id.as_str();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let date = match string(op, "date")? {
        None => today,
        Some(d) => d
            .parse::<jiff::civil::Date>()
            .map_err(|_| invalid("date", "date must be a date (YYYY-MM-DD)"))?,
    };
    ctx.guard.require(Perm::Read, "Account")?;
    let line = super::credit_draw::read_visible(ctx, "Account", line_id).await?;
    let Some((currency, _)) = super::credit_draw::credit_line_of(&ctx.finance, &line) else {
        return Err(invalid(
            "date",
            format!("Account/{line_id} is not a credit line"),
        ));
    };
    let entries = ctx.store.ledger().entries(line_id).await?;
    let mut owed: std::collections::BTreeMap<String, (i64, i64, jiff::civil::Date)> =
        Default::default();
    let mut credit = 0i64;
    for e in &entries {
        let effective = e.effective.parse::<jiff::civil::Date>().unwrap_or(today);
        for p in e.postings.iter().filter(|p| p.currency == currency.code()) {
            if p.account == "credit-balance" {
                credit -= p.amount;
            }
            let Some((draw, kind)) = receivable_parts(&p.account) else {
                continue;
            };
            let slot = owed.entry(draw.to_string()).or_insert((0, 0, effective));
            if kind == "principal" {
                slot.0 += p.amount;
            } else {
                slot.1 += p.amount;
            }
            slot.2 = slot.2.max(effective);
        }
    }
    let (mut principal, mut interest) = (0i64, 0i64);
    for (draw, (p, posted, since)) in &owed {
        principal += p;
        interest += posted;
        let apr = match ctx.store.read("Account", draw).await? {
            Some(v) => v
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .map(|b| super::credit_draw::apr_of(&ctx.finance, &b))
                .unwrap_or(Decimal::ZERO),
            None => Decimal::ZERO,
        };
        let days = (date - *since).get_days();
        interest += accrued(*p, apr, i64::from(days));
    }
    let amount = (principal + interest - credit).max(0);
    let m = |n: i64| Money::from_minor_units(n, currency).to_fhir();
    Ok(answer(json!({"resourceType": "Parameters", "parameter": [
        {"name": "amount", "valueMoney": m(amount)},
        {"name": "principal", "valueMoney": m(principal)},
        {"name": "interest", "valueMoney": m(interest)},
        {"name": "creditBalance", "valueMoney": m(credit)},
        {"name": "date", "valueDate": date.to_string()}]})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_daily_interest() {
        // 1,200.00 at 17.90 % for 30 days: 1200 × 0.179 × 30 / 365 = 17.654… → 17.65
        assert_eq!(accrued(120_000, "17.90".parse().unwrap(), 30), 1_765);
        assert_eq!(accrued(120_000, Decimal::ZERO, 30), 0);
        assert_eq!(accrued(120_000, "17.90".parse().unwrap(), 0), 0);
    }
}
