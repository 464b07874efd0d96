//! `POST [base]/Account/[line]/$statement`: the statement of a credit line for the cycle that
//! ends on `date` (default today, UTC), as an Invoice with the `statement` extension: the
//! period (from the day after the previous statement, or the line's opening), the previous and
//! new balance, the minimum due and its due date, and one line item per ledger entry of the
//! period. One statement per line and date: asking again returns the same Invoice.

use super::OperationRequest;
use super::command::{self, answer};
use super::params::{invalid, string};
use crate::auth::{Perm, Role};
use crate::fhir::money::Money;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::{Id, Instant};
use crate::interaction::{Context, FhirResponse, create, integrity};
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};

/// Days from a statement's date to its due date.
pub const DUE_AFTER_DAYS: i64 = 21;

/// What the line owed (receivables minus credit) after the entries before or on `until`.
fn owed_through(entries: &[crate::store::ledger::EntryRow], currency: &str, until: &str) -> i64 {
    entries
        .iter()
        .filter(|e| e.effective.as_str() <= until)
        .flat_map(|e| e.postings.iter())
        .filter(|p| p.currency == currency)
        .filter(|p| p.account.starts_with("receivable:") || p.account == "credit-balance")
        .map(|p| p.amount)
        .sum()
}

/// The last day of the cycle a statement Invoice covers.
fn statement_end(
    fin: &crate::finance::catalog::Catalog,
    invoice: &Value,
) -> Option<jiff::civil::Date> {
    fin.extension_part(invoice, "statement", "period", "valuePeriod")?
        .get("end")?
        .as_str()?
        .parse()
        .ok()
}

pub(super) async fn statement(
    ctx: &Context,
    base: &str,
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
    if date > today {
        return Err(invalid(
            "date",
            "A statement is for a cycle that has ended: date is in the future",
        ));
    }
    cut(ctx, base, line_id, date).await
}

/// The statement of `line_id` for the cycle ending on `date` (the request's, or the finance
/// day's statement cut on the line's cycle day).
pub(super) async fn cut(
    ctx: &Context,
    base: &str,
    line_id: &str,
    date: jiff::civil::Date,
) -> Result<FhirResponse, Outcome> {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    ctx.guard.require(Perm::Read, "Account")?;
    let line = super::credit_draw::read_visible(ctx, "Account", line_id).await?;
    let Some((currency, _)) = super::credit_draw::credit_line_of(&ctx.finance, &line) else {
        return Err(invalid(
            "date",
            format!("Account/{line_id} is not a credit line"),
        ));
    };
    let patient = super::credit_draw::line_patient(&line)?;
    command::authorize(
        ctx,
        "statement",
        Perm::Read,
        &["Account", "Invoice"],
        &[Role::Patient, Role::Practitioner, Role::Admin],
        &patient,
    )
    .await?;
    let mut s = command::session(ctx, base).await?;
    s.tx().lock_key(&format!("book:{line_id}")).await?;
    let scope = format!("statement:Account/{line_id}");
    let key = date.to_string();
    if let Some(done) = s.tx().ledger().command(&scope, &key).await? {
        let stored: Value = serde_json::from_str(&done.result)
            .map_err(|_| Outcome::internal("A stored command result is not JSON"))?;
        return Ok(answer(stored));
    }
    // the cycle starts the day after the latest earlier statement, or when the line opened
    let entries = s.tx().ledger().entries(line_id).await?;
    let opened = line
        .pointer("/servicePeriod/start")
        .and_then(Value::as_str)
        .and_then(|d| d.parse::<jiff::civil::Date>().ok())
        .unwrap_or(today);
    let mut start = opened;
    // earlier statements of the line: the cycle starts the day after the latest one
    let earlier = {
        use crate::search::query::{Filter, Pred};
        let filters = [Filter::Param {
            param: "account".into(),
            preds: vec![Pred::Ref {
                target_type: Some("Account".into()),
                id: line_id.to_string(),
            }],
            negate: false,
        }];
        s.tx().find("Invoice", &filters, 10_000).await?
    };
    for id in earlier {
        let Some(v) = s.tx().current("Invoice", &id).await? else {
            continue;
        };
        let Some(body) = v.body.as_deref() else {
            continue;
        };
        let Ok(inv) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        let end = statement_end(&ctx.finance, &inv);
        if let Some(d) = end
            && d < date
        {
            start = start.max(d.checked_add(jiff::Span::new().days(1)).unwrap_or(d));
        }
    }
    let before = start
        .checked_sub(jiff::Span::new().days(1))
        .unwrap_or(start)
        .to_string();
    let c = currency.code();
    let previous = if start == opened {
        0
    } else {
        owed_through(&entries, c, &before)
    };
    let new_balance = owed_through(&entries, c, &key);
    let m = |n: i64| Money::from_minor_units(n, currency).to_fhir();
    let items: Vec<Value> = entries
        .iter()
        .filter(|e| e.effective.as_str() >= start.to_string().as_str() && e.effective <= key)
        .enumerate()
        .map(|(n, e)| {
            let amount: i64 = e
                .postings
                .iter()
                .filter(|p| p.currency == c)
                .filter(|p| p.account.starts_with("receivable:") || p.account == "credit-balance")
                .map(|p| p.amount)
                .sum();
            json!({
                "sequence": n + 1,
                "chargeItemCodeableConcept": {
                    "coding": [{"system": ctx.finance.system("ledger-entry-kind"),
                        "code": e.kind}],
                    "text": format!("{} {}", e.effective, e.memo.clone().unwrap_or_else(|| e.kind.clone()))},
                "priceComponent": [{"type": "base", "amount": m(amount)}],
            })
        })
        .collect();
    // the minimum due: what is past due and the next installment of each draw, within what
    // is owed
    let mut minimum = 0i64;
    for e in entries.iter().filter(|e| e.kind == "draw") {
        let Some(draw) = e.postings.iter().find_map(|p| {
            super::credit_payment::receivable_parts(&p.account).map(|(d, _)| d.to_string())
        }) else {
            continue;
        };
        let owed_on_draw: i64 = entries
            .iter()
            .flat_map(|x| x.postings.iter())
            .filter(|p| p.currency == c)
            .filter(|p| {
                super::credit_payment::receivable_parts(&p.account).is_some_and(|(d, _)| d == draw)
            })
            .map(|p| p.amount)
            .sum();
        let next = date
            .checked_add(jiff::Span::new().months(1))
            .unwrap_or(date);
        let due_by_next: i64 = match s.tx().current("Account", &draw).await? {
            Some(v) => {
                let account: Value = v
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_str(b).ok())
                    .unwrap_or(Value::Null);
                let terms =
                    super::credit_payment::terms_of(&ctx.finance, &account).unwrap_or_default();
                let contract: Value = match s.tx().current("Contract", &terms).await? {
                    Some(cv) => cv
                        .body
                        .as_deref()
                        .and_then(|b| serde_json::from_str(b).ok())
                        .unwrap_or(Value::Null),
                    None => Value::Null,
                };
                contract
                    .pointer("/term/0/asset/0/valuedItem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|i| {
                        i.get("paymentDate")
                            .and_then(Value::as_str)
                            .and_then(|d| d.parse::<jiff::civil::Date>().ok())
                            .is_some_and(|d| d <= next)
                    })
                    .filter_map(|i| Money::parse(i.get("net")?).ok()?.minor_units().ok())
                    .sum()
            }
            None => 0,
        };
        let drawn: i64 = e
            .postings
            .iter()
            .filter(|p| p.amount > 0)
            .map(|p| p.amount)
            .sum();
        let paid = (drawn - owed_on_draw).max(0);
        minimum += (due_by_next - paid).clamp(0, owed_on_draw.max(0));
    }
    let minimum = minimum.clamp(0, new_balance.max(0));
    // deferred interest: what has accrued in the shadow so far, and what avoids it all
    let (mut shadow, mut avoid, mut promo) = (0i64, 0i64, false);
    for e in entries.iter().filter(|e| e.kind == "draw") {
        let Some(draw) = e.postings.iter().find_map(|p| {
            super::credit_payment::receivable_parts(&p.account).map(|(d, _)| d.to_string())
        }) else {
            continue;
        };
        let Some(account) = s
            .tx()
            .current("Account", &draw)
            .await?
            .and_then(|v| v.body)
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        else {
            continue;
        };
        let Some(end) = super::credit_draw::promo_end_of(&ctx.finance, &account) else {
            continue;
        };
        if end <= date {
            continue; // assessed or waived at the promotion's end
        }
        promo = true;
        let events = super::credit_draw::principal_events(&entries, &draw);
        let apr = super::credit_draw::apr_of(&ctx.finance, &account);
        shadow += crate::finance::deferred::shadow(&events, apr, date)
            .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            .to_i64()
            .unwrap_or(0);
        avoid += events.iter().map(|(_, n)| n).sum::<i64>().max(0);
    }
    let due = date
        .checked_add(jiff::Span::new().days(DUE_AFTER_DAYS))
        .unwrap_or(date);
    let now = Instant::now();
    let mut invoice = json!({
        "resourceType": "Invoice",
        "meta": {"profile": [ctx.finance.extension_url("statement-invoice")]},
        "extension": [{"url": ctx.finance.extension_url("statement"), "extension": [
            {"url": "period", "valuePeriod": {"start": start.to_string(), "end": key}},
            {"url": "previousBalance", "valueMoney": m(previous)},
            {"url": "newBalance", "valueMoney": m(new_balance)},
            {"url": "minimumDue", "valueMoney": m(minimum)},
            {"url": "dueDate", "valueDate": due.to_string()}]},
            {"url": super::credit_apply::CALCULATED_AT_URL, "valueDateTime": now.to_fhir()}],
        "status": "issued",
        "type": {"coding": [{"system": ctx.finance.system("invoice-type"),
            "code": "credit-statement"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "date": now.to_fhir(),
        "account": {"reference": format!("Account/{line_id}")},
        "totalNet": m(new_balance.max(0)),
        "totalGross": m(new_balance.max(0)),
    });
    if !items.is_empty()
        && let Some(obj) = invoice.as_object_mut()
    {
        obj.insert("lineItem".into(), Value::from(items));
    }
    if promo
        && let Some(parts) = invoice
            .pointer_mut("/extension/0/extension")
            .and_then(Value::as_array_mut)
    {
        parts.push(json!({"url": "deferredInterest", "valueMoney": m(shadow)}));
        parts.push(json!({"url": "payToAvoid", "valueMoney": m(avoid)}));
    }
    let (_, invoice) = create::prepare(ctx, "Invoice", invoice)?;
    let written = create::create_in(&mut s, "Invoice", invoice, None, None).await?;
    let invoice = written.body_value()?;
    let result = json!({"resourceType": "Parameters", "parameter": [
        {"name": "invoice", "resource": invoice}]});
    let text = serde_json::to_string(&result)
        .map_err(|_| Outcome::internal("Cannot serialize a statement"))?;
    s.tx()
        .ledger()
        .record_command(&scope, &key, "", &text, now.millis())
        .await?;
    integrity::finish(s).await?;
    Ok(answer(result))
}
