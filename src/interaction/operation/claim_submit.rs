//! `POST [base]/Claim/$submit`: native adjudication. The body is a Claim, a Bundle whose first
//! entry is a Claim, or a Parameters `resource`; the answer is the stored ClaimResponse
//! (200), also when the claim is refused (`outcome` `error`, with why in `error` and
//! `processNote`). The claim's focal Coverage (status, period, payor, `class` of type `plan`)
//! selects its InsurancePlan; `finance::adjudicate` decides each item; the Claim, the
//! ClaimResponse, the patient's ExplanationOfBenefit and the member's plan-year accumulators
//! are written in one transaction under the coverage's lock.

use super::OperationRequest;
use super::command::{self, answer};
use crate::auth::{Perm, Role};
use crate::fhir::money::Money;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::{Id, Instant};
use crate::finance::adjudicate::{self, Accumulated, Adjudication, ItemIn, PlanRules, ServiceRule};
use crate::interaction::session::Session;
use crate::interaction::{Context, FhirResponse, conditional, create, integrity};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const ADJUDICATION: &str = "http://terminology.hl7.org/CodeSystem/adjudication";
const CARIN: &str = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication";

/// A refusal recorded in the ClaimResponse: (code, text, item sequence).
type Refusal = (&'static str, String, Option<u32>);

/// The Claim of a `$submit` body.
fn claim_of(op: &OperationRequest) -> Result<Value, Outcome> {
    let body = op.body.clone().ok_or_else(|| {
        Outcome::bad_request("$submit needs a Claim (or a Bundle whose first entry is one)")
    })?;
    let claim = match body.get("resourceType").and_then(Value::as_str) {
        Some("Claim") => Some(body),
        Some("Bundle") => body
            .pointer("/entry/0/resource")
            .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Claim"))
            .cloned(),
        Some("Parameters") => op
            .param("resource")
            .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Claim")),
        _ => None,
    };
    claim.ok_or_else(|| {
        Outcome::bad_request("$submit needs a Claim, or a Bundle whose first entry is a Claim")
            .at("Claim")
    })
}

fn local_id(v: Option<&Value>, rt: &str) -> Option<String> {
    v?.get("reference")?
        .as_str()?
        .strip_prefix(&format!("{rt}/"))
        .map(str::to_string)
}

fn coding_key(cc: Option<&Value>) -> Option<String> {
    let c = cc?.get("coding")?.as_array()?.first()?;
    Some(format!(
        "{}|{}",
        c.get("system").and_then(Value::as_str).unwrap_or(""),
        c.get("code").and_then(Value::as_str)?
    ))
}

fn code_of(cc: Option<&Value>) -> Option<&str> {
    cc?.get("coding")?
        .as_array()?
        .first()?
        .get("code")?
        .as_str()
}

/// A plan's rules from its InsurancePlan (docs/finance.md, *Benefit plans*).
pub(super) fn plan_rules(
    fin: &crate::finance::catalog::Catalog,
    plan: &Value,
) -> Result<PlanRules, String> {
    let p = plan
        .pointer("/plan/0")
        .ok_or("the InsurancePlan has no plan")?;
    let mut currency = None;
    let mut money_minor = |m: &Value, what: &str| -> Result<i64, String> {
        let m = Money::parse(m).map_err(|e| format!("{what}: {e}"))?;
        if *currency.get_or_insert(m.currency()) != m.currency() {
            return Err(format!("{what} is in another currency than the plan"));
        }
        m.minor_units().map_err(|e| format!("{what}: {e}"))
    };
    let mut deductible = 0;
    let mut oop = i64::MAX;
    for cost in p
        .get("generalCost")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(m) = cost.get("cost") else { continue };
        match code_of(cost.get("type")) {
            Some("deductible") => deductible = money_minor(m, "the deductible")?,
            Some("out-of-pocket-max") => oop = money_minor(m, "the out-of-pocket maximum")?,
            _ => {}
        }
    }
    let ext_url = fin.extension_url("pend-above");
    let pend_above = match p
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(ext_url.as_str()))
        .and_then(|e| e.get("valueMoney"))
    {
        Some(m) => Some(money_minor(m, "the review threshold")?),
        None => None,
    };
    let pend_url = fin.extension_url("pend");
    let mut services = Vec::new();
    for sc in p
        .get("specificCost")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let code = coding_key(sc.get("category")).ok_or("a specificCost has no category code")?;
        let pend = sc
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|e| {
                e.get("url").and_then(Value::as_str) == Some(pend_url.as_str())
                    && e.get("valueBoolean") == Some(&Value::Bool(true))
            });
        let mut rule = ServiceRule {
            code: code.clone(),
            allowed: 0,
            copay: 0,
            coinsurance: Decimal::ZERO,
            pend,
        };
        let mut has_allowed = false;
        for cost in sc
            .get("benefit")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|b| {
                b.get("cost")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
        {
            let value = cost
                .get("value")
                .ok_or(format!("a cost of {code} has no value"))?;
            let number = value
                .get("value")
                .map(|n| n.to_string())
                .ok_or(format!("a cost of {code} has no value"))?;
            let kind = code_of(cost.get("type")).unwrap_or("");
            if kind == "coinsurance" {
                rule.coinsurance = Decimal::from_str_exact(&number)
                    .map_err(|_| format!("the coinsurance of {code} is not a decimal"))?;
                continue;
            }
            let money = json!({"value": value.get("value"), "currency": value.get("code")});
            let minor = money_minor(&money, &format!("the {kind} of {code}"))?;
            match kind {
                "allowed" => {
                    rule.allowed = minor;
                    has_allowed = true;
                }
                "copay" => rule.copay = minor,
                _ => {}
            }
        }
        if !has_allowed {
            return Err(format!("{code} has no allowed amount"));
        }
        services.push(rule);
    }
    Ok(PlanRules {
        currency: currency.map_or_else(|| "USD".to_string(), |c| c.code().to_string()),
        deductible,
        out_of_pocket_max: oop,
        pend_above,
        services,
    })
}

fn money(minor: i64, currency: &str) -> Value {
    match crate::fhir::money::Currency::parse(currency) {
        Ok(c) => Money::from_minor_units(minor, c).to_fhir(),
        Err(_) => json!({"value": minor, "currency": currency}),
    }
}

/// The adjudication lines of one item (or of the totals).
fn lines(i: &adjudicate::ItemOut, currency: &str) -> Vec<Value> {
    let line = |system: &str, code: &str, n: i64| json!({"category": {"coding": [{"system": system, "code": code}]}, "amount": money(n, currency)});
    vec![
        line(ADJUDICATION, "submitted", i.submitted),
        line(ADJUDICATION, "eligible", i.eligible),
        line(ADJUDICATION, "deductible", i.deductible),
        line(ADJUDICATION, "copay", i.copay),
        line(CARIN, "coinsurance", i.coinsurance),
        line(ADJUDICATION, "benefit", i.benefit),
        line(CARIN, "memberliability", i.member),
    ]
}

fn totals(a: &Adjudication) -> adjudicate::ItemOut {
    adjudicate::ItemOut {
        sequence: 0,
        submitted: a.total(|i| i.submitted),
        eligible: a.total(|i| i.eligible),
        deductible: a.total(|i| i.deductible),
        copay: a.total(|i| i.copay),
        coinsurance: a.total(|i| i.coinsurance),
        member: a.total(|i| i.member),
        benefit: a.total(|i| i.benefit),
    }
}

/// The service date of a claim: its billable period's start, else its first item's, else
/// its creation date (`YYYY-MM-DD`).
fn service_date(claim: &Value) -> String {
    claim
        .pointer("/billablePeriod/start")
        .or_else(|| claim.pointer("/item/0/servicedDate"))
        .or_else(|| claim.pointer("/item/0/servicedPeriod/start"))
        .or_else(|| claim.get("created"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(10)
        .collect()
}

/// Why the coverage cannot pay this claim, or its (payor reference, plan code).
fn check_coverage(
    coverage: Option<&Value>,
    coverage_id: &str,
    patient: &str,
    date: &str,
) -> Result<(Option<Value>, String), Refusal> {
    let Some(c) = coverage else {
        return Err((
            "coverage-unknown",
            format!("Coverage/{coverage_id} is not known"),
            None,
        ));
    };
    if c.get("status").and_then(Value::as_str) != Some("active") {
        return Err((
            "coverage-inactive",
            format!(
                "Coverage/{coverage_id} is {}, not active",
                c.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("without a status")
            ),
            None,
        ));
    }
    if local_id(c.get("beneficiary"), "Patient").as_deref() != Some(patient) {
        return Err((
            "coverage-beneficiary",
            format!("Coverage/{coverage_id} does not cover Patient/{patient}"),
            None,
        ));
    }
    let day = |key: &str| {
        c.pointer(key)
            .and_then(Value::as_str)
            .map(|s| s.get(..10).unwrap_or(s))
    };
    let (start, end) = (day("/period/start"), day("/period/end"));
    if start.is_some_and(|s| date < s) || end.is_some_and(|e| date > e) {
        return Err((
            "coverage-period",
            format!("The service date {date} is outside the period of Coverage/{coverage_id}"),
            None,
        ));
    }
    let plan = c
        .get("class")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|cl| code_of(cl.get("type")) == Some("plan"))
        .and_then(|cl| cl.get("value"))
        .and_then(Value::as_str)
        .ok_or((
            "no-plan",
            format!("Coverage/{coverage_id} names no plan (a class of type plan)"),
            None,
        ))?;
    let payor = c
        .get("payor")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .cloned();
    Ok((payor, plan.to_string()))
}

async fn read_in(s: &mut Session, rt: &str, id: &str) -> Result<Option<Value>, Outcome> {
    Ok(match s.tx().current(rt, id).await? {
        Some(v) if !v.deleted => v.body.as_deref().and_then(|b| serde_json::from_str(b).ok()),
        _ => None,
    })
}

pub(super) async fn submit(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let claim = claim_of(op)?;
    let (_, mut claim) = create::prepare(ctx, "Claim", claim)?;
    let patient = local_id(claim.get("patient"), "Patient").ok_or_else(|| {
        Outcome::new(
            crate::fhir::outcome::ErrorKind::Invalid,
            "Claim.patient must reference a Patient on this server",
        )
        .at("Claim.patient")
    })?;
    command::authorize(
        ctx,
        "submit",
        Perm::Create,
        &["Claim"],
        &[Role::Practitioner, Role::Admin],
        &patient,
    )
    .await?;
    let insurance = claim
        .get("insurance")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|i| i.get("focal") == Some(&Value::Bool(true)))
                .or_else(|| list.first())
        })
        .cloned()
        .unwrap_or(Value::Null);
    let coverage_id = local_id(insurance.get("coverage"), "Coverage").ok_or_else(|| {
        Outcome::new(
            crate::fhir::outcome::ErrorKind::Invalid,
            "The claim's focal insurance must reference a Coverage on this server",
        )
        .at("Claim.insurance.coverage")
    })?;
    let now = Instant::now();
    let date = service_date(&claim);
    let mut s = command::session(ctx, base).await?;
    // claims of one coverage adjudicate in order: their accumulators add up
    s.tx().lock_key(&format!("coverage:{coverage_id}")).await?;
    let mut refusals: Vec<Refusal> = Vec::new();
    // a claim with an identifier already submitted is a duplicate
    let mut duplicate_of = None;
    if let Some(ident) = claim.pointer("/identifier/0")
        && let Some(value) = ident.get("value").and_then(Value::as_str)
    {
        let system = ident.get("system").and_then(Value::as_str).unwrap_or("");
        let query = format!("identifier={system}|{value}");
        if let Some(original) = conditional::resolve(&mut s, "Claim", &query).await? {
            refusals.push((
                "duplicate",
                format!("The claim duplicates Claim/{original} (identifier {value})"),
                None,
            ));
            duplicate_of = Some(original);
        }
    }
    let coverage = read_in(&mut s, "Coverage", &coverage_id).await?;
    let mut insurer = claim.get("insurer").cloned();
    let mut adjudication = None;
    let mut plan_currency = "USD".to_string();
    let year: String = date.chars().take(4).collect();
    if refusals.is_empty() {
        match check_coverage(coverage.as_ref(), &coverage_id, &patient, &date) {
            Err(r) => refusals.push(r),
            Ok((payor, plan_code)) => {
                insurer = payor.clone().or(insurer);
                let mut query = format!("identifier={plan_code}");
                if let Some(org) = local_id(payor.as_ref(), "Organization") {
                    query.push_str(&format!("&owned-by=Organization/{org}"));
                }
                let found = conditional::resolve(&mut s, "InsurancePlan", &query).await;
                let plan = match found {
                    Ok(Some(id)) => read_in(&mut s, "InsurancePlan", &id).await?,
                    _ => None,
                };
                match plan.map(|p| plan_rules(&ctx.finance, &p)) {
                    None => refusals.push((
                        "no-plan",
                        format!("No single InsurancePlan has the identifier {plan_code} of Coverage/{coverage_id}"),
                        None,
                    )),
                    Some(Err(why)) => refusals.push((
                        "plan-unreadable",
                        format!("The benefit plan {plan_code} cannot be read: {why}"),
                        None,
                    )),
                    Some(Ok(rules)) => {
                        plan_currency = rules.currency.clone();
                        let mut items = Vec::new();
                        for (n, item) in claim
                            .get("item")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .enumerate()
                        {
                            let seq = item
                                .get("sequence")
                                .and_then(Value::as_u64)
                                .and_then(|v| u32::try_from(v).ok())
                                .unwrap_or(u32::try_from(n + 1).unwrap_or(u32::MAX));
                            let quantity = item
                                .pointer("/quantity/value")
                                .and_then(|q| q.to_string().parse::<Decimal>().ok())
                                .and_then(|d| rust_decimal::prelude::ToPrimitive::to_i64(&d))
                                .unwrap_or(1);
                            let net = item.get("net").cloned().or_else(|| {
                                let unit = Money::parse(item.get("unitPrice")?).ok()?;
                                let total = unit.value() * Decimal::from(quantity);
                                Money::new(total, unit.currency()).ok().map(|m| m.to_fhir())
                            });
                            let submitted = net
                                .as_ref()
                                .and_then(|m| Money::parse(m).ok())
                                .filter(|m| m.currency().code() == rules.currency)
                                .and_then(|m| m.minor_units().ok());
                            let Some(submitted) = submitted else {
                                refusals.push((
                                    "item-amount",
                                    format!("Item {seq} has no amount in {}", rules.currency),
                                    Some(seq),
                                ));
                                continue;
                            };
                            items.push(ItemIn {
                                sequence: seq,
                                code: coding_key(item.get("productOrService")).unwrap_or_default(),
                                submitted,
                                quantity,
                            });
                        }
                        let (ded, oop) = s.tx().ledger().accumulated(&coverage_id, &year).await?;
                        let a = adjudicate::adjudicate(
                            &rules,
                            Accumulated {
                                deductible: ded,
                                out_of_pocket: oop,
                            },
                            &items,
                        );
                        for (seq, why) in &a.refused {
                            refusals.push(("unknown-service", why.clone(), Some(*seq)));
                        }
                        adjudication = Some(a);
                    }
                }
            }
        }
    }
    // the Claim (a duplicate is not stored again)
    let claim_id = match &duplicate_of {
        Some(original) => original.clone(),
        None => {
            let id = Id::generate();
            if let Some(obj) = claim.as_object_mut() {
                obj.insert("status".into(), Value::from("active"));
            }
            create::create_in(&mut s, "Claim", claim.clone(), None, Some(id.clone())).await?;
            id.as_str().to_string()
        }
    };
    let disposition = match &adjudication {
        Some(a) if a.disposition != adjudicate::Disposition::Error => a.disposition,
        _ => adjudicate::Disposition::Error,
    };
    let insurer = insurer.unwrap_or_else(|| json!({"display": "unknown insurer"}));
    let cur = plan_currency.as_str();
    let mut response = json!({
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": claim.get("type").cloned().unwrap_or(Value::Null),
        "use": claim.get("use").cloned().unwrap_or(Value::from("claim")),
        "patient": {"reference": format!("Patient/{patient}")},
        "created": now.to_fhir(),
        "insurer": insurer,
        "request": {"reference": format!("Claim/{claim_id}")},
        "outcome": disposition.code(),
        "insurance": [{"sequence": 1, "focal": true,
            "coverage": {"reference": format!("Coverage/{coverage_id}")}}],
    });
    let mut notes = Vec::new();
    if let Some(provider) = claim.get("provider")
        && let Some(obj) = response.as_object_mut()
    {
        obj.insert("requestor".into(), provider.clone());
    }
    let adjudicated = adjudication.as_ref().filter(|a| {
        !matches!(
            a.disposition,
            adjudicate::Disposition::Queued | adjudicate::Disposition::Error
        )
    });
    if let Some(a) = adjudicated
        && let Some(obj) = response.as_object_mut()
    {
        let items: Vec<Value> = a
            .items
            .iter()
            .map(|i| json!({"itemSequence": i.sequence, "adjudication": lines(i, cur)}))
            .collect();
        obj.insert("item".into(), Value::from(items));
        let total: Vec<Value> = lines(&totals(a), cur);
        obj.insert("total".into(), Value::from(total));
        obj.insert(
            "disposition".into(),
            Value::from(format!(
                "The plan pays {}; the patient owes {}",
                crate::fhir::money::Currency::parse(cur)
                    .map(|c| Money::from_minor_units(totals(a).benefit, c).to_string())
                    .unwrap_or_default(),
                crate::fhir::money::Currency::parse(cur)
                    .map(|c| Money::from_minor_units(totals(a).member, c).to_string())
                    .unwrap_or_default()
            )),
        );
    }
    if let Some(a) = &adjudication
        && a.disposition == adjudicate::Disposition::Queued
    {
        for why in &a.pended {
            notes.push(format!("Queued for review: {why}"));
        }
    }
    for (_, why, _) in &refusals {
        notes.push(why.clone());
    }
    if let Some(obj) = response.as_object_mut() {
        if !refusals.is_empty() {
            let errors: Vec<Value> = refusals
                .iter()
                .map(|(code, why, seq)| {
                    let mut e = json!({"code": {"coding": [{
                        "system": ctx.finance.system("adjudication-error"),
                        "code": code}], "text": why}});
                    if let (Some(seq), Some(m)) = (seq, e.as_object_mut()) {
                        m.insert("itemSequence".into(), Value::from(*seq));
                    }
                    e
                })
                .collect();
            obj.insert("error".into(), Value::from(errors));
        }
        if !notes.is_empty() {
            let notes: Vec<Value> = notes
                .iter()
                .enumerate()
                .map(|(n, t)| json!({"number": n + 1, "type": "display", "text": t}))
                .collect();
            obj.insert("processNote".into(), Value::from(notes));
        }
    }
    let response_id = Id::generate();
    let (_, response) = create::prepare(ctx, "ClaimResponse", response)?;
    let written = create::create_in(
        &mut s,
        "ClaimResponse",
        response.clone(),
        None,
        Some(response_id.clone()),
    )
    .await?;
    if let Some(a) = adjudicated {
        // the member's plan year moves on only with an adjudicated claim
        s.tx()
            .ledger()
            .set_accumulated(
                &coverage_id,
                &year,
                (a.accumulated.deductible, a.accumulated.out_of_pocket),
                now.millis(),
            )
            .await?;
        let items: Vec<Value> = a
            .items
            .iter()
            .map(|i| {
                let product = claim
                    .get("item")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|c| {
                        c.get("sequence").and_then(Value::as_u64) == Some(u64::from(i.sequence))
                    })
                    .and_then(|c| c.get("productOrService"))
                    .cloned()
                    .unwrap_or(json!({"text": "service"}));
                json!({"sequence": i.sequence, "productOrService": product,
                    "adjudication": lines(i, cur)})
            })
            .collect();
        let eob = json!({
            "resourceType": "ExplanationOfBenefit",
            "status": "active",
            "type": claim.get("type").cloned().unwrap_or(Value::Null),
            "use": claim.get("use").cloned().unwrap_or(Value::from("claim")),
            "patient": {"reference": format!("Patient/{patient}")},
            "created": now.to_fhir(),
            "insurer": response.get("insurer").cloned().unwrap_or(Value::Null),
            "provider": claim.get("provider").cloned().unwrap_or(json!({"display": "provider"})),
            "claim": {"reference": format!("Claim/{claim_id}")},
            "claimResponse": {"reference": format!("ClaimResponse/{response_id}")},
            "outcome": disposition.code(),
            "insurance": [{"focal": true, "coverage": {"reference": format!("Coverage/{coverage_id}")}}],
            "item": items,
            "total": lines(&totals(a), cur),
        });
        let (_, eob) = create::prepare(ctx, "ExplanationOfBenefit", eob)?;
        create::create_in(&mut s, "ExplanationOfBenefit", eob, None, None).await?;
    }
    integrity::finish(s).await?;
    Ok(answer(written.body_value()?))
}
