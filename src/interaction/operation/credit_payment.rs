//! `POST [base]/Account/[line]/$credit-payment`: records money received on a credit line.
//! In `amount`, `requestId`, optional `processorTransactionId` and `paidOn`; out the
//! `paymentReconciliation` with its allocations and the line's new `balance` and
//! `creditBalance`.
//!
//! Allocation: draw by draw, oldest first, fees → interest → principal; what is left after
//! everything owed is paid lands in the line's credit balance (refundable), never as a
//! negative receivable. One ledger entry (cash against the receivables and the credit
//! balance), the PaymentReconciliation, the draws' and the line's balances and the
//! installments' status are written in one transaction, under the line's lock.

use super::OperationRequest;
use super::command::{self, answer};
use super::credit_draw::with_balance;
use super::params::{at, invalid, money, request_id, string};
use crate::auth::{Perm, Role};
use crate::fhir::money::{Currency, Money};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Id, Instant};
use crate::interaction::session::Session;
use crate::interaction::{Context, FhirResponse, Target, create, integrity, update};
use crate::store::ledger::{NewEntry, Posting};
use serde_json::{Value, json};

/// The order in which a draw's receivables are paid.
const ORDER: [&str; 3] = ["fees", "interest", "principal"];

/// Splits `amount` over `owed` (account, minor units, in payment order): the allocations
/// and what is left over.
pub fn allocate(amount: i64, owed: &[(String, i64)]) -> (Vec<(String, i64)>, i64) {
    let mut left = amount;
    let mut out = Vec::new();
    for (account, due) in owed {
        if left == 0 {
            break;
        }
        let paid = left.min(*due);
        if paid > 0 {
            out.push((account.clone(), paid));
            left -= paid;
        }
    }
    (out, left)
}

/// The draw and the kind of a receivable account `receivable:<draw>:<kind>`.
pub(super) fn receivable_parts(account: &str) -> Option<(&str, &str)> {
    let rest = account.strip_prefix("receivable:")?;
    rest.rsplit_once(':')
}

/// The installment statuses of a draw's terms after `paid` minor units were paid on it in
/// all: installments are paid oldest first.
pub(super) fn with_installments_paid(
    fin: &crate::finance::catalog::Catalog,
    mut contract: Value,
    paid: i64,
    currency: Currency,
    missed_before: Option<jiff::civil::Date>,
) -> Value {
    let url = fin.extension_url("installment-status");
    let mut left = paid;
    if let Some(items) = contract
        .pointer_mut("/term/0/asset/0/valuedItem")
        .and_then(Value::as_array_mut)
    {
        for item in items {
            let net = item
                .get("net")
                .and_then(|m| Money::parse(m).ok())
                .and_then(|m| m.minor_units().ok())
                .unwrap_or(0);
            let on_this = left.min(net).max(0);
            left -= on_this;
            let overdue = missed_before.is_some_and(|limit| {
                item.get("paymentDate")
                    .and_then(Value::as_str)
                    .and_then(|d| d.parse::<jiff::civil::Date>().ok())
                    .is_some_and(|due| due < limit)
            });
            let status = if on_this == net && net > 0 {
                "paid"
            } else if overdue {
                "missed"
            } else if on_this > 0 {
                "partial"
            } else {
                "scheduled"
            };
            if let Some(ext) = item.get_mut("extension").and_then(Value::as_array_mut)
                && let Some(st) = ext
                    .iter_mut()
                    .find(|e| e.get("url").and_then(Value::as_str) == Some(url.as_str()))
            {
                let number = st
                    .get("extension")
                    .and_then(Value::as_array)
                    .and_then(|parts| {
                        parts
                            .iter()
                            .find(|p| p.get("url").and_then(Value::as_str) == Some("number"))
                            .cloned()
                    })
                    .unwrap_or(Value::Null);
                *st = json!({"url": url, "extension": [
                    number,
                    {"url": "status", "valueCode": status},
                    {"url": "paid", "valueMoney": Money::from_minor_units(on_this, currency).to_fhir()}]});
            }
        }
    }
    if let Some(obj) = contract.as_object_mut() {
        obj.remove("meta");
    }
    contract
}

/// The terms Contract id of a draw Account.
pub(super) fn terms_of(fin: &crate::finance::catalog::Catalog, draw: &Value) -> Option<String> {
    fin.extension_part(draw, "credit-draw", "terms", "valueReference")?
        .get("reference")?
        .as_str()?
        .strip_prefix("Contract/")
        .map(str::to_string)
}

/// Writes what the ledger now says of a line: each of the `touched` draws' balance, status
/// and installments, and the line's balance; (what the line owes, its credit balance).
/// A credit line as a projection reads it: its id, its resource and its currency.
pub(super) struct Book<'a> {
    pub id: &'a str,
    pub line: Value,
    pub currency: Currency,
}

pub(super) async fn reproject(
    ctx: &Context,
    s: &mut Session,
    book: Book<'_>,
    now: Instant,
    touched: &[String],
    missed_before: Option<jiff::civil::Date>,
) -> Result<(Money, i64), Outcome> {
    let Book {
        id: line_id,
        line,
        currency,
    } = book;
    let entries = s.tx().ledger().entries(line_id).await?;
    let after = s.tx().ledger().balances(line_id, "receivable:").await?;
    let owed_on = |draw: &str| -> i64 {
        after
            .iter()
            .filter(|(a, c, _)| {
                receivable_parts(a).is_some_and(|(d, _)| d == draw) && c == currency.code()
            })
            .map(|(_, _, n)| n)
            .sum()
    };
    for draw in touched {
        let draw = draw.as_str();
        let Some(current) = s.tx().current("Account", draw).await? else {
            continue;
        };
        let Some(body) = current.body.as_deref() else {
            continue;
        };
        let account: Value = serde_json::from_str(body)
            .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?;
        // paid toward the installments: the principal and interest charged to this draw
        // minus what of them is still owed (fees are not part of the installments)
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
        let owed_installments: i64 = after
            .iter()
            .filter(|(a, c, _)| installment_account(a) && c == currency.code())
            .map(|(_, _, n)| n)
            .sum();
        let remaining = owed_on(draw);
        if let Some(terms) = terms_of(&ctx.finance, &account)
            && let Some(c) = s.tx().current("Contract", &terms).await?
            && let Some(cbody) = c.body.as_deref()
        {
            let contract: Value = serde_json::from_str(cbody)
                .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?;
            let contract = with_installments_paid(
                &ctx.finance,
                contract,
                charged - owed_installments,
                currency,
                missed_before,
            );
            update::prepare(ctx, "Contract", &Target::Id(terms.clone()), &contract)?;
            update::update_in(s, "Contract", &terms, contract, None).await?;
        }
        let mut account = with_balance(account, &Money::from_minor_units(remaining, currency), now);
        if let Some(obj) = account.as_object_mut() {
            let status = if remaining == 0 { "inactive" } else { "active" };
            obj.insert("status".into(), Value::from(status));
        }
        update::prepare(ctx, "Account", &Target::Id(draw.to_string()), &account)?;
        update::update_in(s, "Account", draw, account, None).await?;
    }
    let line_owed: i64 = after
        .iter()
        .filter(|(_, c, _)| c == currency.code())
        .map(|(_, _, n)| n)
        .sum();
    let credit: i64 = -s
        .tx()
        .ledger()
        .balances(line_id, "credit-balance")
        .await?
        .iter()
        .filter(|(_, c, _)| c == currency.code())
        .map(|(_, _, n)| n)
        .sum::<i64>();
    let line_owed_money = Money::from_minor_units(line_owed, currency);
    let line = with_balance(line, &line_owed_money, now);
    update::prepare(ctx, "Account", &Target::Id(line_id.into()), &line)?;
    update::update_in(s, "Account", line_id, line, None).await?;
    Ok((line_owed_money, credit))
}

pub(super) async fn payment(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let line_id = Id::parse(op.id.as_deref().unwrap_or(""))?;
    let line_id = line_id.as_str();
    let amount = money(op, "amount")?
        .ok_or_else(|| invalid("amount", "amount (Money, with currency) is required"))?;
    let request = request_id(op)?;
    let processor = string(op, "processorTransactionId")?;
    let paid_on = match string(op, "paidOn")? {
        None => None,
        Some(d) => Some(
            d.parse::<jiff::civil::Date>()
                .map_err(|_| invalid("paidOn", "paidOn must be a date (YYYY-MM-DD)"))?,
        ),
    };
    ctx.guard.require(Perm::Read, "Account")?;
    let line = super::credit_draw::read_visible(ctx, "Account", line_id).await?;
    let Some((currency, _)) = super::credit_draw::credit_line_of(&ctx.finance, &line) else {
        return Err(invalid(
            "amount",
            format!("Account/{line_id} is not a credit line"),
        ));
    };
    let patient = super::credit_draw::line_patient(&line)?;
    // money received is recorded by who received it — the payment processor (a backend
    // service) or the back office — never by the payer: a patient's own token saying "I paid"
    // must not reduce what they owe
    command::authorize(
        ctx,
        "credit-payment",
        Perm::Create,
        &["PaymentReconciliation"],
        &[Role::Admin],
        &patient,
    )
    .await?;
    if amount.currency() != currency {
        return Err(Outcome::new(
            ErrorKind::Invalid,
            format!(
                "Account/{line_id} is a {currency} credit line; the payment is in {}",
                amount.currency()
            ),
        )
        .at(format!("{}.valueMoney.currency", at("amount"))));
    }
    let minor = amount
        .minor_units()
        .map_err(|e| e.to_outcome(&format!("{}.valueMoney", at("amount"))))?;
    if minor <= 0 {
        return Err(invalid("amount", "A payment must be more than zero"));
    }
    let amount = Money::from_minor_units(minor, currency);

    let fingerprint = command::fingerprint(op);
    let scope = format!("credit-payment:Account/{line_id}");
    let mut s = command::session(ctx, base).await?;
    s.tx().lock_key(&format!("book:{line_id}")).await?;
    if let Some(previous) = command::replay(&mut s, &scope, &request, &fingerprint).await? {
        return Ok(previous);
    }
    let processor_scope = format!("credit-processor:Account/{line_id}");
    if let Some(ptid) = &processor
        && let Some(done) = s.tx().ledger().command(&processor_scope, ptid).await?
    {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!(
                "The processor transaction '{}' was recorded already (requestId {})",
                ptid.chars().take(64).collect::<String>(),
                done.result.trim_matches('"')
            ),
        )
        .at(at("processorTransactionId")));
    }
    // what is owed, draw by draw in the order they were drawn, fees → interest → principal
    let balances = s.tx().ledger().balances(line_id, "receivable:").await?;
    let entries = s.tx().ledger().entries(line_id).await?;
    let mut draws: Vec<String> = Vec::new();
    for e in &entries {
        for p in &e.postings {
            if let Some((draw, _)) = receivable_parts(&p.account)
                && !draws.iter().any(|d| d == draw)
            {
                draws.push(draw.to_string());
            }
        }
    }
    let mut owed: Vec<(String, i64)> = Vec::new();
    for draw in &draws {
        for kind in ORDER {
            let account = format!("receivable:{draw}:{kind}");
            if let Some((_, _, n)) = balances
                .iter()
                .find(|(a, c, _)| *a == account && c == currency.code())
                && *n > 0
            {
                owed.push((account, *n));
            }
        }
    }
    let (allocations, excess) = allocate(minor, &owed);
    let now = Instant::now();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let paid_on = paid_on.unwrap_or(today);
    let receipt_id = Id::generate();
    let mut postings = vec![Posting {
        account: "cash".into(),
        currency: currency.code().into(),
        amount: minor,
    }];
    for (account, n) in &allocations {
        postings.push(Posting {
            account: account.clone(),
            currency: currency.code().into(),
            amount: -n,
        });
    }
    if excess > 0 {
        postings.push(Posting {
            account: "credit-balance".into(),
            currency: currency.code().into(),
            amount: -excess,
        });
    }
    s.tx()
        .ledger()
        .post(&NewEntry {
            book: line_id.to_string(),
            kind: "payment".into(),
            request_id: request.clone(),
            effective: paid_on.to_string(),
            created: now.millis(),
            reverses: None,
            memo: Some(format!("PaymentReconciliation/{receipt_id}")),
            postings,
        })
        .await?;
    let touched: Vec<String> = draws
        .iter()
        .filter(|d| {
            allocations
                .iter()
                .any(|(a, _)| receivable_parts(a).is_some_and(|(x, _)| x == d.as_str()))
        })
        .cloned()
        .collect();
    let (line_owed_money, credit) = reproject(
        ctx,
        &mut s,
        super::credit_payment::Book {
            id: line_id,
            line,
            currency,
        },
        now,
        &touched,
        None,
    )
    .await?;
    // the receipt
    let mut details: Vec<Value> = allocations
        .iter()
        .map(|(account, n)| {
            let (draw, kind) = receivable_parts(account).unwrap_or(("", "principal"));
            json!({
                "type": {"coding": [{"system": ctx.finance.system("allocation"),
                    "code": kind}]},
                "request": {"reference": format!("Account/{draw}")},
                "amount": Money::from_minor_units(*n, currency).to_fhir(),
            })
        })
        .collect();
    if excess > 0 {
        details.push(json!({
            "type": {"coding": [{"system": ctx.finance.system("allocation"),
                "code": "credit-balance"}]},
            "request": {"reference": format!("Account/{line_id}")},
            "amount": Money::from_minor_units(excess, currency).to_fhir(),
        }));
    }
    let mut receipt = json!({
        "resourceType": "PaymentReconciliation",
        "extension": [{"url": super::credit_apply::CALCULATED_AT_URL, "valueDateTime": now.to_fhir()}],
        "status": "active",
        "created": now.to_fhir(),
        "paymentDate": paid_on.to_string(),
        "paymentAmount": amount.to_fhir(),
        "outcome": "complete",
        "disposition": format!("{amount} received on Account/{line_id}"),
        "detail": details,
    });
    if let Some(ptid) = &processor
        && let Some(obj) = receipt.as_object_mut()
    {
        obj.insert(
            "paymentIdentifier".into(),
            json!({"system": ctx.finance.url("processor-transaction"), "value": ptid}),
        );
    }
    let (_, receipt) = create::prepare(ctx, "PaymentReconciliation", receipt)?;
    let written = create::create_in(
        &mut s,
        "PaymentReconciliation",
        receipt,
        None,
        Some(receipt_id),
    )
    .await?;
    if let Some(ptid) = &processor {
        let text =
            serde_json::to_string(&request).map_err(|_| Outcome::internal("Cannot serialize"))?;
        s.tx()
            .ledger()
            .record_command(&processor_scope, ptid, "", &text, now.millis())
            .await?;
    }
    let receipt = written.body_value()?;
    let result = json!({"resourceType": "Parameters", "parameter": [
        {"name": "paymentReconciliation", "resource": receipt},
        {"name": "balance", "valueMoney": line_owed_money.to_fhir()},
        {"name": "creditBalance", "valueMoney": Money::from_minor_units(credit, currency).to_fhir()}]});
    command::record(&mut s, &scope, &request, &fingerprint, &result).await?;
    integrity::finish(s).await?;
    Ok(answer(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_pays_in_order_and_keeps_the_rest() {
        let owed = vec![
            ("receivable:a:fees".to_string(), 500),
            ("receivable:a:interest".to_string(), 200),
            ("receivable:a:principal".to_string(), 10_000),
            ("receivable:b:principal".to_string(), 3_000),
        ];
        let (alloc, left) = allocate(600, &owed);
        assert_eq!(
            alloc,
            [
                ("receivable:a:fees".to_string(), 500),
                ("receivable:a:interest".to_string(), 100)
            ]
        );
        assert_eq!(left, 0);
        let (alloc, left) = allocate(20_000, &owed);
        assert_eq!(alloc.iter().map(|a| a.1).sum::<i64>(), 13_700);
        assert_eq!(left, 6_300);
        assert_eq!(
            receivable_parts("receivable:d-1:principal"),
            Some(("d-1", "principal"))
        );
    }
}
