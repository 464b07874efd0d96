//! `POST [base]/Account/$credit-apply`: opens a credit line for a patient under a product's
//! rules. In `patient`, `product`, `requestedLimit`, `requestId`; out `decision` (approved |
//! declined | referred), `reason`, and on approval the line `account` (an Account with the
//! `credit-line` extension and a zero balance) and its agreement `contract`. No money moves,
//! so nothing is posted to the ledger; the command is recorded for replays.

use super::OperationRequest;
use super::command::{self, answer};
use super::params::{at, code, invalid, money, reference, request_id};
use crate::auth::{Perm, Role};
use crate::fhir::money::Money;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::{Id, Instant};
use crate::interaction::{Context, FhirResponse, create, integrity};
use serde_json::{Value, json};

/// The R5 cross-version extensions that carry an Account's balance on R4.
pub(super) const BALANCE_URL: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance";
pub(super) const CALCULATED_AT_URL: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.calculatedAt";

/// The balance extensions of an Account owing `amount`, as of `at`.
pub(super) fn balance_extensions(amount: &Money, at: Instant) -> Vec<Value> {
    vec![
        json!({"url": BALANCE_URL, "extension": [
            {"url": "term", "valueCodeableConcept": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/account-balance-term",
                "code": "current"}]}},
            {"url": "estimate", "valueBoolean": false},
            {"url": "amount", "valueMoney": amount.to_fhir()}]}),
        json!({"url": CALCULATED_AT_URL, "valueDateTime": at.to_fhir()}),
    ]
}

/// The Coding of an account type of the credit extension (`credit-line`, `credit-draw`).
pub(super) fn account_type(fin: &crate::finance::catalog::Catalog, code: &str) -> Value {
    json!({"coding": [{"system": fin.system("account-type"),
        "code": code}]})
}

pub(super) async fn apply(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let (_, patient) = reference(op, "patient", &["Patient"])?
        .ok_or_else(|| invalid("patient", "patient (Reference to a Patient) is required"))?;
    let product_code =
        code(op, "product")?.ok_or_else(|| invalid("product", "product (code) is required"))?;
    let limit = money(op, "requestedLimit")?.ok_or_else(|| {
        invalid(
            "requestedLimit",
            "requestedLimit (Money, with currency) is required",
        )
    })?;
    let request = request_id(op)?;
    let product = ctx.finance.product(&product_code).ok_or_else(|| {
        invalid(
            "product",
            format!(
                "'{}' is not a credit product of this server",
                product_code.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let limit_minor = limit
        .minor_units()
        .map_err(|e| e.to_outcome(&format!("{}.valueMoney", at("requestedLimit"))))?;
    if limit_minor <= 0 {
        return Err(invalid(
            "requestedLimit",
            "requestedLimit must be more than zero",
        ));
    }
    let limit = Money::from_minor_units(limit_minor, limit.currency());
    command::authorize(
        ctx,
        "credit-apply",
        Perm::Create,
        &["Account", "Contract"],
        &[Role::Patient, Role::Practitioner, Role::Admin],
        &patient,
    )
    .await?;
    let fingerprint = command::fingerprint(op);
    let scope = format!("credit-apply:Patient/{patient}");
    let mut s = command::session(ctx, base).await?;
    // one application per patient at a time
    s.tx().lock_key(&scope).await?;
    if let Some(previous) = command::replay(&mut s, &scope, &request, &fingerprint).await? {
        return Ok(previous);
    }
    let now = Instant::now();
    let decide = |decision: &str, reason: String| {
        json!({"resourceType": "Parameters", "parameter": [
            {"name": "decision", "valueCode": decision},
            {"name": "reason", "valueString": reason}]})
    };
    let result = if limit.currency() != product.currency {
        decide(
            "declined",
            format!(
                "The {} product lends in {}, not {}",
                product.code,
                product.currency,
                limit.currency()
            ),
        )
    } else if limit_minor > product.max_limit_minor {
        let max = Money::from_minor_units(product.max_limit_minor, limit.currency());
        decide(
            "referred",
            format!(
                "{limit} is above the {} product's highest limit of {max}; a reviewer decides",
                product.code
            ),
        )
    } else if let Some(existing) = super::super::conditional::resolve(
        &mut s,
        "Account",
        &format!(
            "subject=Patient/{patient}&type={}|credit-line&status=active",
            ctx.finance.system("account-type")
        ),
    )
    .await?
    {
        decide(
            "declined",
            format!("Patient/{patient} has an open credit line already: Account/{existing}"),
        )
    } else {
        let line_id = Id::generate();
        let contract_id = Id::generate();
        let today = now.to_fhir().chars().take(10).collect::<String>();
        // statements are cut monthly on the day the line opened (the 28th at the latest)
        let cycle_day = today
            .get(8..10)
            .and_then(|d| d.parse::<u8>().ok())
            .unwrap_or(1)
            .min(28);
        let contract = json!({
            "resourceType": "Contract",
            "status": "executed",
            "type": {"coding": [{"system": ctx.finance.system("contract-type"),
                "code": "credit-agreement"}]},
            "issued": now.to_fhir(),
            "applies": {"start": today},
            "subject": [{"reference": format!("Patient/{patient}")}],
            "title": format!("Credit line agreement ({})", product.code),
        });
        let zero = Money::from_minor_units(0, limit.currency());
        let mut extensions = vec![
            json!({"url": ctx.finance.extension_url("credit-line"), "extension": [
            {"url": "limit", "valueMoney": limit.to_fhir()},
            {"url": "product", "valueCoding": {
                "system": ctx.finance.system("credit-product"),
                "code": product.code}},
            {"url": "agreement", "valueReference": {"reference": format!("Contract/{contract_id}")}},
            {"url": "standing", "valueCode": "good"},
            {"url": "cycleDay", "valueInteger": cycle_day},
            {"url": "opened", "valueDate": today}]}),
        ];
        extensions.extend(balance_extensions(&zero, now));
        let line = json!({
            "resourceType": "Account",
            "meta": {"profile": [ctx.finance.extension_url("credit-line-account")]},
            "extension": extensions,
            "status": "active",
            "type": account_type(&ctx.finance, "credit-line"),
            "name": format!("Credit line ({})", product.code),
            "subject": [{"reference": format!("Patient/{patient}")}],
            "servicePeriod": {"start": today},
        });
        let (_, contract) = create::prepare(ctx, "Contract", contract)?;
        let (_, line) = create::prepare(ctx, "Account", line)?;
        let written_contract =
            create::create_in(&mut s, "Contract", contract, None, Some(contract_id)).await?;
        let written_line = create::create_in(&mut s, "Account", line, None, Some(line_id)).await?;
        json!({"resourceType": "Parameters", "parameter": [
            {"name": "decision", "valueCode": "approved"},
            {"name": "reason", "valueString": format!("Approved for {limit} under the {} product", product.code)},
            {"name": "account", "resource": written_line.body_value()?},
            {"name": "contract", "resource": written_contract.body_value()?}]})
    };
    command::record(&mut s, &scope, &request, &fingerprint, &result).await?;
    integrity::finish(s).await?;
    Ok(answer(result))
}
