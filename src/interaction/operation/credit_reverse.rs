//! `POST [base]/Account/[line]/$credit-reverse`: a payment that did not hold (returned for
//! insufficient funds, charged back) is undone by a mirror entry — every posting of the
//! payment's entry negated, naming the original — never by changing the original. In
//! `payment` (Reference to the PaymentReconciliation), `reason` (code: `nsf`, `chargeback`,
//! `error`), `requestId`; out the `paymentReconciliation` (now `cancelled`) and the line's new
//! `balance` and `creditBalance`.

use super::OperationRequest;
use super::command::{self, answer};
use super::credit_payment::{receivable_parts, reproject};
use super::params::{code, invalid, reference, request_id};
use crate::auth::{Perm, Role};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Id, Instant};
use crate::interaction::{Context, FhirResponse, Target, integrity, update};
use crate::store::ledger::{NewEntry, Posting};
use serde_json::{Value, json};

const REASONS: &[&str] = &["nsf", "chargeback", "error"];

pub(super) async fn reverse(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let line_id = Id::parse(op.id.as_deref().unwrap_or(""))?;
    let line_id = line_id.as_str();
    let (_, payment_id) =
        reference(op, "payment", &["PaymentReconciliation"])?.ok_or_else(|| {
            invalid(
                "payment",
                "payment (Reference to the PaymentReconciliation) is required",
            )
        })?;
    let reason = code(op, "reason")?
        .filter(|r| REASONS.contains(&r.as_str()))
        .ok_or_else(|| {
            invalid(
                "reason",
                format!("reason must be one of {}", REASONS.join(", ")),
            )
        })?;
    let request = request_id(op)?;
    ctx.guard.require(Perm::Read, "Account")?;
    let line = super::credit_draw::read_visible(ctx, "Account", line_id).await?;
    let Some((currency, _)) = super::credit_draw::credit_line_of(&ctx.finance, &line) else {
        return Err(invalid(
            "payment",
            format!("Account/{line_id} is not a credit line"),
        ));
    };
    let patient = super::credit_draw::line_patient(&line)?;
    // reversals come from the back office (an administrator or the payment processor)
    command::authorize(
        ctx,
        "credit-reverse",
        Perm::Update,
        &["PaymentReconciliation"],
        &[Role::Admin],
        &patient,
    )
    .await?;
    let fingerprint = command::fingerprint(op);
    let scope = format!("credit-reverse:Account/{line_id}");
    let mut s = command::session(ctx, base).await?;
    s.tx().lock_key(&format!("book:{line_id}")).await?;
    if let Some(previous) = command::replay(&mut s, &scope, &request, &fingerprint).await? {
        return Ok(previous);
    }
    let entries = s.tx().ledger().entries(line_id).await?;
    let memo = format!("PaymentReconciliation/{payment_id}");
    let Some(original) = entries
        .iter()
        .find(|e| e.kind == "payment" && e.memo.as_deref() == Some(memo.as_str()))
    else {
        return Err(Outcome::not_found(format!(
            "{memo} is not a payment on Account/{line_id}"
        )));
    };
    if entries.iter().any(|e| e.reverses == Some(original.id)) {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!("{memo} was reversed already"),
        ));
    }
    let now = Instant::now();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let postings: Vec<Posting> = original
        .postings
        .iter()
        .map(|p| Posting {
            account: p.account.clone(),
            currency: p.currency.clone(),
            amount: -p.amount,
        })
        .collect();
    let touched: Vec<String> = postings
        .iter()
        .filter_map(|p| receivable_parts(&p.account).map(|(d, _)| d.to_string()))
        .fold(Vec::new(), |mut acc, d| {
            if !acc.contains(&d) {
                acc.push(d);
            }
            acc
        });
    s.tx()
        .ledger()
        .post(&NewEntry {
            book: line_id.to_string(),
            kind: "reversal".into(),
            request_id: request.clone(),
            effective: today.to_string(),
            created: now.millis(),
            reverses: Some(original.id),
            memo: Some(format!("{memo} ({reason})")),
            postings,
        })
        .await?;
    let (balance, credit) = reproject(
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
    // the receipt stays, marked cancelled with why
    let receipt = match s.tx().current("PaymentReconciliation", &payment_id).await? {
        Some(v) if !v.deleted => v
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<Value>(b).ok()),
        _ => None,
    };
    let mut receipt = receipt.ok_or_else(|| Outcome::not_found(format!("{memo} is not known")))?;
    if let Some(obj) = receipt.as_object_mut() {
        obj.remove("meta");
        obj.insert("status".into(), Value::from("cancelled"));
        obj.insert(
            "disposition".into(),
            Value::from(format!("Reversed on {today}: {reason}")),
        );
    }
    update::prepare(
        ctx,
        "PaymentReconciliation",
        &Target::Id(payment_id.clone()),
        &receipt,
    )?;
    let written =
        update::update_in(&mut s, "PaymentReconciliation", &payment_id, receipt, None).await?;
    let receipt = written.body_value()?;
    let result = json!({"resourceType": "Parameters", "parameter": [
        {"name": "paymentReconciliation", "resource": receipt},
        {"name": "balance", "valueMoney": balance.to_fhir()},
        {"name": "creditBalance", "valueMoney":
            crate::fhir::money::Money::from_minor_units(credit, currency).to_fhir()}]});
    command::record(&mut s, &scope, &request, &fingerprint, &result).await?;
    integrity::finish(s).await?;
    Ok(answer(result))
}
