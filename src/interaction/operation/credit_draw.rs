//! `POST [base]/Account/[id]/$credit-draw`: finances what a patient owes on a bill (an
//! Invoice, a ChargeItem, or the patient's share of a ClaimResponse or ExplanationOfBenefit)
//! on their credit line. In `source`, optional `amount` (default: the source's patient
//! share), `plan` (default `installments-0`), `termMonths`, `requestId`; out the draw
//! `account` (a child Account of the line) and its `contract` with the schedule.
//!
//! Under the line's lock, in one transaction: the limit is checked against what is owed, the
//! ledger entry is posted (receivable principal against the provider payable), and the draw
//! Account, its Contract and the line's new balance are written. A source is financed once.

use super::OperationRequest;
use super::command::{self, answer};
use super::credit_apply::{account_type, balance_extensions};
use super::params::{at, code, integer, invalid, money, reference, request_id};
use crate::auth::{Perm, Role};
use crate::fhir::money::{Currency, Money};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Id, Instant};
use crate::finance::amortize;
use crate::finance::products;
use crate::interaction::{Context, FhirResponse, create, integrity, update};
use crate::store::ledger::{NewEntry, Posting};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// The CARIN Blue Button adjudication category of what the member (patient) owes.
pub(super) const MEMBER_LIABILITY: &str = "memberliability";

/// The types a draw may finance.
const SOURCES: &[&str] = &[
    "ClaimResponse",
    "ExplanationOfBenefit",
    "Invoice",
    "ChargeItem",
];

/// The patient a source bills, and what it says they owe (None: it does not say).
fn source_facts(rt: &str, v: &Value) -> (Option<String>, Option<Value>) {
    let patient_ref = |key: &str| {
        v.get(key)
            .and_then(|p| p.get("reference"))
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("Patient/"))
            .map(str::to_string)
    };
    match rt {
        "Invoice" => (
            patient_ref("subject"),
            v.get("totalGross").or_else(|| v.get("totalNet")).cloned(),
        ),
        "ChargeItem" => (patient_ref("subject"), v.get("priceOverride").cloned()),
        _ => {
            // ClaimResponse, ExplanationOfBenefit: the total whose category is the member's
            // liability
            let owed = v
                .get("total")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|t| {
                    t.get("category")
                        .and_then(|c| c.get("coding"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|c| c.get("code").and_then(Value::as_str) == Some(MEMBER_LIABILITY))
                })
                .and_then(|t| t.get("amount"))
                .cloned();
            (patient_ref("patient"), owed)
        }
    }
}

pub(super) fn credit_line_of(
    fin: &crate::finance::catalog::Catalog,
    v: &Value,
) -> Option<(Currency, i64)> {
    let limit = fin.extension_part(v, "credit-line", "limit", "valueMoney")?;
    let limit = Money::parse(limit).ok()?;
    Some((limit.currency(), limit.minor_units().ok()?))
}

/// `resource` with its balance extensions replaced by `owed` as of `now`.
pub(super) fn with_balance(mut resource: Value, owed: &Money, now: Instant) -> Value {
    if let Some(ext) = resource.get_mut("extension").and_then(Value::as_array_mut) {
        ext.retain(|e| {
            let url = e.get("url").and_then(Value::as_str).unwrap_or("");
            url != super::credit_apply::BALANCE_URL && url != super::credit_apply::CALCULATED_AT_URL
        });
        ext.extend(balance_extensions(owed, now));
    }
    if let Some(obj) = resource.as_object_mut()
        && let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut)
    {
        // the server stamps versionId and lastUpdated; the profiles claimed stay
        meta.remove("versionId");
        meta.remove("lastUpdated");
    }
    resource
}

pub(super) async fn read_visible(ctx: &Context, rt: &str, id: &str) -> Result<Value, Outcome> {
    let current = ctx.store.read(rt, id).await?;
    if current.is_some() {
        ctx.guard.check_stored(ctx, Perm::Read, rt, id).await?;
    }
    match current.and_then(|v| if v.deleted { None } else { v.body }) {
        Some(body) => serde_json::from_str(&body)
            .map_err(|_| Outcome::internal("A stored resource is not valid JSON")),
        None => Err(Outcome::not_found(format!("{rt}/{id} is not known"))),
    }
}

/// The APR of a draw Account (its `credit-draw` extension), percent.
pub(super) fn apr_of(fin: &crate::finance::catalog::Catalog, draw: &Value) -> Decimal {
    fin.extension_part(draw, "credit-draw", "apr", "valueDecimal")
        .and_then(|v| Decimal::from_str_exact(&v.to_string()).ok())
        .unwrap_or(Decimal::ZERO)
}

/// The end of a deferred-interest draw's promotion (its `credit-draw` extension's `promoEnd`).
pub(super) fn promo_end_of(
    fin: &crate::finance::catalog::Catalog,
    draw: &Value,
) -> Option<jiff::civil::Date> {
    fin.extension_part(draw, "credit-draw", "promoEnd", "valueDate")?
        .as_str()?
        .parse()
        .ok()
}

/// The changes of a draw's principal, by accounting date: the shadow interest's balance.
pub(super) fn principal_events(
    entries: &[crate::store::ledger::EntryRow],
    draw: &str,
) -> Vec<crate::finance::deferred::Event> {
    let account = format!("receivable:{draw}:principal");
    entries
        .iter()
        .filter_map(|e| {
            let day = e.effective.parse::<jiff::civil::Date>().ok()?;
            let n: i64 = e
                .postings
                .iter()
                .filter(|p| p.account == account)
                .map(|p| p.amount)
                .sum();
            (n != 0).then_some((day, n))
        })
        .collect()
}

/// The patient whose credit line `line` is.
pub(super) fn line_patient(line: &Value) -> Result<String, Outcome> {
    line.get("subject")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .and_then(|s| s.get("reference"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("Patient/"))
        .map(str::to_string)
        .ok_or_else(|| Outcome::internal("A credit line has no patient"))
}

pub(super) async fn draw(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let line_id = Id::parse(op.id.as_deref().unwrap_or(""))?;
    let line_id = line_id.as_str();
    let (source_type, source_id) = reference(op, "source", SOURCES)?.ok_or_else(|| {
        invalid(
            "source",
            "source (Reference to a ClaimResponse, ExplanationOfBenefit, Invoice or ChargeItem) is required",
        )
    })?;
    let requested = money(op, "amount")?;
    let plan_code = code(op, "plan")?.unwrap_or_else(|| "installments-0".to_string());
    let plan = ctx.finance.plan(&plan_code).ok_or_else(|| {
        invalid(
            "plan",
            format!(
                "'{}' is not a repayment plan of this server (known: {})",
                plan_code.chars().take(64).collect::<String>(),
                ctx.finance.plan_codes().join(", ")
            ),
        )
    })?;
    let months = integer(op, "termMonths")?
        .ok_or_else(|| invalid("termMonths", "termMonths (integer) is required"))?;
    let months = u32::try_from(months)
        .ok()
        .filter(|m| (plan.min_term..=plan.max_term).contains(m))
        .ok_or_else(|| {
            invalid(
                "termMonths",
                format!(
                    "The plan {} runs {} to {} months",
                    plan.code, plan.min_term, plan.max_term
                ),
            )
        })?;
    let request = request_id(op)?;
    // what the caller may see: the line, then the source
    ctx.guard.require(Perm::Read, "Account")?;
    let line = read_visible(ctx, "Account", line_id).await?;
    let Some((currency, limit)) = credit_line_of(&ctx.finance, &line) else {
        return Err(invalid(
            "source",
            format!("Account/{line_id} is not a credit line"),
        ));
    };
    if line.get("status").and_then(Value::as_str) != Some("active") {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!("The credit line Account/{line_id} is not active"),
        ));
    }
    let patient = line_patient(&line)?;
    command::authorize(
        ctx,
        "credit-draw",
        Perm::Create,
        &["Account", "Contract"],
        &[Role::Patient, Role::Practitioner, Role::Admin],
        &patient,
    )
    .await?;
    ctx.guard.require(Perm::Read, &source_type)?;
    let source = read_visible(ctx, &source_type, &source_id).await?;
    if source.get("outcome").and_then(Value::as_str) == Some("queued") {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!(
                "{source_type}/{source_id} is queued for review: what the patient owes is not known yet"
            ),
        ));
    }
    let (billed, owed) = source_facts(&source_type, &source);
    if billed.as_deref() != Some(patient.as_str()) {
        return Err(invalid(
            "source",
            format!(
                "{source_type}/{source_id} does not bill Patient/{patient}, whose line this is"
            ),
        ));
    }
    let amount = match (requested, owed) {
        (Some(m), _) => m,
        (None, Some(v)) => Money::parse(&v).map_err(|e| {
            invalid(
                "source",
                format!("{source_type}/{source_id} states what is owed unreadably: {e}"),
            )
        })?,
        (None, None) => {
            return Err(invalid(
                "amount",
                format!(
                    "{source_type}/{source_id} does not say what the patient owes; give amount"
                ),
            ));
        }
    };
    if amount.currency() != currency {
        return Err(Outcome::new(
            ErrorKind::Invalid,
            format!(
                "Account/{line_id} is a {currency} credit line; the draw is in {}",
                amount.currency()
            ),
        )
        .at(format!("{}.valueMoney.currency", at("amount"))));
    }
    let principal = amount
        .minor_units()
        .map_err(|e| e.to_outcome(&format!("{}.valueMoney", at("amount"))))?;
    let product = ctx.finance.line_product(&line);
    if plan.deferred && !product.is_some_and(|p| p.deferred_interest) {
        return Err(invalid(
            "plan",
            format!(
                "The plan {} defers interest, which the product of Account/{line_id} does not offer",
                plan.code
            ),
        ));
    }
    // from here on in the currency's own precision (100.0 USD is shown as 100.00 USD)
    let amount = Money::from_minor_units(principal, currency);
    let schedule = amortize::schedule(
        principal,
        currency,
        months,
        ctx.finance.plan_apr(plan, product),
    )
    .map_err(|e| invalid(e.parameter(), e.to_string()))?;

    let fingerprint = command::fingerprint(op);
    let scope = format!("credit-draw:Account/{line_id}");
    let mut s = command::session(ctx, base).await?;
    // every change of a line's ledger runs under its lock: parallel draws see each other
    s.tx().lock_key(&format!("book:{line_id}")).await?;
    if let Some(previous) = command::replay(&mut s, &scope, &request, &fingerprint).await? {
        return Ok(previous);
    }
    let source_scope = format!("credit-source:{source_type}/{source_id}");
    s.tx().lock_key(&source_scope).await?;
    if let Some(done) = s.tx().ledger().command(&source_scope, "draw").await? {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!(
                "{source_type}/{source_id} is financed already (by {})",
                done.result.trim_matches('"')
            ),
        ));
    }
    let owed_now: i64 = s
        .tx()
        .ledger()
        .balances(line_id, "receivable:")
        .await?
        .iter()
        .filter(|(_, c, _)| c == currency.code())
        .map(|(_, _, n)| n)
        .sum();
    let available = limit - owed_now;
    if principal > available {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!(
                "{amount} is more than the {} still available on Account/{line_id}",
                Money::from_minor_units(available.max(0), currency)
            ),
        ));
    }
    let now = Instant::now();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let draw_id = Id::generate();
    let contract_id = Id::generate();
    let patient_ref = json!({"reference": format!("Patient/{patient}")});
    let mut items = Vec::new();
    for i in &schedule.installments {
        let due = products::due_date(today, i.number)
            .ok_or_else(|| Outcome::internal("A due date is out of range"))?;
        items.push(json!({
            "extension": [{"url": ctx.finance.extension_url("installment-status"),
                "extension": [
                    {"url": "number", "valueInteger": i.number},
                    {"url": "status", "valueCode": "scheduled"},
                    {"url": "paid", "valueMoney": Money::from_minor_units(0, currency).to_fhir()}]}],
            "net": Money::from_minor_units(i.amount, currency).to_fhir(),
            "paymentDate": due.to_string(),
            "responsible": patient_ref,
        }));
    }
    let first_due = products::due_date(today, 1)
        .ok_or_else(|| Outcome::internal("A due date is out of range"))?;
    let installment = Money::from_minor_units(schedule.installment, currency);
    let contract = json!({
        "resourceType": "Contract",
        "status": "executed",
        "type": {"coding": [{"system": ctx.finance.system("contract-type"),
            "code": "credit-draw-terms"}]},
        "issued": now.to_fhir(),
        "applies": {"start": today.to_string()},
        "subject": [patient_ref],
        "title": format!("Repayment of {amount} in {months} installments ({})", plan.code),
        "term": [{
            "offer": {"text": format!(
                "{months} monthly installments of {installment} (the last {}), {} interest, {} in all",
                Money::from_minor_units(schedule.final_installment, currency),
                Money::from_minor_units(schedule.total_interest, currency),
                Money::from_minor_units(schedule.total_payable(), currency))},
            "asset": [{"valuedItem": items}]
        }]
    });
    // a deferred-interest draw carries the product's APR (what accrues in the shadow) and its
    // promotion: 0 % until the end of the term
    let charged_apr = match (plan.deferred, product) {
        (true, Some(p)) => p.apr,
        _ => ctx.finance.plan_apr(plan, product),
    };
    let apr_number: Value = charged_apr
        .normalize()
        .to_string()
        .parse::<serde_json::Number>()
        .map(Value::Number)
        .map_err(|_| Outcome::internal("Cannot render the APR"))?;
    let mut extensions = vec![json!({"url": ctx.finance.extension_url("credit-draw"),
        "extension": [
            {"url": "source", "valueReference": {"reference": format!("{source_type}/{source_id}")}},
            {"url": "principal", "valueMoney": amount.to_fhir()},
            {"url": "plan", "valueCode": plan.code},
            {"url": "apr", "valueDecimal": apr_number},
            {"url": "termMonths", "valueInteger": months},
            {"url": "firstDue", "valueDate": first_due.to_string()},
            {"url": "installment", "valueMoney": installment.to_fhir()},
            {"url": "terms", "valueReference": {"reference": format!("Contract/{contract_id}")}},
            {"url": "requestId", "valueIdentifier": {
                "system": ctx.finance.url("request-id"), "value": request}}]})];
    if plan.deferred {
        let end = products::due_date(today, months)
            .ok_or_else(|| Outcome::internal("A due date is out of range"))?;
        if let Some(parts) = extensions
            .first_mut()
            .and_then(|e| e.get_mut("extension"))
            .and_then(Value::as_array_mut)
        {
            parts.push(json!({"url": "promoApr", "valueDecimal": 0}));
            parts.push(json!({"url": "promoEnd", "valueDate": end.to_string()}));
        }
    }
    extensions.extend(balance_extensions(&amount, now));
    let draw = json!({
        "resourceType": "Account",
        "meta": {"profile": [ctx.finance.extension_url("credit-draw-account")]},
        "extension": extensions,
        "status": "active",
        "type": account_type(&ctx.finance, "credit-draw"),
        "name": format!("Deferred payment of {amount}"),
        "subject": [patient_ref],
        "servicePeriod": {"start": today.to_string()},
        "partOf": {"reference": format!("Account/{line_id}")},
    });
    let (_, contract) = create::prepare(ctx, "Contract", contract)?;
    let (_, draw) = create::prepare(ctx, "Account", draw)?;
    let written_contract =
        create::create_in(&mut s, "Contract", contract, None, Some(contract_id)).await?;
    let written_draw =
        create::create_in(&mut s, "Account", draw, None, Some(draw_id.clone())).await?;
    s.tx()
        .ledger()
        .post(&NewEntry {
            book: line_id.to_string(),
            kind: "draw".into(),
            request_id: request.clone(),
            effective: today.to_string(),
            created: now.millis(),
            reverses: None,
            memo: Some(format!("{source_type}/{source_id}")),
            postings: vec![
                Posting {
                    account: format!("receivable:{draw_id}:principal"),
                    currency: currency.code().into(),
                    amount: principal,
                },
                Posting {
                    account: "payable:provider".into(),
                    currency: currency.code().into(),
                    amount: -principal,
                },
            ],
        })
        .await?;
    // the line's balance: what is owed on all its draws
    let line_owed = Money::from_minor_units(owed_now + principal, currency);
    let line = with_balance(line, &line_owed, now);
    update::prepare(
        ctx,
        "Account",
        &crate::interaction::Target::Id(line_id.into()),
        &line,
    )?;
    update::update_in(&mut s, "Account", line_id, line, None).await?;
    s.tx()
        .ledger()
        .record_command(
            &source_scope,
            "draw",
            "",
            &serde_json::to_string(&format!("Account/{draw_id}"))
                .map_err(|_| Outcome::internal("Cannot serialize"))?,
            now.millis(),
        )
        .await?;
    let result = json!({"resourceType": "Parameters", "parameter": [
        {"name": "account", "resource": written_draw.body_value()?},
        {"name": "contract", "resource": written_contract.body_value()?}]});
    command::record(&mut s, &scope, &request, &fingerprint, &result).await?;
    integrity::finish(s).await?;
    Ok(answer(result))
}
